"""Characters vs SentencePiece subwords at the same CPU budget, in val bits per *character*.

Every run is the real CLI with the default preset and only ``--vocab`` (and ``--vocab-size``)
changed, so a subword model and a character model are compared on the same text, the same
model and the same minutes; bits per character makes their scores directly comparable.
One JSON line per (corpus, vocabulary), then the subword/char ratios.
Usage: python bench/vocab.py [--minutes 10] [--corpora tinyshakespeare.txt quijote_es.txt]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import corpus, emit, train_cli  # noqa: E402

VOCABS = {"char": [], "bpe": ["--vocab", "bpe"], "unigram": ["--vocab", "unigram"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="training time per run")
    ap.add_argument("--corpora", nargs="+", default=["tinyshakespeare.txt", "quijote_es.txt"])
    ap.add_argument("--vocab-size", type=int, default=None, help="subword vocabulary size (default: charrnn's)")
    args = ap.parse_args()
    size = ["--vocab-size", str(args.vocab_size)] if args.vocab_size else []
    for name in args.corpora:
        path = corpus(name)
        scores = {}
        for vocab, flags in VOCABS.items():
            result = train_cli(path, args.minutes * 60, flags + (size if flags else []))
            scores[vocab] = result["best_val_bpc"]
            emit(bench="vocab", corpus=name, minutes=args.minutes, vocab=vocab, **result)
        for vocab in ("bpe", "unigram"):
            emit(
                bench="vocab", corpus=name, ratio=f"{vocab}_val_bpc/char_val_bpc", value=scores[vocab] / scores["char"]
            )


if __name__ == "__main__":
    main()
