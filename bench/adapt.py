"""``sample --adapt`` on passages: the held-back end of each passage, before and after adapting.

Each passage is ``--length`` characters of a corpus from ``--offset``; the model adapts to all
but its last ``--held`` characters, then both the original and the adapted model read those
first characters as context and score the held-back rest. One JSON line per passage: bpc
before and after, their difference, and the seconds adaptation took (gradient statistics
included). The adapted copy is made exactly as ``charrnn sample --adapt`` makes it.
Usage: python bench/adapt.py CHECKPOINT CORPUS:OFFSET [CORPUS:OFFSET ...] [--length 5000] [--held 1000]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    cpu_name,  # noqa: E402
    emit,  # noqa: E402
)

from charrnn.data import corpus  # noqa: E402
from charrnn.data.prepare import encode_text  # noqa: E402
from charrnn.evaluation.adapt import MAX_STEPS, PASSES, adapt_ids  # noqa: E402
from charrnn.evaluation.dynamic import Rule  # noqa: E402
from charrnn.model import checkpoint


@torch.no_grad()
def held_out_bpc(model, ids: np.ndarray, context: int, chars: int) -> float:
    """Bits per character of ``ids[context:]`` read after ``ids[:context]`` (state carried)."""
    model.eval()
    x = torch.from_numpy(ids[:-1].astype(np.int64))[None]
    y = torch.from_numpy(ids[1:].astype(np.int64))
    logits, _ = model(x)
    nats = F.cross_entropy(logits[0, context - 1 :].float(), y[context - 1 :], reduction="sum")
    return float(nats) / math.log(2) / chars


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("passages", nargs="+", help="CORPUS:OFFSET, the offset in characters")
    ap.add_argument("--length", type=int, default=5000)
    ap.add_argument("--held", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=MAX_STEPS)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--decay", type=float, default=None)
    ap.add_argument("--passes", type=int, default=PASSES)
    args = ap.parse_args()
    ckpt = checkpoint.load(args.checkpoint)
    model, vocab = checkpoint.build_model(ckpt)
    rule = Rule(lr=args.lr, decay=args.decay)
    for spec in args.passages:
        name, offset = spec.rsplit(":", 1)
        sources = corpus.open_sources([name])
        text = corpus.read_text(sources)[int(offset) : int(offset) + args.length]
        gone = set(vocab.missing(text))  # a passage of another corpus may hold characters the model lacks
        text = "".join(c for c in text if c not in gone)
        head, held = text[: -args.held], text[-args.held :]
        head_ids, all_ids = encode_text(vocab, head), encode_text(vocab, text)
        t0 = time.monotonic()
        adapter = adapt_ids(ckpt, model, vocab, head_ids, args.steps, rule, passes=args.passes)
        seconds = time.monotonic() - t0
        before = held_out_bpc(model, all_ids, len(head_ids), len(held))
        after = held_out_bpc(adapter.model, all_ids, len(head_ids), len(held))
        emit(
            bench="adapt",
            passage=f"{Path(name).name}:{offset}",
            chars=len(text),
            held=len(held),
            cpu=cpu_name(),
            steps=adapter.steps,
            passes=args.passes,
            lr=adapter.rule.lr,
            decay=adapter.rule.decay,
            before_bpc=round(before, 4),
            after_bpc=round(after, 4),
            gain_bpc=round(before - after, 4),
            adapt_s=round(seconds, 2),
        )


if __name__ == "__main__":
    main()
