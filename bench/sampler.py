"""Sampling speed: a plain nn.LSTM loop vs charrnn's step function, and the bandwidth bound.

For a 2x512 LSTM (vocabulary 65) it prints one JSON line each for: the plain loop (nn.LSTM called
once per character), charrnn at batch 1, charrnn at batch 64, and the memory-bandwidth bound
(weight bytes read per character over the matrix-vector bandwidth measured on matrices of the
same total size, in the same run). Usage: python bench/sampler.py [--hidden 512] [--chars 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

from charrnn.model import CharRNN, ModelConfig  # noqa: E402
from charrnn.sample import SampleOptions, Stepper, generate  # noqa: E402
from charrnn.vocab import CharVocab  # noqa: E402


def plain_loop(model: CharRNN, n: int) -> float:
    """What most char-rnn ports do: the full nn.LSTM module on one character at a time."""
    x = torch.zeros(1, 1, dtype=torch.long)
    state = None
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(n):
            out, state = model.rnn(model.embed(x), state)
            probs = torch.softmax(model.head(out[:, -1]) / 0.8, -1)
            x = torch.multinomial(probs, 1)
    return n / (time.perf_counter() - start)


def ours(model: CharRNN, vocab, n: int, batch: int) -> float:
    opts = SampleOptions(length=n, temp=0.8, seed=0)
    start = time.perf_counter()
    chars = sum(len(piece) for _, piece in generate(model, vocab, opts, [0], batch))
    return chars / (time.perf_counter() - start)


def matvec_bandwidth(total_bytes: int, rows: int, repeat: int = 50) -> float:
    """Bytes/s of x @ W over float32 matrices adding up to ``total_bytes``, as the step reads them."""
    cols = 2048
    count = max(1, total_bytes // (rows * cols * 4))
    mats = [torch.randn(rows, cols) for _ in range(count)]
    x = torch.randn(1, rows)
    for m in mats:
        x @ m
    start = time.perf_counter()
    for _ in range(repeat):
        for m in mats:
            x @ m
    dt = time.perf_counter() - start
    return repeat * count * rows * cols * 4 / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--chars", type=int, default=2000)
    args = ap.parse_args()
    torch.manual_seed(0)
    vocab = CharVocab("".join(chr(c) for c in range(32, 32 + 64)) + "\u00e9")
    cfg = ModelConfig(vocab_size=vocab.size, layers=args.layers, hidden=args.hidden, embed=args.hidden, dropout=0.0)
    model = CharRNN(cfg).eval()
    stepper = Stepper(model)
    weight_bytes = 4 * (stepper.w_hh[0].numel() + sum(w.numel() for w in stepper.w_cat[1:]) + stepper.w_out.numel())
    plain = plain_loop(model, max(200, args.chars // 10))
    emit(bench="sampler", who="plain nn.LSTM loop", batch=1, chars_per_s=round(plain, 1))
    b1 = ours(model, vocab, args.chars, 1)
    emit(bench="sampler", who="charrnn", batch=1, chars_per_s=round(b1, 1), vs_plain=round(b1 / plain, 2))
    b64 = ours(model, vocab, args.chars // 4, 64)
    emit(bench="sampler", who="charrnn", batch=64, chars_per_s=round(b64, 1), vs_batch1=round(b64 / b1, 2))
    bw_same = matvec_bandwidth(weight_bytes, args.hidden)
    bw_dram = matvec_bandwidth(256 << 20, args.hidden, repeat=5)
    bound = bw_same / weight_bytes
    emit(bench="sampler", who="bandwidth bound", weight_mb_per_char=round(weight_bytes / 1e6, 2),
         matvec_gb_s=round(bw_same / 1e9, 2), dram_matvec_gb_s=round(bw_dram / 1e9, 2),
         bound_chars_per_s=round(bound, 1), ours_fraction_of_bound=round(b1 / bound, 3))


if __name__ == "__main__":
    main()
