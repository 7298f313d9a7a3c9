"""Structure score: how much of a screenplay's shape a model's samples keep, beside its corpus.

For the training corpus (the baseline) and then for each run directory, one JSON line with
charrnn.screenplay.fountain.structure's figures: the share of character cues followed by dialogue, of
parentheticals closed on their line and of scene headings that parse as headings, and the mean
scene length in characters. A run's line also gives its best val bpc and each figure as a ratio
to the corpus's. The samples are --chars characters (default 20,000) drawn at --temp with
--seed, primed with "INT. " as the docs' example is; they are scored as the model wrote them, not
cleaned. Usage: python bench/screenplay.py RUN_DIR [RUN_DIR...] --corpus PATH [PATH...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

from charrnn.data import corpus  # noqa: E402
from charrnn.data.vocab import encode_prime
from charrnn.model import checkpoint
from charrnn.sampling.generate import generate  # noqa: E402
from charrnn.sampling.options import SampleOptions
from charrnn.screenplay.fountain import structure  # noqa: E402

SHARES = ("cues_with_dialogue", "parentheticals_closed", "headings_parsed", "mean_scene_chars")


def sample_text(run: Path, chars: int, temp: float, seed: int, prime: str) -> tuple[str, dict]:
    ckpt = checkpoint.load(checkpoint.resolve(run))
    model, vocab = checkpoint.build_model(ckpt)
    ids = encode_prime(vocab, prime, "skip")
    opts = SampleOptions(length=chars, temp=temp, seed=seed)
    text = vocab.decode(ids) + "".join(piece for _, piece in generate(model, vocab, opts, ids, 1))
    cfg = model.cfg
    about = {
        "model": f"{cfg.model} {cfg.layers}x{cfg.hidden}",
        "steps": ckpt.get("step"),
        "best_val_bpc": ckpt.get("best_val_bpc"),
        "trained_s": round(ckpt.get("elapsed", 0.0), 1),
    }
    return text, about


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories or checkpoints")
    ap.add_argument("--corpus", nargs="+", required=True, help="the training corpus (files or folders)")
    ap.add_argument("--chars", type=int, default=20_000)
    ap.add_argument("--temp", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prime", default="INT. ")
    args = ap.parse_args()

    sources = corpus.open_sources(args.corpus)
    try:
        baseline = structure(corpus.read_text(sources)).as_dict()
    finally:
        corpus.release(sources)
    emit(bench="screenplay", what="corpus", corpus=args.corpus, **baseline)
    for run in args.runs:
        text, about = sample_text(run, args.chars, args.temp, args.seed, args.prime)
        score = structure(text).as_dict()
        ratios = {k: round(score[k] / baseline[k], 3) if score[k] is not None and baseline[k] else None for k in SHARES}
        emit(
            bench="screenplay",
            what="model",
            run=str(run),
            temp=args.temp,
            seed=args.seed,
            **about,
            **score,
            ratio_to_corpus=ratios,
        )


if __name__ == "__main__":
    main()
