"""charrnn's ``generate`` alone, chars/s at batch 1 and 64 (LSTM 2x512, random weights, as
bench/sampler.py's model): a quick check that a change to the sampling code kept its speed.

Run each tree in its own process, alternating, the machine otherwise idle:
    PYTHONPATH=<tree> python bench/generate_speed.py [--batch 1] [--runs 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from common import emit

from charrnn.data.vocab import CharVocab
from charrnn.model.network import CharRNN, ModelConfig
from charrnn.sampling.generate import generate
from charrnn.sampling.options import SampleOptions

CHARS = {1: 3000, 64: 500}  # steps per run: a few seconds each


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 64], choices=sorted(CHARS))
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    vocab = CharVocab("".join(chr(c) for c in range(32, 96)) + "\u00e9")
    model = CharRNN(ModelConfig(vocab_size=vocab.size, layers=2, hidden=512, embed=128)).eval()
    for batch in args.batch:
        runs = []
        for _ in range(args.runs):
            opts = SampleOptions(length=CHARS[batch], temp=0.8, seed=0)
            start = time.perf_counter()
            chars = sum(len(piece) for _, piece in generate(model, vocab, opts, [0], batch))
            runs.append(round(chars / (time.perf_counter() - start)))
        emit(bench="generate_speed", batch=batch, chars_per_s=sorted(runs)[len(runs) // 2], runs=runs)


if __name__ == "__main__":
    main()
