import json
import math
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import TINY, run_cli

from charrnn.model import checkpoint


def test_training_lowers_val_bpc(trained_run):
    lines = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    vals = [line["val_bpc"] for line in lines if line["val_bpc"] is not None]
    assert len(vals) >= 3
    assert vals[-1] < 0.6 * vals[0], vals
    assert {"step", "train_bpc", "val_bpc", "lr", "chars_per_s", "elapsed"} <= set(lines[-1])


def test_checkpoint_round_trip_same_logits(trained_run):
    raw = torch.load(trained_run / "best.pt", weights_only=True)
    assert raw["format"] == "charrnn" and raw["vocab"]["kind"] == "char"
    model, vocab = checkpoint.build_model(checkpoint.load(trained_run / "best.pt"))
    x = torch.from_numpy(vocab.encode("ANNA: the sea").astype("int64"))[None]
    a, _ = model(x)
    model2, _ = checkpoint.build_model(checkpoint.load(trained_run))
    b, _ = model2(x)
    assert torch.equal(a, b)


def test_info_reports_model(trained_run):
    r = run_cli("info", trained_run)
    assert r.exit_code == 0 and "lstm 1x32" in r.stdout and "val bpc" in r.stdout


def test_eval_equals_reported_val_bpc(trained_run, repetitive_corpus, tmp_path):
    ckpt = checkpoint.load(trained_run / "best.pt")
    text = repetitive_corpus.read_text()
    cut = len(text) - int(round(len(text) * 0.1))
    val = tmp_path / "val.txt"
    val.write_text(text[cut:])
    r = run_cli("eval", trained_run / "best.pt", val, "--json")
    assert r.exit_code == 0, r.stderr
    got = json.loads(r.stdout)
    assert math.isclose(got["bpc"], ckpt["val_bpc"], abs_tol=1e-4)


def test_time_budget_and_short_corpus_batch(tmp_path, repetitive_corpus):
    start = time.monotonic()
    r = run_cli("train", repetitive_corpus, *TINY, "--time", "3s", "--out", tmp_path / "o", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert time.monotonic() - start < 30


def test_gpu_preset_on_a_cpu_warns_and_still_trains(tmp_path, repetitive_corpus):
    # The preset is named, its sizes overridden: the warning is about the preset chosen.
    little = ["--layers", "1", "--hidden", "16", "--embed", "8", "--batch-size", "4", "--seq-len", "8", "--steps", "2"]
    r = run_cli(
        "train", repetitive_corpus, "--preset", "large", *little, "--device", "cpu", "--out", tmp_path / "o", "--quiet"
    )
    assert r.exit_code == 0, r.stderr
    assert "--preset large is sized for a GPU" in r.stderr
    assert r.stdout == ""
    r = run_cli(
        "train", repetitive_corpus, "--preset", "small", *little, "--device", "cpu", "--out", tmp_path / "p", "--quiet"
    )
    assert r.exit_code == 0, r.stderr
    assert "sized for a GPU" not in r.stderr


def _params(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_interrupted_run_resumes_bit_identical(tmp_path, repetitive_corpus):
    args = [
        "train",
        str(repetitive_corpus),
        "--layers",
        "2",
        "--hidden",
        "24",
        "--embed",
        "8",
        "--seq-len",
        "16",
        "--batch-size",
        "4",
        "--dropout",
        "0.1",
        "--steps",
        "300",
        "--eval-every",
        "40",
        "--log-every",
        "10",
        "--quiet",
        "--seed",
        "7",
    ]
    straight = tmp_path / "straight"
    r = run_cli(*args, "--out", straight)
    assert r.exit_code == 0, r.stderr
    cut = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", *args, "--out", str(cut)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (cut / "metrics.jsonl").exists() or not (cut / "metrics.jsonl").read_text().count("\n") >= 3:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert b"--resume" in err
    stopped_at = torch.load(cut / "last.pt", weights_only=True)["step"]
    assert 0 < stopped_at < 300
    r = run_cli("train", "--resume", cut, "--quiet")
    assert r.exit_code == 0, r.stderr
    a, b = _params(straight / "last.pt"), _params(cut / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda p: [
        {k: v for k, v in json.loads(line).items() if k not in ("chars_per_s", "elapsed")}
        for line in (p / "metrics.jsonl").read_text().splitlines()
    ]
    assert strip(straight) == strip(cut)


def test_resume_of_a_run_saved_by_another_optimizer_kernel(tmp_path, repetitive_corpus):
    """Runs saved before the fused AdamW (foreach kernel) resume, and step with our kernel."""
    out = tmp_path / "run"
    assert run_cli("train", repetitive_corpus, *TINY, "--steps", "4", "--quiet", "--out", out).exit_code == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    for g in ckpt["resume"]["optimizer"]["param_groups"]:
        g["fused"], g["foreach"] = None, True
    checkpoint.save({k: v for k, v in ckpt.items() if k not in ("format", "version")}, out / "last.pt")
    r = run_cli("train", "--resume", out, "--steps", "8", "--quiet")
    assert r.exit_code == 0, r.stderr
    resumed = torch.load(out / "last.pt", weights_only=True)
    assert resumed["step"] == 8
    assert all(g["fused"] and not g["foreach"] for g in resumed["resume"]["optimizer"]["param_groups"])


def test_resume_and_sample_a_checkpoint_saved_before_weight_drop(tmp_path, repetitive_corpus):
    """Checkpoints from before a model field existed load with that field's default."""
    out = tmp_path / "run"
    assert run_cli("train", repetitive_corpus, *TINY, "--steps", "4", "--quiet", "--out", out).exit_code == 0
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(out / name, weights_only=True)
        del ckpt["model_config"]["weight_drop"]
        del ckpt["train_config"]["weight_drop"]
        checkpoint.save({k: v for k, v in ckpt.items() if k not in ("format", "version")}, out / name)
    r = run_cli("train", "--resume", out, "--steps", "8", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 8
    assert run_cli("sample", out / "best.pt", "--length", "20", "--seed", "1").exit_code == 0


def test_resume_refuses_different_model(tmp_path, trained_run, repetitive_corpus):
    r = run_cli("train", repetitive_corpus, "--resume", "--out", trained_run, "--hidden", "64", "--quiet")
    assert r.exit_code == 2 and "hidden" in r.stderr


def test_init_from_grows_the_vocabulary_by_the_new_characters(tmp_path, trained_run):
    other = tmp_path / "other.txt"
    other.write_text("xyz qqq zzz\n" * 100)
    r = run_cli(
        "train",
        other,
        *TINY,
        "--steps",
        "2",
        "--init-from",
        trained_run / "best.pt",
        "--out",
        tmp_path / "o",
        "--quiet",
    )
    assert r.exit_code == 0, r.stderr
    chars = torch.load(tmp_path / "o" / "last.pt", weights_only=True)["vocab"]["chars"]
    assert chars.endswith("qxyz")


def test_init_from_fine_tunes_subset_corpus(tmp_path, trained_run):
    sub = tmp_path / "sub.txt"
    sub.write_text("ANNA: the sea is dark.\n" * 40)
    r = run_cli(
        "train", sub, *TINY, "--steps", "5", "--init-from", trained_run / "best.pt", "--out", tmp_path / "o", "--quiet"
    )
    assert r.exit_code == 0, r.stderr


def test_fine_tuning_and_resume_may_change_regularisation_and_a_fine_tune_resumes(
    tmp_path, trained_run, repetitive_corpus
):
    sub = tmp_path / "sub.txt"
    sub.write_text("ANNA: the sea is dark.\n" * 40)
    out = tmp_path / "o"
    more = ["--dropout", "0.3", "--weight-drop", "0.2"]
    r = run_cli(
        "train", sub, *TINY, *more, "--steps", "5", "--init-from", trained_run / "best.pt", "--out", out, "--quiet"
    )
    assert r.exit_code == 0, r.stderr
    saved = torch.load(out / "last.pt", weights_only=True)["model_config"]
    assert saved["dropout"] == 0.3 and saved["weight_drop"] == 0.2
    # resuming the fine-tuned run keeps its vocabulary (the checkpoint's, not the subset corpus's own)
    r = run_cli("train", "--resume", out, "--weight-drop", "0", "--steps", "8", "--quiet")
    assert r.exit_code == 0, r.stderr
    resumed = torch.load(out / "last.pt", weights_only=True)
    assert resumed["model_config"]["weight_drop"] == 0 and resumed["step"] == 8
    run = tmp_path / "run"
    assert run_cli("train", repetitive_corpus, *TINY, "--steps", "4", "--out", run, "--quiet").exit_code == 0
    r = run_cli("train", "--resume", run, *more, "--steps", "8", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert torch.load(run / "last.pt", weights_only=True)["model_config"]["weight_drop"] == 0.2


def test_learning_rate_warms_up_then_anneals_to_a_hundredth():
    from charrnn.training.config import TrainConfig
    from charrnn.training.trainer import lr_at

    cfg = TrainConfig(lr=1e-2, warmup=10, steps=100)
    assert [lr_at(cfg, s, s / 100) for s in (0, 4, 9)] == pytest.approx([1e-3, 5e-3, 1e-2])
    assert lr_at(cfg, 10, 0.0) == pytest.approx(1e-2)
    assert lr_at(cfg, 55, 0.5) == pytest.approx((1e-2 + 1e-4) / 2)
    assert lr_at(cfg, 100, 1.0) == pytest.approx(1e-4)
    assert lr_at(cfg, 999, 3.0) == pytest.approx(1e-4)  # past the end it stays at the floor
    steps = [lr_at(cfg, s, s / 100) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(steps, steps[1:]))
    assert lr_at(TrainConfig(lr=1e-2, min_lr=0.0, warmup=0), 5, 1.0) == 0.0


def _vals(metrics) -> list[tuple[int, float]]:
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [(line["step"], line["val_bpc"]) for line in lines if line["val_bpc"] is not None]


@pytest.fixture
def noise(tmp_path):
    """Uniform random letters: nothing in the training split predicts the validation split, so
    once the model has read it (a pass is 14 steps of TINY) val bpc only gets worse as it
    memorises noise."""
    rng = np.random.default_rng(0)
    path = tmp_path / "noise.txt"
    path.write_text("".join(rng.choice(list("abcdefghijklmnop"), 2_000)))
    return path


def test_patience_stops_a_run_and_a_fresh_run_of_its_length_follows(tmp_path, noise):
    flags = [*TINY, "--lr", "3e-2", "--eval-every", "5", "--out"]
    out = tmp_path / "a"
    r = run_cli("train", noise, *flags, out, "--steps", "2000", "--patience", "3", "--tensorboard")
    assert r.exit_code == 0, r.stderr
    first = _vals(out / "first" / "metrics.jsonl")
    best_step, best = min(first, key=lambda sv: sv[1])
    assert "stopping early" in r.stderr
    assert first[-1][0] == best_step + 3 * 5 < 2000  # three validations without a new best, then stop
    # then a fresh run over as many steps (the budget has room for it)
    steps = int(r.stderr.split("training again from scratch for ")[1].split(" ")[0])
    assert steps == first[-1][0]  # as long as the first run, its learning rate decaying over them
    second = _vals(out / "metrics.jsonl")
    assert second[-1][0] == steps or r.stderr.count("stopping early") == 2  # (it may stop early too; no third run)
    # best.pt is the better of the two runs' best models
    assert checkpoint.load(out / "best.pt")["val_bpc"] == pytest.approx(min(best, min(v for _, v in second)), abs=1e-4)
    assert checkpoint.load(out / "first" / "best.pt")["val_bpc"] == pytest.approx(best, abs=1e-4)
    # the same again into the same RUN_DIR replaces the earlier first run's files (and directories)
    r = run_cli("train", noise, *flags, out, "--steps", "2000", "--patience", "3", "--tensorboard", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert _vals(out / "first" / "metrics.jsonl") == first and (out / "first" / "tensorboard").is_dir()
    # --patience 0 trains to the end whatever val bpc does
    r = run_cli("train", noise, *flags, tmp_path / "b", "--steps", "60", "--patience", "0", "--quiet")
    assert r.exit_code == 0 and _vals(tmp_path / "b" / "metrics.jsonl")[-1][0] == 60


def _stopped(monkeypatch, run: int, step: int, *args) -> None:
    """Train with ``args``, stopped as if by SIGTERM after ``step`` of the first or second run."""
    from charrnn.training.trainer import Trainer

    real = Trainer._batch

    def batch(self):
        if (self.cfg.first_run is not None) == (run == 2) and self.position.step == step:
            self._stop_signal = signal.SIGTERM
        return real(self)

    monkeypatch.setattr(Trainer, "_batch", batch)
    r = run_cli("train", *args, "--quiet")
    monkeypatch.undo()
    assert r.exit_code == 143, r.stderr


def _resave(path, edit) -> None:
    ckpt = torch.load(path, weights_only=True)
    edit(ckpt)
    checkpoint.save({k: v for k, v in ckpt.items() if k not in ("format", "version")}, path)


@pytest.mark.parametrize("run, step", [(1, 10), (2, 5)])
def test_a_run_interrupted_in_either_run_resumes_as_if_never_stopped(tmp_path, noise, monkeypatch, run, step):
    """Stopped in the first run, the resumed run still goes on to the second; stopped in the
    second, it still ends by keeping the better of the two runs' best models."""
    flags = [*TINY, "--lr", "3e-2", "--eval-every", "5", "--patience", "3", "--steps", "2000"]
    straight = tmp_path / "straight"
    r = run_cli("train", noise, *flags, "--out", straight, "--quiet")
    assert r.exit_code == 0, r.stderr

    def interrupted(out):
        _stopped(monkeypatch, run, step, noise, *flags, "--out", out)
        assert (out / "first").is_dir() == (run == 2)

    cut = tmp_path / "cut"
    interrupted(cut)
    r = run_cli("train", "--resume", cut, "--quiet")
    assert r.exit_code == 0, r.stderr
    for name in ("first/best.pt", "first/last.pt", "best.pt", "last.pt"):
        a, b = checkpoint.load(straight / name), checkpoint.load(cut / name)
        assert a["step"] == b["step"] and a["val_bpc"] == b["val_bpc"], name
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"]), name
    if run == 2:
        # Had the first run's best been better, the resumed second run would keep it in best.pt.
        rigged = tmp_path / "rigged"
        interrupted(rigged)
        _resave(rigged / "last.pt", lambda c: c["train_config"]["first_run"].update(best_val_bpc=0.0))
        r = run_cli("train", "--resume", rigged)
        assert r.exit_code == 0 and "the first run's model was better (0.0000)" in r.stderr, r.stderr
        assert (rigged / "best.pt").read_bytes() == (rigged / "first" / "best.pt").read_bytes()


def test_a_resumed_run_that_cannot_tell_how_it_started_only_suggests_a_second_run(tmp_path, noise, monkeypatch):
    flags = [*TINY, "--lr", "3e-2", "--eval-every", "5", "--patience", "3", "--steps", "2000"]
    # A second run saved by a version that did not record first_run (as long as small's 1.5x
    # would make it, so a third would fit): resumed, it must not put its files over first/.
    old = tmp_path / "old"
    _stopped(monkeypatch, 2, 5, noise, *flags, "--out", old)
    _resave(old / "last.pt", lambda c: (c["train_config"].pop("first_run"), c["train_config"].update(steps=300)))
    kept = (old / "first" / "best.pt").read_bytes()
    r = run_cli("train", "--resume", old)
    assert r.exit_code == 0 and "stopping early" in r.stderr and "training again" not in r.stderr, r.stderr
    assert (old / "first" / "best.pt").read_bytes() == kept
    # A fine-tune stopped in its first run: its starting weights are not in the run, so the
    # second run is suggested, unless --init-from is given again.
    pre = tmp_path / "pre"
    assert run_cli("train", noise, *TINY, "--steps", "5", "--out", pre, "--quiet").exit_code == 0
    for again in ([], ["--init-from", pre / "best.pt"]):
        ft = tmp_path / f"ft{len(again)}"
        _stopped(monkeypatch, 1, 10, noise, *flags, "--init-from", pre / "best.pt", "--out", ft)
        r = run_cli("train", "--resume", ft, *again)
        assert r.exit_code == 0, r.stderr
        assert ("training again" in r.stderr) == bool(again) and ("a new run of --steps" in r.stderr) != bool(again)


def test_second_run_length_and_budget():
    from charrnn.training.retrain import retrain_steps

    stopped = {"overfit": True, "best_step": 168, "steps": 288}
    assert retrain_steps({**stopped, "budget_used": 0.25}) == (288, True)  # the first run's length again
    assert retrain_steps({**stopped, "budget_used": 0.55}) == (235, True)  # as much as is left: 288 * 0.45 / 0.55
    assert retrain_steps({**stopped, "budget_used": 0.7}) == (288, False)  # 123 < 1.15 x 168: only suggested
    assert retrain_steps({**stopped, "overfit": False, "budget_used": 1.0}) is None
    # a longer run (a second run with more dropout): what is left of the budget, up to 3x here
    assert retrain_steps({**stopped, "budget_used": 0.3}, longer=3) == (672, True)  # 288 * 0.7 / 0.3
    assert retrain_steps({**stopped, "budget_used": 0.1}, longer=3) == (864, True)  # room for 2,592
    assert retrain_steps({**stopped, "budget_used": 0.7}, longer=3) == (864, False)  # suggested: the whole 3x run


def _shifted(path, train_chars: int):
    """Letters a-h to train on, then i-p, the last tenth, to validate on: val bpc only rises."""
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("abcdefgh"), train_chars)) + "".join(rng.choice(list("ijklmnop"), train_chars // 9))
    path.write_text(text)
    return path


def test_a_run_whose_patience_runs_out_at_its_last_step_did_not_stop_early(tmp_path):
    """The best is the first validation and two validations later, past the first pass (14
    steps), the patience is spent, which is also the last step."""
    corpus = _shifted(tmp_path / "shifted.txt", 1_800)
    flags = [*TINY, "--eval-every", "5", "--patience", "2", "--out", tmp_path / "run"]
    r = run_cli("train", corpus, *flags, "--steps", "15")
    assert r.exit_code == 0, r.stderr
    assert [s for s, _ in _vals(tmp_path / "run" / "metrics.jsonl")] == [5, 10, 15]
    assert "stopping early" not in r.stderr and "stopped early" not in r.stderr
    # no room for a second run, so it is suggested, as long as this one
    assert "a new run of --steps 15 --dropout 0" in r.stderr
    r = run_cli("train", corpus, *flags, "--steps", "2000")
    assert "stopping early at step 15" in r.stderr and "stopped early" in r.stderr


def test_no_early_stop_before_the_run_has_read_its_text(tmp_path):
    """A val bpc that stalls in the first pass is not memorising (every batch is new text):
    the run goes on, and no second run is suggested."""
    corpus = _shifted(tmp_path / "shifted.txt", 18_000)  # a pass is 140 steps
    r = run_cli(
        "train", corpus, *TINY, "--eval-every", "5", "--patience", "2", "--out", tmp_path / "run", "--steps", "60"
    )
    assert r.exit_code == 0, r.stderr
    vals = _vals(tmp_path / "run" / "metrics.jsonl")
    assert [s for s, _ in vals] == list(range(5, 65, 5))
    assert min(vals, key=lambda sv: sv[1])[0] < 50  # patience 2 would have stopped it without the rule
    assert "stopping early" not in r.stderr and "a new run of" not in r.stderr
    assert not (tmp_path / "run" / "first").exists()


def test_the_second_run_takes_the_presets_dropout_unless_dropout_was_given(tmp_path, noise):
    from charrnn.training.config import make_config

    assert make_config("small", {}).retrain_dropout == 0.3 and make_config("small", {}).dropout == 0.2
    # medium's first run already has its second run's dropout: the second is as long as the first
    assert make_config("medium", {}).dropout == make_config("medium", {}).retrain_dropout == 0.3
    assert make_config("medium", {}).retrain_length == 1.0
    assert make_config("small", {"dropout": 0.1}).retrain_dropout is None  # the user's dropout holds for both runs
    at = TINY.index("--dropout")
    out = tmp_path / "run"
    flags = [
        *TINY[:at],
        *TINY[at + 2 :],
        "--preset",
        "small",
        "--lr",
        "3e-2",
        "--eval-every",
        "5",
        "--patience",
        "3",
        "--out",
        out,
        "--quiet",
    ]
    r = run_cli("train", noise, *flags, "--steps", "2000")
    assert r.exit_code == 0, r.stderr
    first = checkpoint.load(out / "first" / "last.pt")
    second = checkpoint.load(out / "last.pt")
    assert first["model_config"]["dropout"] == 0.2 and second["model_config"]["dropout"] == 0.3
    assert second["train_config"]["steps"] == round(1.5 * first["step"])  # more dropout: the preset's longer run
    # under a time budget the second run also ends by the budget's end
    r = run_cli("train", noise, *flags, "--time", "6s")
    assert r.exit_code == 0, r.stderr
    first, second = checkpoint.load(out / "first" / "last.pt"), checkpoint.load(out / "last.pt")
    assert first["elapsed"] + second["train_config"]["time"] == pytest.approx(6.0)
    assert first["elapsed"] + second["elapsed"] < 6.5


def test_the_output_layer_starts_at_the_texts_token_frequencies(tmp_path, repetitive_corpus):
    """A fresh model predicts the training text's character frequencies from the start; where the
    corpus has many rare characters a model from a zero bias sat at that unigram for hundreds of
    steps (README "Model")."""
    from charrnn.data.prepare import prepare
    from charrnn.training.config import make_config
    from charrnn.training.trainer import Trainer

    data = prepare([str(repetitive_corpus)], None, 0.1)
    cfg = make_config(None, dict(layers=1, hidden=32, embed=16, seq_len=16, batch_size=8, steps=1))
    trainer = Trainer(cfg, data, tmp_path, quiet=True)
    counts = np.bincount(np.asarray(data.train), minlength=data.vocab.size)
    predicted = torch.softmax(trainer.model.head.bias.detach().double(), 0).numpy()
    assert predicted == pytest.approx(counts / counts.sum(), abs=1e-4)
    x = torch.from_numpy(np.asarray(data.train[:200], dtype=np.int64))[None]
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(trainer.model(x[:, :-1])[0][0], x[0, 1:]).item() / math.log(2)
    unigram = -(counts / counts.sum() * np.log2(np.maximum(counts, 1) / counts.sum())).sum()
    assert abs(loss - unigram) < 0.1 and unigram < math.log2(data.vocab.size) - 0.3, (loss, unigram)


def test_validation_reads_at_most_val_tokens_of_the_split(tmp_path, repetitive_corpus):
    from charrnn.data.prepare import prepare
    from charrnn.evaluation.bpc import evaluate

    val = prepare([str(repetitive_corpus)], None, 0.1).val
    assert len(val) > 500
    for limit, read in ((300, 300), (0, len(val))):
        out = tmp_path / str(limit)
        # float32, as evaluate() below scores (an AMX CPU would validate in bfloat16)
        r = run_cli(
            "train",
            repetitive_corpus,
            *TINY,
            "--steps",
            "4",
            "--val-tokens",
            limit,
            "--precision",
            "float32",
            "--out",
            out,
        )
        assert r.exit_code == 0, r.stderr
        assert ("on the first 300 (--val-tokens 0 for all)" in r.stderr) == (limit == 300)
        model, _ = checkpoint.build_model(ckpt := checkpoint.load(out / "best.pt"))
        assert ckpt["val_bpc"] == pytest.approx(evaluate(model, val[:read], torch.device("cpu")).bpc, abs=1e-9)
    r = run_cli("train", repetitive_corpus, *TINY, "--steps", "4", "--val-tokens", "1", "--out", tmp_path / "one")
    assert r.exit_code == 2 and r.stderr.startswith("error: --val-tokens must be 0") and len(r.stderr.splitlines()) == 1
    # a run saved before the limit existed validated on the whole split, and resumes doing so
    out = tmp_path / "300"
    ckpt = torch.load(out / "last.pt", weights_only=True)
    del ckpt["train_config"]["val_tokens"]
    checkpoint.save({k: v for k, v in ckpt.items() if k not in ("format", "version")}, out / "last.pt")
    assert run_cli("train", "--resume", out, "--steps", "6", "--quiet").exit_code == 0
    model, _ = checkpoint.build_model(ckpt := checkpoint.load(out / "last.pt"))
    assert ckpt["val_bpc"] == pytest.approx(evaluate(model, val, torch.device("cpu")).bpc, abs=1e-9)


def test_validation_is_spaced_to_a_small_share_of_the_run():
    from charrnn.evaluation.bpc import tokens_read
    from charrnn.training.validation import FORWARD_COST, default_eval_every

    def share(every: int, step_tokens: int, read: int) -> float:
        """Validation's work beside the training steps' between two validations."""
        return read * FORWARD_COST / (every * step_tokens)

    kernel = tokens_read(np.zeros(131_072, np.int64))  # a large text's default validation
    assert 131_072 < kernel < 1.15 * 131_072  # the rows' burn-in on top
    assert share(200, 3200, kernel) > 0.07  # what 200 steps cost on the 64 MB kernel
    for step_tokens in (2048, 3200, 6400):
        every = default_eval_every(10**6, step_tokens, kernel)
        assert every >= 200 and share(every, step_tokens, kernel) <= 0.04
        assert share(every - 1, step_tokens, kernel) > 0.04 or every == 200
    # smaller steps are spaced further; a short text keeps the 200 steps or once per pass
    assert default_eval_every(10**6, 2048, kernel) > default_eval_every(10**6, 3200, kernel)
    demo = tokens_read(np.zeros(8_000, np.int64))
    assert default_eval_every(10**6, 2048, demo) == 200 and default_eval_every(35, 2048, demo) == 35
    assert default_eval_every(313, 3200, kernel) == 313  # a pass comes sooner


def test_a_large_split_is_validated_less_often(tmp_path, repetitive_corpus):
    """A run whose validation is large beside its tiny steps says how often it validates and
    does so; --eval-every still wins."""
    text = repetitive_corpus.read_text()
    corpus = tmp_path / "long.txt"
    corpus.write_text(text * max(1, 400_000 // len(text)))
    r = run_cli("train", corpus, *TINY, "--steps", "3", "--out", tmp_path / "a")
    assert r.exit_code == 0, r.stderr
    every = int(re.search(r"validating every ([\d,]+) steps", r.stderr).group(1).replace(",", ""))
    assert every > 200
    r = run_cli("train", corpus, *TINY, "--steps", "3", "--eval-every", "2", "--out", tmp_path / "b")
    assert "validating every 2 steps" in r.stderr


def test_validation_comes_once_per_pass_on_a_small_corpus(tmp_path, repetitive_corpus):
    from charrnn.data.batches import Batches
    from charrnn.data.prepare import prepare

    passes = Batches(prepare([str(repetitive_corpus)], None, 0.1).train, 8, 16).windows
    assert passes < 200  # the default 200 steps would be several passes over this text
    r = run_cli(
        "train",
        repetitive_corpus,
        *TINY,
        "--steps",
        str(2 * passes + 3),
        "--patience",
        "0",
        "--out",
        tmp_path,
        "--quiet",
    )
    assert r.exit_code == 0, r.stderr
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if line["val_bpc"] is not None] == [passes, 2 * passes, 2 * passes + 3]
