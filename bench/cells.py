"""Which cell learns tinyshakespeare best in the same time at the same size: rnn, gru, lstm,
peephole, cifg.

Each cell gets the hidden size that brings the model closest to the parameter count of the
default LSTM 2x512 (within 5%), so the comparison is per parameter and per second, not a
bigger model winning. Every run is the real CLI with the default preset and only the cell,
its hidden size and ``--time`` changed. One JSON line per cell: hidden size, parameters,
training chars/s (median over log intervals, validation excluded) and best val bpc.
Usage: python bench/cells.py [--minutes 10] [--corpus tinyshakespeare.txt]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import corpus, emit, train_cli  # noqa: E402

from charrnn.data.vocab import CharVocab  # noqa: E402
from charrnn.model.network import CharRNN, ModelConfig, count_parameters  # noqa: E402
from charrnn.training.config import DEFAULT_PRESET, PRESETS  # noqa: E402

CELLS = ("rnn", "gru", "lstm", "peephole", "cifg")
LAYERS = 2
REFERENCE_HIDDEN = 512  # the lstm size every cell is matched to
TOLERANCE = 0.05


def parameters(cell: str, hidden: int, vocab: int, embed: int) -> int:
    """Parameters of the model the CLI builds, counted from the model itself."""
    return count_parameters(
        CharRNN(ModelConfig(vocab_size=vocab, model=cell, layers=LAYERS, hidden=hidden, embed=embed))
    )


def matched_hidden(cell: str, target: int, vocab: int, embed: int) -> int:
    """The hidden size whose model is closest to ``target`` parameters (counts grow with it)."""
    lo, hi = 1, 4 * REFERENCE_HIDDEN
    while lo < hi:  # the smallest hidden size reaching the target
        mid = (lo + hi) // 2
        if parameters(cell, mid, vocab, embed) < target:
            lo = mid + 1
        else:
            hi = mid
    best = min((max(1, lo - 1), lo), key=lambda h: abs(parameters(cell, h, vocab, embed) - target))
    if abs(parameters(cell, best, vocab, embed) - target) > TOLERANCE * target:
        sys.exit(f"error: no {cell} hidden size within {TOLERANCE:.0%} of {target:,} parameters")
    return best


def run(path: Path, cell: str, hidden: int, embed: int, seconds: float) -> dict:
    flags = ["--model", cell, "--layers", str(LAYERS), "--hidden", str(hidden), "--embed", str(embed)]
    r = train_cli(path, seconds, flags)
    return {k: r[k] for k in ("chars_per_s", "best_val_bpc", "steps")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="training time per cell")
    ap.add_argument("--corpus", default="tinyshakespeare.txt", help="a file in ../shared/corpora")
    args = ap.parse_args()
    path = corpus(args.corpus)
    vocab = CharVocab.build(path.read_text(encoding="utf-8")).size
    embed = PRESETS[DEFAULT_PRESET]["embed"]
    target = parameters("lstm", REFERENCE_HIDDEN, vocab, embed)
    for cell in CELLS:
        hidden = matched_hidden(cell, target, vocab, embed)
        result = run(path, cell, hidden, embed, args.minutes * 60)
        emit(
            bench="cells",
            corpus=args.corpus,
            minutes=args.minutes,
            cell=cell,
            hidden=hidden,
            parameters=parameters(cell, hidden, vocab, embed),
            **result,
        )


if __name__ == "__main__":
    main()
