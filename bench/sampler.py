"""Sampling speed: a plain nn.LSTM loop vs charrnn's step function, and the bandwidth bound.

For a 2x512 LSTM (vocabulary 65) it prints one JSON line each for: the plain loop (nn.LSTM called
once per character), charrnn at batch 1, charrnn at batch 64, the memory-bandwidth bound of
batch 1 (weight bytes read per character over the matrix-vector bandwidth measured on matrices
of the same total size) and the compute bound of batch 64 (the step's matrix products at batch
64 over the matrix-multiply FLOP/s measured on the same shapes), all in the same run, repeated
in interleaved rounds with medians reported. Usage: python bench/sampler.py [--hidden 512] [--chars 2000]
"""

from __future__ import annotations

import argparse
import statistics
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


def matmul_flops(batch: int, shapes: list[tuple[int, int]], repeat: int = 20) -> float:
    """FLOP/s of ``(batch, k) @ (k, n)`` over the step's own matrix shapes: the compute bound
    of a batched step, where the weights are re-used by every row."""
    xs = [torch.randn(batch, k) for k, _ in shapes]
    mats = [torch.randn(k, n) for k, n in shapes]
    for x, m in zip(xs, mats):
        x @ m
    start = time.perf_counter()
    for _ in range(repeat):
        for x, m in zip(xs, mats):
            x @ m
    return repeat * sum(2 * batch * k * n for k, n in shapes) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--chars", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repeats; medians are reported (shared machines vary)")
    args = ap.parse_args()
    torch.manual_seed(0)
    vocab = CharVocab("".join(chr(c) for c in range(32, 32 + 64)) + "\u00e9")
    cfg = ModelConfig(vocab_size=vocab.size, layers=args.layers, hidden=args.hidden, embed=args.hidden, dropout=0.0)
    model = CharRNN(cfg).eval()
    # The plain loop's speed depends on the allocator: nn.LSTM re-packs its weights into fresh
    # buffers on every call, and until glibc has seen blocks that large freed (its dynamic mmap
    # threshold), each buffer is a new mmap with page faults. Measured first, in a fresh
    # process (as a bare sampling script runs), and again in the rounds after other work
    # (as it runs once a checkpoint has been loaded): both are reported.
    fresh = plain_loop(model, max(200, args.chars // 10))
    stepper = Stepper(model)
    mats = [stepper.w_hh[0], *stepper.w_cat[1:], stepper.w_out]
    weight_bytes = 4 * sum(m.numel() for m in mats)
    shapes = [tuple(m.shape) for m in mats]
    rounds: dict[str, list[float]] = {k: [] for k in ("plain", "b1", "b64", "bw", "flops")}
    for _ in range(args.rounds):
        rounds["plain"].append(plain_loop(model, max(200, args.chars // 10)))
        rounds["b1"].append(ours(model, vocab, args.chars, 1))
        rounds["bw"].append(matvec_bandwidth(weight_bytes, args.hidden))
        rounds["b64"].append(ours(model, vocab, args.chars // 4, 64))
        rounds["flops"].append(matmul_flops(64, shapes))
    med = {k: statistics.median(v) for k, v in rounds.items()}
    plain, b1, b64 = med["plain"], med["b1"], med["b64"]
    bound = med["bw"] / weight_bytes
    compute_bound = med["flops"] / sum(2 * k * n for k, n in shapes)  # characters: 2kn FLOPs each per matrix
    emit(bench="sampler", who="plain nn.LSTM loop, fresh process", batch=1, chars_per_s=round(fresh, 1))
    emit(bench="sampler", who="plain nn.LSTM loop, warm allocator", batch=1, chars_per_s=round(plain, 1),
         runs=[round(v) for v in rounds["plain"]])
    emit(bench="sampler", who="charrnn", batch=1, chars_per_s=round(b1, 1), vs_plain_fresh=round(b1 / fresh, 2),
         vs_plain_warm=round(b1 / plain, 2), runs=[round(v) for v in rounds["b1"]])
    emit(bench="sampler", who="charrnn", batch=64, chars_per_s=round(b64, 1), vs_batch1=round(b64 / b1, 2),
         runs=[round(v) for v in rounds["b64"]])
    emit(bench="sampler", who="bandwidth bound, batch 1", weight_mb_per_char=round(weight_bytes / 1e6, 2),
         matvec_gb_s=round(med["bw"] / 1e9, 2), bound_chars_per_s=round(bound, 1), ours_fraction_of_bound=round(b1 / bound, 3))
    emit(bench="sampler", who="compute bound, batch 64", matmul_gflop_s=round(med["flops"] / 1e9, 1),
         bound_chars_per_s=round(compute_bound, 1), ours_fraction_of_bound=round(b64 / compute_bound, 3),
         best_possible_vs_batch1=round(compute_bound / bound, 2))


if __name__ == "__main__":
    main()
