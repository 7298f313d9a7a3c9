"""Shared pieces of the benchmarks: where the corpora are, and one JSON line per result."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from charrnn.runtime.device import cpu_model
from charrnn.runtime.precision import cpu_has_amx

# corpora/catalogue.py is the one place that says where the corpora are; the benches take it from here.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "corpora"))
import catalogue  # noqa: E402

CORPORA = catalogue.SHARED


class PlainLSTM(nn.Module):
    """The baseline both benches compare against: nn.LSTM with dropout 0.2 between layers and
    before the head, as the classic char-rnn recipe has it."""

    def __init__(self, vocab: int, layers: int = 2, hidden: int = 512, embed: int = 512) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.rnn = nn.LSTM(embed, hidden, num_layers=layers, dropout=0.2, batch_first=True)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor, state: tuple | None = None) -> tuple[torch.Tensor, tuple]:
        out, state = self.rnn(self.embed(x), state)
        return self.head(self.drop(out)), state


def plain_step(
    model: nn.Module,
    params: list,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    state: tuple | None,
    vocab: int,
) -> tuple[torch.Tensor, tuple]:
    """One update of the classic recipe: cross-entropy, clip 5, the state carried but detached."""
    logits, state = model(x, state)
    state = tuple(s.detach() for s in state)
    loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(params, 5.0)
    opt.step()
    return loss, state


def train_plain(
    train: np.ndarray, vocab: int, seconds: float, device: torch.device, seed: int = 1337
) -> tuple[PlainLSTM, dict]:
    """The classic char-rnn recipe (nn.LSTM 2x512, embedding 512, seq 100, batch 64, Adam 2e-3,
    dropout 0.2, clip 5, hidden state carried) for ``seconds`` of wall clock on token ids."""
    torch.manual_seed(seed)
    model = PlainLSTM(vocab).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    B, T = 64, 100
    per = (len(train) - 1) // B
    xs = torch.from_numpy(train[: B * per].reshape(B, per)).to(device)
    ys = torch.from_numpy(train[1 : B * per + 1].reshape(B, per)).to(device)
    params = list(model.parameters())
    state, k, steps = None, 0, 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if (k + 1) * T > per:
            k, state = 0, None
        x, y = xs[:, k * T : (k + 1) * T], ys[:, k * T : (k + 1) * T]
        _, state = plain_step(model, params, opt, x, y, state, vocab)
        k += 1
        steps += 1
    sync(device)
    elapsed = time.monotonic() - start
    return model, {
        "steps": steps,
        "chars_per_s": steps * B * T / elapsed,
        "train_s": elapsed,
        "passes": steps * B * T / len(train),
    }


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so a host clock reads the time it took."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_name() -> str:
    """The CPU's model name, and whether oneDNN uses its AMX (which changes what bfloat16 is worth)."""
    return cpu_model() + (" (AMX)" if cpu_has_amx() else "")


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def rss_mb(pid: int) -> float:
    """A process's resident memory (VmRSS of /proc/PID/status), in MiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024


def corpus(name: str) -> Path:
    path = CORPORA / name
    if not path.is_file():
        sys.exit(f"error: {path} not found (benchmarks read ../shared/corpora)")
    return path


def train_cli(path: Path, seconds: float, flags: list[str]) -> dict:
    """Train through the real CLI for ``seconds`` and summarise its metrics.

    chars/s is the median over log intervals (validation time excluded); val bpc is the best
    and the final whole-split value the trainer reported.
    """
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable,
            "-m",
            "charrnn",
            "train",
            str(path),
            "--time",
            f"{seconds}s",
            "--out",
            out,
            "--quiet",
            *flags,
        ]
        subprocess.run(cmd, check=True)
        lines = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    vals = [line["val_bpc"] for line in lines if line["val_bpc"] is not None]
    return {
        "best_val_bpc": min(vals),
        "final_val_bpc": vals[-1],
        "steps": lines[-1]["step"],
        "chars_per_s": round(statistics.median(line["chars_per_s"] for line in lines[1:] or lines), 1),
        "train_s": lines[-1]["elapsed"],
    }
