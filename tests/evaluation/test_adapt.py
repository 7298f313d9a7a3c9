"""Models that adapt to the text in front of them: eval --dynamic, sample --adapt, and fine-tuning
onto characters the checkpoint lacks."""

import hashlib
import json
import random

import numpy as np
import pytest
import torch
from conftest import TINY, run_cli

from charrnn.data.vocab import extended_vocab
from charrnn.evaluation.dynamic import Adapter, Rule, compare, gradient_stats
from charrnn.model import checkpoint
from charrnn.model.network import CharRNN, ModelConfig
from charrnn.training.finetune import extend_checkpoint


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_error_line(r) -> None:
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert r.stdout == ""


@pytest.fixture(scope="module")
def unseen_pattern(tmp_path_factory, trained_run):
    """A line of the model's own characters in an order it never saw, repeated: a static model
    stays surprised by it, a dynamic one learns it."""
    vocab = checkpoint.build_model(checkpoint.load(trained_run / "best.pt"))[1]
    rng = random.Random(3)
    letters = [c for c in vocab.chars if c.isalpha()]
    line = "".join(rng.choice(letters) for _ in range(23)) + "\n"
    path = tmp_path_factory.mktemp("pattern") / "pattern.txt"
    path.write_text(line * 30)
    return path


def test_dynamic_with_zero_learning_rate_equals_static(trained_run, unseen_pattern):
    before = _sha(trained_run / "best.pt")
    r = run_cli("eval", trained_run, unseen_pattern, "--dynamic", "--dynamic-lr", "0", "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["dynamic_bpc"] == pytest.approx(out["bpc"], abs=1e-4)
    assert _sha(trained_run / "best.pt") == before


def test_dynamic_learns_a_repeated_pattern_the_model_has_not_seen(trained_run, unseen_pattern):
    before = _sha(trained_run / "best.pt")
    for method in ("rms", "sgd"):
        r = run_cli("eval", trained_run, unseen_pattern, "--dynamic", "--dynamic-method", method, "--json")
        assert r.exit_code == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["dynamic_bpc"] < out["bpc"] - 0.5, (method, out)
        assert out["gain_bpc"] == pytest.approx(out["bpc"] - out["dynamic_bpc"], abs=1e-4)
    assert _sha(trained_run / "best.pt") == before
    r = run_cli("eval", trained_run, unseen_pattern, "--dynamic")
    assert r.exit_code == 0 and "dynamic_bpc" in r.stdout and "dynamic_seconds" in r.stdout


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn", "peephole", "cifg"])
def test_every_cell_adapts_and_is_static_at_zero_rate(cell):
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=12, model=cell, layers=2, hidden=24, embed=8, dropout=0.0))
    ids = np.array(([1, 5, 2, 9, 3, 3, 7, 0, 11, 4] * 40), dtype=np.int64)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    still = compare(model, ids, Rule(lr=0.0), None, chars=len(ids) - 1, show_progress=False)
    assert still.dynamic.bpc == pytest.approx(still.static.bpc, abs=1e-4)
    stats = gradient_stats(model, ids[:200], 20)
    assert len(stats) == len(list(model.parameters())) and all(torch.isfinite(s).all() for s in stats)
    # An untrained model is far from any solution, so it takes plain steps over a few passes.
    adapter = Adapter(model, Rule(method="sgd", lr=0.5, decay=0.0, segment=20))
    first = adapter.pass_over(ids)
    for _ in range(4):
        last = adapter.pass_over(ids)
    assert last < 0.95 * first, cell
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items()), "the model itself moved"


def test_decay_pulls_the_weights_back_toward_the_trained_ones():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=6, layers=1, hidden=8, embed=4, dropout=0.0))
    ids = np.array([1, 2, 3, 4, 5, 0] * 40, dtype=np.int64)
    trained = dict(model.named_parameters())
    drift = {}
    for decay in (0.0, 0.3):
        adapter = Adapter(model, Rule(method="sgd", lr=0.5, decay=decay, segment=10))
        adapter.pass_over(ids)
        with torch.no_grad():
            drift[decay] = sum(float((p - trained[n]).norm()) for n, p in adapter.model.named_parameters())
    assert 0 < drift[0.3] < 0.5 * drift[0.0]


def test_subword_model_scores_per_character(tmp_path):
    from charrnn.data.vocab import SubwordVocab

    text = "the cat sat on the mat and the dog sat on the log\n" * 40
    vocab = SubwordVocab.train("bpe", 300, iter(text.splitlines()), len(set(text)))
    ids = vocab.encode(text).astype(np.int64)
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=vocab.size, layers=1, hidden=32, embed=16, dropout=0.0))
    chars = vocab.count_chars(ids[1:])
    out = compare(model, ids, Rule(segment=16), ids[:300], chars=chars, show_progress=False)
    assert out.dynamic.chars == chars < len(text)
    assert out.dynamic.bpc < out.static.bpc
    adapter = Adapter(model, Rule(method="sgd", lr=0.5, decay=0.0, segment=16))
    first = adapter.pass_over(ids)
    for _ in range(4):
        last = adapter.pass_over(ids)
    assert last < 0.7 * first


def test_sample_adapt_leaves_the_checkpoint_alone_and_saves_a_loadable_model(tmp_path, trained_run, unseen_pattern):
    ckpt = trained_run / "best.pt"
    before = _sha(ckpt)
    saved = tmp_path / "adapted.pt"
    r = run_cli(
        "sample",
        ckpt,
        "--adapt",
        unseen_pattern,
        "--save-adapted",
        saved,
        "--length",
        "60",
        "--seed",
        "1",
        "--temp",
        "0.5",
    )
    assert r.exit_code == 0, r.stderr
    assert _sha(ckpt) == before
    # without --prime the sample continues the passage's last line (here: starts a new one after it)
    line = unseen_pattern.read_text().splitlines()[-1]
    assert r.stdout.startswith(line + "\n")
    assert run_cli("info", saved).exit_code == 0
    static = json.loads(run_cli("eval", ckpt, unseen_pattern, "--json").stdout)["bpc"]
    adapted = json.loads(run_cli("eval", saved, unseen_pattern, "--json").stdout)["bpc"]
    assert adapted < static - 1.0
    r = run_cli("sample", saved, "--length", "30", "--seed", "1")
    assert r.exit_code == 0 and len(r.stdout) > 30


def test_sample_adapt_reads_stdin_and_several_files(tmp_path, trained_run):
    first = tmp_path / "a.txt"
    first.write_text("ANNA: the sea is dark.\n")
    r = run_cli(
        "sample",
        trained_run,
        "--adapt",
        first,
        "--adapt",
        "-",
        "--length",
        "20",
        "--seed",
        "2",
        "--prime",
        "CLARA:",
        input="BORIS: the lamp is",
    )
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith("CLARA:")
    r = run_cli("sample", trained_run, "--adapt", "-", "--length", "20", "--seed", "2", input="BORIS: the lamp is")
    assert r.exit_code == 0 and r.stdout.startswith("BORIS: the lamp is")


def test_vocabulary_extension_keeps_the_old_characters_relative_probabilities(trained_run):
    ckpt = checkpoint.load(trained_run / "best.pt")
    old_model, old_vocab = checkpoint.build_model(ckpt)
    text = "ÉLISE: the sea is dark.\nANNA: the lamp is open.\n" * 10
    vocab = extended_vocab(old_vocab, [text])
    assert vocab.chars.startswith(old_vocab.chars) and vocab.size == old_vocab.size + 2  # É and E
    assert vocab.encode("ANNA: the sea").tolist() == old_vocab.encode("ANNA: the sea").tolist()
    grown = extend_checkpoint(ckpt, vocab, vocab.encode(text))
    new_model, _ = checkpoint.build_model({**grown, "path": "grown"})
    x = torch.from_numpy(old_vocab.encode("BORIS: the door is open.\nCLARA: the sea").astype(np.int64))[None]
    with torch.no_grad():
        old = old_model(x)[0].log_softmax(-1)
        new = new_model(x)[0][..., : old_vocab.size].log_softmax(-1)
        assert torch.allclose(old, new, atol=1e-5)
        p_new = new_model(x)[0].softmax(-1)[..., old_vocab.size :]
    # the new characters start near their frequency in the text (2 of 94 characters each 10 times)
    assert 0.002 < float(p_new.mean()) < 0.05


def test_fine_tune_onto_new_characters_trains_and_samples_them(tmp_path, trained_run):
    new = tmp_path / "new.txt"
    new.write_text("ZOË: ¿qué?\n" * 300)
    out = tmp_path / "ft"
    r = run_cli("train", new, *TINY, "--steps", "150", "--init-from", trained_run / "best.pt", "--out", out)
    assert r.exit_code == 0, r.stderr
    note = [line for line in r.stderr.splitlines() if line.startswith("note: the corpus has")]
    assert len(note) == 1 and "'Ë'" in note[0] and "'¿'" in note[0] and "'Z'" in note[0], r.stderr
    old_chars = checkpoint.load(trained_run / "best.pt")["vocab"]["chars"]
    saved = checkpoint.load(out / "best.pt")
    assert saved["vocab"]["chars"].startswith(old_chars)
    assert saved["best_val_bpc"] < 1.5
    r = run_cli("sample", out, "--length", "200", "--seed", "1", "--temp", "0.5")
    assert r.exit_code == 0, r.stderr
    assert "Ë" in r.stdout and "¿" in r.stdout
    # resuming the fine-tune finds the same grown vocabulary (and corpus cache)
    r = run_cli("train", "--resume", out, "--steps", "160", "--quiet")
    assert r.exit_code == 0, r.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--dynamic", "--dynamic-lr", "-1"],
        ["--dynamic", "--dynamic-decay", "2"],
        ["--dynamic", "--dynamic-method", "adam"],
        ["--dynamic", "--segment", "0"],
        ["--dynamic-lr", "0.1"],
        ["--segment", "10"],
        ["--stats-text", "x.txt"],
        ["--dynamic", "--stats-text", "/nonexistent/train.txt"],
    ],
)
def test_eval_dynamic_bad_flags(trained_run, unseen_pattern, args):
    _one_error_line(run_cli("eval", trained_run, unseen_pattern, *args))


def test_sample_adapt_bad_input(tmp_path, trained_run):
    ckpt = trained_run / "best.pt"
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("ANNA: caf\u00e9\n".encode("latin-1"))
    good = tmp_path / "good.txt"
    good.write_text("ANNA: the sea is dark.\n")
    unknown = tmp_path / "unknown.txt"
    unknown.write_text("ANNA: the sea is wet.\n")
    before = _sha(ckpt)
    for args in (
        ["--adapt", empty],
        ["--adapt", latin1],
        ["--adapt", tmp_path / "missing.txt"],
        ["--adapt", unknown],
        ["--adapt", good, "--adapt-steps", "0"],
        ["--adapt", good, "--save-adapted", ckpt],
        ["--adapt", good, "--save-adapted", tmp_path],
        ["--save-adapted", tmp_path / "x.pt"],
        ["--adapt-steps", "5"],
    ):
        r = run_cli("sample", ckpt, "--length", "10", *args)
        _one_error_line(r)
    assert "empty" in run_cli("sample", ckpt, "--adapt", empty).stderr
    assert "UTF-8" in run_cli("sample", ckpt, "--adapt", latin1).stderr
    assert _sha(ckpt) == before
    assert run_cli("sample", ckpt, "--adapt", unknown, "--unknown", "skip", "--length", "5").exit_code == 0


def test_subword_checkpoint_needs_no_extension_and_says_why(tmp_path, repetitive_corpus):
    out = tmp_path / "bpe"
    r = run_cli(
        "train",
        repetitive_corpus,
        *TINY,
        "--vocab",
        "bpe",
        "--vocab-size",
        "300",
        "--steps",
        "3",
        "--out",
        out,
        "--quiet",
    )
    assert r.exit_code == 0, r.stderr
    other = tmp_path / "other.txt"
    other.write_text("ZOË: ¿qué? " * 200 + "\n")
    r = run_cli(
        "train", other, *TINY, "--steps", "2", "--init-from", out / "last.pt", "--out", tmp_path / "ft", "--quiet"
    )
    assert r.exit_code == 0, r.stderr
    mark = tmp_path / "mark.txt"
    mark.write_text("the \u2581 mark\n" * 200)
    r = run_cli(
        "train", mark, *TINY, "--steps", "2", "--init-from", out / "last.pt", "--out", tmp_path / "ft2", "--quiet"
    )
    _one_error_line(r)
    assert "byte fallback" in r.stderr
