"""Dynamic evaluation against static evaluation of the same model on the same text.

The text is a corpus's validation split (its last ``--val-frac``, after the Project Gutenberg
header and licence are left out, as training split it), or its first ``--chars`` characters.
One JSON line per update rule: static and dynamic bpc, their difference, and the seconds each
took with the dynamic/static time ratio (static runs the text as parallel rows, dynamic as one
stream). ``--grid`` tries a few learning rates and decays per method, for choosing defaults on
corpora other than the one the docs report.
Usage: python bench/dynamic.py CHECKPOINT CORPUS [--chars 30000] [--grid | --rule rms:2e-4:0.01 ...] [--segment 50]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, emit  # noqa: E402

from charrnn.data import corpus  # noqa: E402
from charrnn.data.prepare import encode_text, split_point  # noqa: E402
from charrnn.evaluation.bpc import evaluate  # noqa: E402
from charrnn.evaluation.dynamic import SEGMENT, Adapter, Rule, compare, gradient_stats, stats_ids  # noqa: E402
from charrnn.model import checkpoint

GRID = [("rms", lr, decay) for lr in (3e-5, 1e-4, 3e-4, 1e-3) for decay in (0.003, 0.03)] + [
    ("sgd", lr, decay) for lr in (0.1, 0.3, 1.0) for decay in (0.001, 0.01)
]


def validation_text(path: Path, val_frac: float, keep_gutenberg: bool) -> str:
    sources = corpus.open_sources([str(path)])
    text = corpus.read_text(sources, keep_gutenberg)
    return text[split_point(len(text), val_frac) :]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--chars", type=int, default=0, help="score only the first N characters of the split (0: all)")
    ap.add_argument("--segment", type=int, default=None)
    ap.add_argument("--grid", action="store_true")
    ap.add_argument(
        "--rule", action="append", default=[], help="METHOD:LR:DECAY to try instead of the grid (repeatable)"
    )
    args = ap.parse_args()
    ckpt = checkpoint.load(args.checkpoint)
    model, vocab = checkpoint.build_model(ckpt)
    cfg = ckpt.get("train_config", {})
    text = validation_text(args.corpus, float(cfg.get("val_frac", 0.1)), bool(cfg.get("keep_gutenberg", False)))
    if args.chars:
        text = text[: args.chars]
    ids = encode_text(vocab, text)
    chars = vocab.count_chars(ids[1:])
    train_ids = stats_ids(ckpt, vocab)
    grid = [(m, float(lr), float(d)) for m, lr, d in (r.split(":") for r in args.rule)] or GRID
    if not args.grid and not args.rule:
        for method in ("rms", "sgd"):
            r = compare(
                model, ids, Rule(method, segment=args.segment or SEGMENT), train_ids, chars, show_progress=False
            )
            report(args, text, r.rule, r.static.bpc, r.dynamic.bpc, r.static_seconds, r.dynamic_seconds)
        return
    # The grid shares one static score and one set of gradient statistics per segment length.
    t0 = time.monotonic()
    static = evaluate(model, ids, torch.device("cpu"), chars=chars)
    static_s = time.monotonic() - t0
    stats = gradient_stats(model, train_ids, args.segment or SEGMENT)
    for method, lr, decay in grid:
        rule = Rule(method, lr, decay, args.segment or SEGMENT)
        t0 = time.monotonic()
        nats = Adapter(model, rule, stats).pass_over(ids)
        report(args, text, rule.resolved(), static.bpc, nats / math.log(2) / chars, static_s, time.monotonic() - t0)


def report(args, text: str, rule: Rule, static: float, dynamic: float, static_s: float, dynamic_s: float) -> None:
    emit(
        bench="dynamic",
        corpus=args.corpus.name,
        checkpoint=str(args.checkpoint),
        cpu=cpu_name(),
        chars=len(text),
        method=rule.method,
        lr=rule.lr,
        decay=rule.decay,
        segment=rule.segment,
        static_bpc=round(static, 4),
        dynamic_bpc=round(dynamic, 4),
        gain_bpc=round(static - dynamic, 4),
        static_s=round(static_s, 2),
        dynamic_s=round(dynamic_s, 2),
        time_ratio=round(dynamic_s / max(1e-9, static_s), 1),
    )


if __name__ == "__main__":
    main()
