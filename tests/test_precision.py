"""--precision: the autocast training loop, loss scaling, and the rules that also govern CUDA.

This CPU (and CI's) has no AVX-512-BF16/AMX, so oneDNN cannot build a bfloat16 or float16 LSTM
here: the tests that train under autocast pretend the CPU has the instructions and use the
peephole cell, whose matrix products autocast handles in software on any CPU.
"""

import json
from pathlib import Path

import pytest
import torch

from charrnn import precision
from charrnn.config import make_config
from charrnn.data import prepare
from charrnn.errors import CharrnnError
from charrnn.train import Trainer

from conftest import TINY, run_cli


def val_curve(out: Path) -> list[float]:
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [line["val_bpc"] for line in lines if line["val_bpc"] is not None]


@pytest.fixture
def capable_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_computes", lambda dtype: True)


def test_bfloat16_training_really_autocasts(repetitive_corpus, tmp_path, capable_cpu):
    runs = {}
    for name in ("float32", "bfloat16"):
        out = tmp_path / name
        r = run_cli("train", repetitive_corpus, *TINY, "--model", "peephole", "--precision", name, "--steps", "60",
                    "--eval-every", "20", "--out", out, "--quiet")
        assert r.exit_code == 0, r.stderr
        runs[name] = val_curve(out)
        hidden = torch.load(out / "last.pt", weights_only=True)["resume"]["hidden"]
        assert all(h.dtype == torch.float32 for h in hidden)  # the carried state stays float32
    assert runs["bfloat16"][-1] < 0.6 * runs["bfloat16"][0]
    assert runs["bfloat16"] != runs["float32"]  # same seed and data: only the forward's dtype differs
    assert abs(runs["bfloat16"][-1] - runs["float32"][-1]) < 0.25


def test_loss_scale_overflow_is_skipped_not_treated_as_divergence(repetitive_corpus, tmp_path, capable_cpu):
    """float16 with a loss scale far too high: the scaler must back off on its own, without the
    non-finite-step handling halving the learning rate or stopping the run."""
    cfg = make_config(None, dict(model="peephole", layers=1, hidden=32, embed=16, seq_len=16, batch_size=8, dropout=0.0,
                                 lr=1e-2, weight_decay=0.01, steps=40, eval_every=20, precision="float16"))
    logged = []
    trainer = Trainer(cfg, prepare([str(repetitive_corpus)], None, cfg.val_frac), tmp_path, quiet=True, log=logged.append)
    assert trainer.scaler.is_enabled()
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    result = trainer.fit()
    assert result["steps"] == 40
    assert trainer.run.lr_scale == 1.0 and not any("non-finite" in m for m in logged)
    assert trainer.scaler.get_scale() < 2.0**40  # it backed off from the overflowing scale
    vals = val_curve(tmp_path)
    assert vals[-1] < vals[0]
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["resume"]["scaler"]
    assert saved["scale"] == trainer.scaler.get_scale()  # a resumed run continues at the same scale


@pytest.mark.parametrize(
    "device, name, scales",
    [("cpu", "float32", False), ("cpu", "bfloat16", False), ("cpu", "float16", True),
     ("cuda", "bfloat16", True), ("cuda", "float16", True), ("cuda", "float32", False)],
)
def test_which_runs_scale_the_loss(device, name, scales):
    # cuDNN's RNNs run in float16 under any CUDA autocast, so CUDA scales even for bfloat16.
    p = precision.Precision(device, precision.DTYPES[name])
    assert p.scales_loss is scales and p.name == name


def test_precision_errors(repetitive_corpus, tmp_path, monkeypatch):
    r = run_cli("train", repetitive_corpus, *TINY, "--precision", "float8", "--steps", "2", "--out", tmp_path, "--quiet")
    assert r.exit_code == 2 and r.stderr.startswith("error: unknown precision 'float8'")
    monkeypatch.setattr(precision, "cpu_computes", lambda dtype: False)
    # --device cpu: on a GPU machine the default device would be the GPU, which needs no such CPU.
    r = run_cli("train", repetitive_corpus, *TINY, "--precision", "bfloat16", "--steps", "2", "--device", "cpu",
                "--out", tmp_path, "--quiet")
    assert r.exit_code == 2 and "lacks AVX-512-BF16 or AMX" in r.stderr and len(r.stderr.splitlines()) == 1
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(CharrnnError, match="no bfloat16 support"):
        precision.resolve("bfloat16", torch.device("cuda"))
