"""Dynamic evaluation against static evaluation of the same model on the same text.

The text is a corpus's validation split (its last ``--val-frac``, after the Project Gutenberg
header and licence are left out, as training split it), or its first ``--chars`` characters.
One JSON line per update rule: static and dynamic bpc, their difference, and the seconds each
took with the dynamic/static time ratio (static runs the text as parallel rows, dynamic as one
stream). ``--grid`` tries a few learning rates and decays per method, for choosing defaults on
corpora other than the one the docs report.
Usage: python bench/dynamic.py CHECKPOINT CORPUS [--chars 30000] [--grid] [--segment 50]
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

from charrnn import checkpoint, corpus  # noqa: E402
from charrnn.data import encode_text, split_point  # noqa: E402
from charrnn.dynamic import Rule, compare, stats_ids  # noqa: E402

GRID = [("rms", lr, decay) for lr in (1e-4, 2e-4, 4e-4) for decay in (0.003, 0.01, 0.03)] + [
    ("sgd", lr, decay) for lr in (0.1, 0.3, 1.0) for decay in (0.003, 0.01)
]


def validation_text(path: Path, val_frac: float, keep_gutenberg: bool) -> str:
    sources = corpus.open_sources([str(path)])
    text = corpus.read_text(sources, keep_gutenberg)
    return text[split_point(len(text), val_frac) :]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--chars", type=int, default=0, help="score only the first N characters of the split (0: all)")
    ap.add_argument("--segment", type=int, default=None)
    ap.add_argument("--grid", action="store_true")
    args = ap.parse_args()
    ckpt = checkpoint.load(args.checkpoint)
    model, vocab = checkpoint.build_model(ckpt)
    cfg = ckpt.get("train_config", {})
    text = validation_text(args.corpus, float(cfg.get("val_frac", 0.1)), bool(cfg.get("keep_gutenberg", False)))
    if args.chars:
        text = text[: args.chars]
    ids = encode_text(vocab, text)
    stats = stats_ids(ckpt, vocab)
    rules = [Rule(m, lr, d) for m, lr, d in GRID] if args.grid else [Rule("rms"), Rule("sgd")]
    for rule in rules:
        if args.segment:
            rule = Rule(rule.method, rule.lr, rule.decay, args.segment)
        r = compare(model, ids, rule, stats, vocab.count_chars(ids[1:]), show_progress=False)
        emit(bench="dynamic", corpus=args.corpus.name, checkpoint=str(args.checkpoint), cpu=cpu_name(), chars=len(text),
             method=r.rule.method, lr=r.rule.lr, decay=r.rule.decay, segment=r.rule.segment,
             static_bpc=round(r.static.bpc, 4), dynamic_bpc=round(r.dynamic.bpc, 4),
             gain_bpc=round(r.static.bpc - r.dynamic.bpc, 4), static_s=round(r.static_seconds, 2),
             dynamic_s=round(r.dynamic_seconds, 2), time_ratio=round(r.dynamic_seconds / max(1e-9, r.static_seconds), 1))


if __name__ == "__main__":
    main()
