"""The Python API as a notebook user drives it: train, load, generate, stream, score, errors."""

import json
import subprocess
import sys

import pytest
from conftest import run_cli, run_proc

import charrnn
from charrnn import CharrnnError

TINY = dict(layers=1, hidden=32, embed=16, seq_len=16, batch_size=8, dropout=0.0, lr=1e-2, weight_decay=0.01)


def test_import_charrnn_does_not_import_torch():
    code = "import sys, charrnn; charrnn.CharrnnError; print('torch' in sys.modules, charrnn.__version__)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.stdout.split() == ["False", charrnn.__version__], p.stderr


def test_train_returns_the_run_and_trains_as_the_command_does(tmp_path, repetitive_corpus, capfd):
    run = charrnn.train(repetitive_corpus, tmp_path / "api", steps=40, eval_every=20, **TINY)
    assert isinstance(run, charrnn.Run) and run.dir == tmp_path / "api" and run.best.is_file()
    assert run.steps == 40 and run.best_val_bpc == run.summary["best_val_bpc"] < 4.5
    assert "charrnn training summary" not in capfd.readouterr().err  # no progress bar or table by default
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    r = run_cli(
        "train", repetitive_corpus, "--out", tmp_path / "cli", "--steps", "40", "--eval-every", "20", *flags, "--quiet"
    )
    assert r.exit_code == 0, r.stderr
    cli = [json.loads(line) for line in (tmp_path / "cli" / "metrics.jsonl").read_text().splitlines()]
    api = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    curve = [(m["step"], m["train_bpc"], m["val_bpc"]) for m in api]
    assert curve == [(m["step"], m["train_bpc"], m["val_bpc"]) for m in cli]


def test_train_errors_are_charrnn_errors(tmp_path, repetitive_corpus):
    with pytest.raises(CharrnnError, match=r"^Invalid value for '--layers'"):
        charrnn.train(repetitive_corpus, tmp_path / "a", layers=0)
    with pytest.raises(CharrnnError, match=r"^Invalid value for '--steps'"):
        charrnn.train(repetitive_corpus, tmp_path / "a", steps="many")
    with pytest.raises(CharrnnError, match="unknown option 'hiden'"):
        charrnn.train(repetitive_corpus, tmp_path / "a", hiden=32)
    with pytest.raises(CharrnnError, match="no such file"):
        charrnn.train(tmp_path / "missing.txt", tmp_path / "a", steps=1)
    with pytest.raises(CharrnnError, match="unknown preset"):
        charrnn.train(repetitive_corpus, tmp_path / "a", preset="huge")


@pytest.mark.parametrize(
    "flag, text, value",
    [
        ("--layers", "0", 0),
        ("--steps", "many", "many"),
        ("--dropout", "1.5", 1.5),
        ("--lr", "0", 0),
        ("--vocab", "words", "words"),
        ("--device", "tpu", "tpu"),
    ],
)
def test_train_errors_are_the_commands_messages(tmp_path, repetitive_corpus, flag, text, value):
    r = run_proc("train", repetitive_corpus, "--out", tmp_path / "cli", flag, text)
    assert r.returncode == 2, r.stderr
    cli = r.stderr.decode().splitlines()[-1].removeprefix("error: ")
    with pytest.raises(CharrnnError) as e:
        charrnn.train(repetitive_corpus, tmp_path / "api", **{flag[2:].replace("-", "_"): value})
    assert str(e.value) == cli


def test_import_api_imports_neither_the_command_line_nor_typer_or_click():
    code = (
        "import sys, charrnn.api; print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('typer', 'click') or m.startswith('charrnn.cli')))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.stdout.strip() == "[]", p.stderr


def test_load_generate_stream_and_many(trained_run):
    model = charrnn.load(trained_run)
    assert model.charrnn_version == charrnn.__version__ and "lstm 1x32" in repr(model)
    text = model.generate("ANNA:", length=200, seed=3)
    assert len(text) == 200 and text == model.generate("ANNA:", length=200, seed=3)
    assert "".join(model.stream("ANNA:", length=200, seed=3)) == text
    assert model.generate("ANNA:", length=200, seed=3, stop="\n") == text.split("\n")[0]
    many = model.generate_many(3, prime="BORIS:", length=50, seed=7)
    assert len(many) == 3 and all(len(t) == 50 for t in many)
    assert many == model.generate_many(3, prime="BORIS:", length=50, seed=7)
    assert charrnn.load(trained_run / "last.pt").path.name == "last.pt"


def test_score_is_what_eval_reports(trained_run, repetitive_corpus):
    model = charrnn.load(trained_run)
    score = model.score(repetitive_corpus.read_text())
    r = run_cli("eval", trained_run, repetitive_corpus, "--json")
    assert r.exit_code == 0, r.stderr
    assert round(score.bpc, 5) == json.loads(r.stdout)["bpc"] and score.chars == json.loads(r.stdout)["chars"]


def test_model_errors_are_charrnn_errors(trained_run, tmp_path):
    with pytest.raises(CharrnnError, match="no such checkpoint"):
        charrnn.load(tmp_path / "nope.pt")
    model = charrnn.load(trained_run)
    with pytest.raises(CharrnnError, match="--temp must be > 0"):
        model.generate(temp=0)
    with pytest.raises(CharrnnError, match="lacks"):
        model.generate(prime="ü")
    with pytest.raises(CharrnnError, match="lacks"):
        model.score("ü ü ü")
    with pytest.raises(CharrnnError, match="n must be"):
        model.generate_many(0)


def test_unknown_characters_one_spelling_in_the_api_and_eval(trained_run, tmp_path):
    """unknown="skip" (the API), --unknown skip (eval, as sample and viz) and eval's old --skip-unknown,
    hidden, all drop characters outside the vocabulary; the errors name the fix in each one's spelling."""
    model = charrnn.load(trained_run)
    with pytest.raises(CharrnnError, match='unknown="skip"'):
        model.generate(prime="ü", length=5)
    with pytest.raises(CharrnnError, match='unknown="skip"'):
        model.score("ü ü ü")
    with pytest.raises(CharrnnError, match='unknown must be "error" or "skip"'):
        model.score("abc", unknown="drop")
    assert len(model.generate(prime="üa", length=5, seed=1, unknown="skip")) == 5
    assert model.generate_many(2, prime="ü", length=3, unknown="skip", seed=1)[0]
    text = "".join(model.vocab.decode(list(range(model.vocab.size))))
    assert model.score(text + "ü", unknown="skip").chars == model.score(text).chars
    scene = tmp_path / "scene.txt"
    scene.write_text(text + "ü", encoding="utf-8")
    r = run_cli("eval", trained_run, scene)
    assert r.exit_code == 2 and "--unknown skip" in r.stderr
    new, old = (
        run_cli("eval", trained_run, scene, "--unknown", "skip", "--json"),
        run_cli("eval", trained_run, scene, "--skip-unknown", "--json"),
    )
    assert new.exit_code == old.exit_code == 0 and json.loads(new.stdout) == json.loads(old.stdout)
    helptext = run_cli("eval", "--help").stdout
    assert "--unknown" in helptext and "--skip-unknown" not in helptext


def test_charrnn_train_is_the_api_function_not_a_module():
    import pydoc

    import charrnn.api
    import charrnn.training.trainer

    assert charrnn.train is charrnn.api.train and not isinstance(charrnn.train, type(charrnn))
    assert "Train as ``charrnn train CORPUS" in pydoc.render_doc(charrnn.train)
    assert charrnn.training.trainer.Trainer.__module__ == "charrnn.training.trainer"
