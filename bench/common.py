"""Shared pieces of the benchmarks: where the corpora are, and one JSON line per result."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"


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


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so a host clock reads the time it took."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


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
        cmd = [sys.executable, "-m", "charrnn", "train", str(path), "--time", f"{seconds}s", "--out", out, "--quiet", *flags]
        subprocess.run(cmd, check=True)
        lines = [json.loads(l) for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    vals = [l["val_bpc"] for l in lines if l["val_bpc"] is not None]
    return {
        "best_val_bpc": min(vals),
        "final_val_bpc": vals[-1],
        "steps": lines[-1]["step"],
        "chars_per_s": round(statistics.median(l["chars_per_s"] for l in lines[1:] or lines), 1),
        "train_s": lines[-1]["elapsed"],
    }
