"""Val bits-per-char reached in the same wall-clock budget: a plain PyTorch loop vs charrnn.

The plain loop is the classic char-rnn recipe (nn.LSTM 2x512, embedding 512, seq 100, batch 64,
Adam 2e-3, dropout 0.2, clip 5, hidden state carried) on the same 90/10 split; charrnn runs its
default preset through the real CLI with only ``--time``. Both are scored by the same whole-split
evaluation. ``--device cuda`` runs both on the GPU (charrnn with ``--device cuda``; its precision
and preset stay the defaults unless ``--extra`` says otherwise).
Usage: python bench/quality.py [--minutes 10] [--corpus tinyshakespeare.txt] [--device cuda]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import corpus, emit, train_cli, train_plain  # noqa: E402

from charrnn.evaluation.bpc import evaluate  # noqa: E402


def plain_loop(path: Path, seconds: float, device: torch.device) -> dict:
    text = path.read_text()
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    ids = np.array([lookup[c] for c in text], dtype=np.int64)
    n = int(0.9 * len(ids))
    model, stats = train_plain(ids[:n], len(chars), seconds, device)
    return {"val_bpc": evaluate(model, ids[n:], device).bpc, **stats}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--corpus", default="tinyshakespeare.txt")
    ap.add_argument("--only", choices=["plain", "charrnn"], default=None)
    ap.add_argument("--extra", default="", help="extra flags for charrnn train, e.g. '--preset tiny'")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args()
    device = torch.device(args.device)
    path = corpus(args.corpus)
    seconds = args.minutes * 60
    results = {}
    if args.only in (None, "plain"):
        results["plain"] = plain_loop(path, seconds, device)
        emit(
            bench="quality",
            device=args.device,
            who="plain_lstm_2x512",
            corpus=args.corpus,
            minutes=args.minutes,
            **results["plain"],
        )
    if args.only in (None, "charrnn"):
        results["charrnn"] = train_cli(path, seconds, ["--device", args.device, *args.extra.split()])
        emit(
            bench="quality",
            device=args.device,
            who="charrnn " + (args.extra or "default preset"),
            corpus=args.corpus,
            minutes=args.minutes,
            **results["charrnn"],
        )
    if len(results) == 2:
        emit(
            bench="quality",
            ratio="plain_val_bpc/charrnn_val_bpc",
            value=results["plain"]["val_bpc"] / results["charrnn"]["best_val_bpc"],
            delta_bpc=results["plain"]["val_bpc"] - results["charrnn"]["best_val_bpc"],
        )


if __name__ == "__main__":
    main()
