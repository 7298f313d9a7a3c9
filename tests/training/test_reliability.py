"""Kills, hostile inputs and absurd options: every case ends in success or a one-line error."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from conftest import TINY, run_cli, run_proc

from charrnn.data import corpus
from charrnn.errors import CharrnnError
from charrnn.model import checkpoint

KILLS = int(os.environ.get("CHARRNN_KILLS", "4"))
FUZZ_CASES = int(os.environ.get("CHARRNN_FUZZ", "300"))


def _kill_rounds(tmp_path, corpus_path, rounds: int) -> int:
    """SIGKILL training at random moments (fresh, then resumed); the checkpoints must always load."""
    out = tmp_path / "run"
    rng = random.Random(1234)
    base = ["train", str(corpus_path), *TINY, "--steps", "100000", "--eval-every", "3", "--log-every", "3", "--quiet"]
    survived = 0
    for i in range(rounds):
        fresh = i == 0 or not (out / "last.pt").exists()
        args = base + ["--out", str(out)] if fresh else ["train", "--resume", str(out), "--quiet"]
        proc = subprocess.Popen([sys.executable, "-m", "charrnn", *args], stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not (out / "last.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()
        proc.wait()
        for name in ("last.pt", "best.pt"):
            if (out / name).exists():
                checkpoint.build_model(checkpoint.load(out / name))
        assert (out / "last.pt").exists()
        survived += 1
    return survived


def test_sigkill_never_leaves_a_broken_checkpoint(tmp_path, repetitive_corpus):
    assert _kill_rounds(tmp_path, repetitive_corpus, KILLS) == KILLS


@pytest.mark.slow
def test_sigkill_many_times(tmp_path, repetitive_corpus):
    assert _kill_rounds(tmp_path, repetitive_corpus, 25) == 25


def test_second_ctrl_c_quits_at_once(tmp_path, repetitive_corpus):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "charrnn",
            "train",
            str(repetitive_corpus),
            *TINY,
            "--steps",
            "100000",
            "--out",
            str(out),
            "--quiet",
            "--eval-every",
            "5",
        ],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not (out / "last.pt").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    assert proc.returncode == 130
    checkpoint.load(out / "last.pt")


def _random_corpus(rng: random.Random) -> list[bytes]:
    kind = rng.choice(["random", "utf8_cut", "huge_line", "nul", "empty_among_good", "bom_crlf", "good"])
    good = "ACT I.\r\nHAMLET: to be — or not.\n".encode() * rng.randint(1, 50)
    if kind == "random":
        return [rng.randbytes(rng.randint(0, 5000))]
    if kind == "utf8_cut":
        data = ("é€𝄞" * rng.randint(1, 3000)).encode()
        return [data[: rng.randint(0, len(data))]]
    if kind == "huge_line":
        return [b"x" * rng.randint(10_000, 300_000)]
    if kind == "nul":
        pos = rng.randint(0, len(good))
        return [good[:pos] + b"\x00" + good[pos:]]
    if kind == "empty_among_good":
        return [good, b"", good]
    if kind == "bom_crlf":
        return [b"\xef\xbb\xbf" + good, b"\xef\xbb\xbf" + good]
    return [good]


def test_fuzz_corpus_loader(tmp_path):
    rng = random.Random(99)
    outcomes = {"ok": 0, "error": 0}
    for case in range(FUZZ_CASES):
        paths = []
        for j, data in enumerate(_random_corpus(rng)):
            p = tmp_path / f"c{case}_{j}.txt"
            p.write_bytes(data)
            paths.append(str(p))
        try:
            text = corpus.read_text(corpus.open_sources(paths))
            assert isinstance(text, str) and "\r" not in text and "\ufeff" not in text[:1]
            outcomes["ok"] += 1
        except CharrnnError as e:
            assert "\n" not in str(e) and str(e)
            outcomes["error"] += 1
    assert outcomes["ok"] > 0 and outcomes["error"] > 0


NUMERIC = {
    "--layers": int,
    "--hidden": int,
    "--embed": int,
    "--dropout": float,
    "--weight-drop": float,
    "--seq-len": int,
    "--batch-size": int,
    "--lr": float,
    "--min-lr": float,
    "--warmup": int,
    "--weight-decay": float,
    "--grad-clip": float,
    "--steps": int,
    "--epochs": float,
    "--eval-every": int,
    "--log-every": int,
    "--val-frac": float,
    "--seed": int,
}
ABSURD = ["-1", "0", "1e308", "nan", "inf", "-inf", "99999999999999999999", "abc", "", "0.5", "3"]


def test_fuzz_train_options(tmp_path, repetitive_corpus):
    rng = random.Random(7)
    cases = int(os.environ.get("CHARRNN_OPTION_FUZZ", "40"))
    for i in range(cases):
        flag = rng.choice(list(NUMERIC))
        value = rng.choice(ABSURD)
        out = tmp_path / f"o{i}"
        args = ["train", repetitive_corpus, *TINY, "--steps", "2", "--quiet", "--out", out, flag, value]
        r = run_cli(*args)
        if r.exit_code == 0:
            assert (out / "best.pt").exists() and (out / "last.pt").exists()
            checkpoint.load(out / "last.pt")
        else:
            assert r.exception is None or isinstance(r.exception, SystemExit), (flag, value, r.exception)
            assert not (out / "last.pt").exists() or checkpoint.load(out / "last.pt")


def test_non_finite_loss_skips_steps_then_stops_naming_last_good(tmp_path, repetitive_corpus, monkeypatch):
    import torch

    import charrnn.training.update as update_mod
    from charrnn.data.prepare import prepare
    from charrnn.training.config import make_config
    from charrnn.training.trainer import Trainer

    real = torch.nn.functional.cross_entropy
    calls = {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        loss = real(*a, **k)
        return loss * float("nan") if calls["n"] > 12 else loss

    cfg = make_config(
        "tiny", {"layers": 1, "hidden": 16, "embed": 8, "seq_len": 16, "batch_size": 4, "steps": 100, "eval_every": 5}
    )
    data = prepare([str(repetitive_corpus)], None, 0.1)
    trainer = Trainer(cfg, data, tmp_path / "run", quiet=True)
    from types import SimpleNamespace

    monkeypatch.setattr(update_mod, "F", SimpleNamespace(cross_entropy=poisoned))  # the loss, token_loss
    with pytest.raises(CharrnnError, match=r"diverged: 5 non-finite steps in a row; last good checkpoint: .*best\.pt"):
        trainer.fit()
    monkeypatch.undo()
    assert trainer.position.lr_scale == 0.5**5
    for name in ("best.pt", "last.pt"):
        ckpt = checkpoint.load(tmp_path / "run" / name)
        assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values())


def test_full_stdout_is_reported_on_stderr(trained_run):
    with open("/dev/full", "w") as full:
        p = subprocess.run(
            [sys.executable, "-m", "charrnn", "sample", str(trained_run), "--length", "100000"],
            stdout=full,
            stderr=subprocess.PIPE,
        )
    assert p.returncode == 1 and p.stderr.startswith(b"error: ") and p.stderr.count(b"\n") == 1


def test_help_does_not_import_torch():
    code = "import sys; from charrnn.cli.app import app; print('torch' in sys.modules)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.stdout.strip() == "False"
    r = run_proc("--help")
    assert r.returncode == 0 and b"train" in r.stdout
