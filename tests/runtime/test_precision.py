"""--precision: the autocast training loop, loss scaling, and the rules that also govern CUDA.

A CPU without AVX-512-BF16/AMX cannot build oneDNN's bfloat16 or float16 LSTM, so the tests that
train under an explicit reduced precision pretend the CPU has the instructions and use the
peephole cell, whose matrix products autocast handles in software on any CPU. ``--precision auto``
is tested on the machine as it is: bfloat16 where it has AMX, float32 where it has not.
"""

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY, run_cli

from charrnn.data.prepare import prepare
from charrnn.errors import CharrnnError
from charrnn.runtime import precision
from charrnn.training.config import make_config
from charrnn.training.trainer import Trainer


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
        r = run_cli(
            "train",
            repetitive_corpus,
            *TINY,
            "--model",
            "peephole",
            "--precision",
            name,
            "--steps",
            "60",
            "--eval-every",
            "20",
            "--out",
            out,
            "--quiet",
        )
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
    cfg = make_config(
        None,
        dict(
            model="peephole",
            layers=1,
            hidden=32,
            embed=16,
            seq_len=16,
            batch_size=8,
            dropout=0.0,
            lr=1e-2,
            weight_decay=0.01,
            steps=40,
            eval_every=20,
            precision="float16",
        ),
    )
    logged = []
    trainer = Trainer(
        cfg, prepare([str(repetitive_corpus)], None, cfg.val_frac), tmp_path, quiet=True, log=logged.append
    )
    assert trainer.scaler.is_enabled()
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)
    result = trainer.fit()
    assert result["steps"] == 40
    assert trainer.position.lr_scale == 1.0 and not any("non-finite" in m for m in logged)
    assert trainer.scaler.get_scale() < 2.0**40  # it backed off from the overflowing scale
    vals = val_curve(tmp_path)
    assert vals[-1] < vals[0]
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["resume"]["scaler"]
    assert saved["scale"] == trainer.scaler.get_scale()  # a resumed run continues at the same scale


@pytest.mark.parametrize(
    "device, name, scales",
    [
        ("cpu", "float32", False),
        ("cpu", "bfloat16", False),
        ("cpu", "float16", True),
        ("cuda", "bfloat16", True),
        ("cuda", "float16", True),
        ("cuda", "float32", False),
    ],
)
def test_which_runs_scale_the_loss(device, name, scales):
    # cuDNN's RNNs run in float16 under any CUDA autocast, so CUDA scales even for bfloat16.
    p = precision.Precision(device, precision.DTYPES[name])
    assert p.scales_loss is scales and p.name == name


def test_precision_errors(repetitive_corpus, tmp_path, monkeypatch):
    r = run_cli(
        "train", repetitive_corpus, *TINY, "--precision", "float8", "--steps", "2", "--out", tmp_path, "--quiet"
    )
    assert r.exit_code == 2 and r.stderr.startswith("error: unknown precision 'float8'")
    monkeypatch.setattr(precision, "cpu_computes", lambda dtype: False)
    # --device cpu: on a GPU machine the default device would be the GPU, which needs no such CPU.
    r = run_cli(
        "train",
        repetitive_corpus,
        *TINY,
        "--precision",
        "bfloat16",
        "--steps",
        "2",
        "--device",
        "cpu",
        "--out",
        tmp_path,
        "--quiet",
    )
    assert r.exit_code == 2 and "lacks AVX-512-BF16 or AMX" in r.stderr and len(r.stderr.splitlines()) == 1
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(CharrnnError, match="no bfloat16 support"):
        precision.resolve("bfloat16", torch.device("cuda"))


@pytest.mark.parametrize(
    "device, model, amx, expected",
    [
        ("cpu", "lstm", True, torch.bfloat16),
        ("cpu", "lstm", False, None),
        ("cpu", "gru", True, None),
        ("cpu", "peephole", True, None),
        ("cuda", "lstm", True, None),
    ],
)
def test_auto_picks_bfloat16_only_for_the_fused_lstm_on_amx(monkeypatch, device, model, amx, expected):
    monkeypatch.setattr(precision, "cpu_has_amx", lambda: amx)
    p = precision.resolve("auto", torch.device(device), model)
    assert p.dtype == expected and p.chosen_by_auto
    assert p.describe() == f"{'float32' if expected is None else 'bfloat16'} (--precision auto)"
    assert not p.scales_loss or device == "cuda"


def test_default_run_trains_in_what_auto_picks_for_this_cpu(repetitive_corpus, tmp_path):
    """No monkeypatching: on an AMX CPU this trains oneDNN's bfloat16 LSTM for real, elsewhere float32."""
    out = tmp_path / "run"
    r = run_cli(
        "train", repetitive_corpus, *TINY, "--steps", "60", "--eval-every", "20", "--device", "cpu", "--out", out
    )
    assert r.exit_code == 0, r.stderr
    picked = "bfloat16" if precision.cpu_has_amx() else "float32"
    assert f"device cpu, {picked} (--precision auto)" in r.stderr
    vals = val_curve(out)
    assert vals[-1] < 0.6 * vals[0]
    saved = torch.load(out / "last.pt", weights_only=True)
    assert saved["train_config"]["precision"] == "auto"
    assert all(p.dtype == torch.float32 for p in saved["state_dict"].values())
    # validation ran in what auto picked; float32 scores the saved model the same to ~1e-4 bpc
    from charrnn.evaluation.bpc import evaluate
    from charrnn.model import checkpoint

    model, _ = checkpoint.build_model(best := checkpoint.load(out / "best.pt"))
    val = prepare([str(repetitive_corpus)], None, 0.1).val
    assert best["val_bpc"] == pytest.approx(evaluate(model, val, torch.device("cpu")).bpc, abs=2e-3)


def test_only_bfloat16_picked_by_auto_validates_under_autocast():
    def validates_in_autocast(p: precision.Precision) -> bool:
        with p.validation_autocast():
            return torch.is_autocast_enabled("cpu")

    assert validates_in_autocast(precision.Precision("cpu", torch.bfloat16, chosen_by_auto=True))
    assert not validates_in_autocast(precision.Precision("cpu", torch.bfloat16))  # asked for: maybe not oneDNN's LSTM
    assert not validates_in_autocast(precision.Precision("cpu", None, chosen_by_auto=True))
    assert not validates_in_autocast(precision.Precision("cuda", torch.bfloat16, chosen_by_auto=True))


@pytest.mark.parametrize(
    "cap, amx", [("AVX512_CORE_BF16", False), ("avx2", False), ("AVX512_CORE_AMX", True), ("ALL", True)]
)
def test_a_onednn_isa_cap_below_amx_counts_as_no_amx(monkeypatch, cap, amx):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert precision.cpu_has_amx() is amx


def test_a_run_saved_before_precision_existed_resumes_in_float32(repetitive_corpus, tmp_path):
    from charrnn.model import checkpoint

    out = tmp_path / "run"
    r = run_cli("train", repetitive_corpus, *TINY, "--steps", "4", "--precision", "float32", "--out", out, "--quiet")
    assert r.exit_code == 0, r.stderr
    ckpt = torch.load(out / "last.pt", weights_only=True)
    del ckpt["train_config"]["precision"]
    checkpoint.save({k: v for k, v in ckpt.items() if k not in ("format", "version")}, out / "last.pt")
    r = run_cli("train", "--resume", out, "--steps", "6", "--device", "cpu")
    assert r.exit_code == 0, r.stderr
    assert "device cpu, float32" in r.stderr and "(--precision auto)" not in r.stderr
    assert checkpoint.load(out / "last.pt")["train_config"]["precision"] == "float32"
