"""Sampling speed: a plain nn.LSTM loop vs charrnn's step function and onnxruntime, and the bounds.

For a 2x512 LSTM (vocabulary 65) it prints one JSON line each for: the plain loop (nn.LSTM called
once per character), charrnn at batch 1 and 64 in float32, (where the CPU computes it) bfloat16 and
(where torch has fbgemm) int8, what ``--precision auto`` picks here (timed afresh), the model
exported to ONNX stepped by onnxruntime at batch 1 and 64 (where onnxruntime is installed; its loop
samples with numpy and does not decode text), the memory-bandwidth bound of batch 1 (weight bytes
read per character over the matrix-vector bandwidth measured on float32 matrices of the same total
size, the faster of torch's and numpy's products; bfloat16 weights are half the bytes, int8 a
quarter, so twice and four times the bound at the same bandwidth) and the compute bound of batch 64
(the step's matrix products at batch 64 over the matrix-multiply FLOP/s measured on the same shapes,
again the faster library's), all in the same run, repeated in interleaved rounds with medians
reported.
Usage: python bench/sampler.py [--hidden 512] [--chars 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

from charrnn.data.vocab import CharVocab  # noqa: E402
from charrnn.model import gate_kernel  # noqa: E402
from charrnn.model.network import CharRNN, ModelConfig  # noqa: E402
from charrnn.runtime.kernels import has_int8_product  # noqa: E402
from charrnn.runtime.precision import cpu_computes  # noqa: E402
from charrnn.sampling import precision  # noqa: E402
from charrnn.sampling.generate import generate  # noqa: E402
from charrnn.sampling.options import SampleOptions  # noqa: E402


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


# Seconds each measurement first runs untimed: the precisions multiply through different libraries
# (numpy's OpenBLAS, torch's OpenMP threads for oneDNN and fbgemm, onnxruntime's pool), and each
# library's idle threads spin for up to ~0.1 s after its last call, holding a core from the next
# one (see charrnn.sampling.precision.time_precisions).
HAND_OVER = 0.15


def settle(work: Callable[[], object]) -> None:
    """Run ``work`` untimed for ``HAND_OVER`` seconds, so what is timed next has the cores."""
    end = time.perf_counter() + HAND_OVER
    while time.perf_counter() < end:
        work()


def ours(model: CharRNN, vocab, n: int, batch: int, precision: str = "float32", extension: bool = True) -> float:
    """charrnn's generate; ``extension=False`` keeps the batch-1 gate arithmetic in torch's
    calls (``CHARRNN_FUSED=0``, see charrnn.model.gate_kernel), to compare in the same run."""
    opts = SampleOptions(length=n, temp=0.8, seed=0, precision=precision)
    short = SampleOptions(length=max(1, n // 20), temp=0.8, seed=0, precision=precision)
    with mock.patch.dict(os.environ, {"CHARRNN_FUSED": "1" if extension else "0"}):
        settle(lambda: sum(1 for _ in generate(model, vocab, short, [0], batch)))
        start = time.perf_counter()
        chars = sum(len(piece) for _, piece in generate(model, vocab, opts, [0], batch))
        return chars / (time.perf_counter() - start)


def onnx_session(model: CharRNN, vocab, folder: str):
    """The model through ``charrnn export``'s graph in an onnxruntime session (None without onnxruntime)."""
    try:
        import onnxruntime

        from charrnn.export.onnx import build_onnx
    except ImportError:
        return None
    path = Path(folder) / "model.onnx"
    path.write_bytes(build_onnx(model, vocab).SerializeToString())
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def onnx_loop(session, cfg: ModelConfig, n: int, batch: int, temp: float = 0.8) -> float:
    """What a service using the exported file does: one run per character, sampled with numpy
    by the exponential race charrnn's sampler uses (no text decoding)."""
    rng = np.random.default_rng(0)
    names = [i.name for i in session.get_inputs()][1:]
    state = {k: np.zeros((cfg.layers, batch, cfg.hidden), np.float32) for k in names}
    tokens = np.zeros((batch, 1), np.int64)
    settle(lambda: session.run(None, {"ids": tokens, **state}))
    start = time.perf_counter()
    for _ in range(n):
        logits, *new = session.run(None, {"ids": tokens, **state})
        state = dict(zip(names, new))
        z = logits[:, -1] / temp
        p = np.exp(z - z.max(-1, keepdims=True))
        tokens = (p / rng.exponential(size=p.shape)).argmax(-1)[:, None]
    return n * batch / (time.perf_counter() - start)


def matvec_bandwidth(total_bytes: int, rows: int, library: str, repeat: int = 50) -> float:
    """Bytes/s of x @ W over float32 matrices adding up to ``total_bytes``, as the step reads
    them, by torch's or numpy's BLAS: the bound is the faster one's, since on some CPUs one
    reads the same bytes at a third of the other's speed (see ``stepper.row_product``)."""
    cols = 2048
    count = max(1, total_bytes // (rows * cols * 4))
    mats = [torch.randn(rows, cols) for _ in range(count)]
    x = torch.randn(1, rows)
    if library == "numpy":
        mats, x = [m.numpy() for m in mats], x.numpy()
    settle(lambda: [x @ m for m in mats])
    start = time.perf_counter()
    for _ in range(repeat):
        for m in mats:
            x @ m
    dt = time.perf_counter() - start
    return repeat * count * rows * cols * 4 / dt


def matmul_flops(batch: int, shapes: list[tuple[int, int]], library: str, repeat: int = 20) -> float:
    """FLOP/s of ``(batch, k) @ (k, n)`` over the step's own matrix shapes, by torch's or
    numpy's BLAS (the bound is the faster one's): the compute bound of a batched step, where
    the weights are re-used by every row."""
    xs = [torch.randn(batch, k) for k, _ in shapes]
    mats = [torch.randn(k, n) for k, n in shapes]
    if library == "numpy":
        xs, mats = [x.numpy() for x in xs], [m.numpy() for m in mats]
    settle(lambda: [x @ m for x, m in zip(xs, mats)])
    start = time.perf_counter()
    for _ in range(repeat):
        for x, m in zip(xs, mats):
            x @ m
    return repeat * sum(2 * batch * k * n for k, n in shapes) / (time.perf_counter() - start)


def step_shapes(cfg: ModelConfig) -> list[tuple[int, int]]:
    """The matrices one LSTM step reads: layer 0's recurrent one (its input product is a table
    lookup), [x, h] of every layer above, and the output layer."""
    H = cfg.hidden
    return [(H, 4 * H)] + [(2 * H, 4 * H)] * (cfg.layers - 1) + [(H, cfg.vocab_size)]


def auto_pick(model: CharRNN, med: dict[str, float], bound: float) -> dict:
    """What ``--precision auto`` picks for this model here, timed afresh (a cache of its own), and
    how that precision's batch-1 speed in this run compares with float32's and the bound."""
    with tempfile.TemporaryDirectory() as cache, mock.patch.dict(os.environ, {"XDG_CACHE_HOME": cache}):
        start = time.perf_counter()
        choice = precision.choose(model, "auto")
        seconds = time.perf_counter() - start
        timings = precision.measured.read(precision.measured.cache_path("step-precision"))
    one = med[f"{choice.name} 1"]
    return dict(
        who="--precision auto",
        picked=choice.name,
        decided_in_s=round(seconds, 2),
        its_timings={
            k.split("|")[-1]: {p: round(v) for p, v in t.items()} for k, t in timings.items() if k.startswith("speed")
        },
        bpc_change={k.split("|")[-1]: round(v, 5) for k, v in timings.items() if k.startswith("quality")},
        batch1_vs_charrnn_float32=round(one / med["float32 1"], 2),
        batch1_fraction_of_float32_bound=round(one / bound, 3),
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--chars", type=int, default=2000)
    ap.add_argument(
        "--rounds", type=int, default=5, help="interleaved repeats; medians are reported (shared machines vary)"
    )
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
    shapes = step_shapes(cfg)
    weight_bytes = 4 * sum(k * n for k, n in shapes)
    precisions = (
        ["float32"] + (["bfloat16"] if cpu_computes(torch.bfloat16) else []) + (["int8"] if has_int8_product() else [])
    )
    folder = tempfile.TemporaryDirectory()
    session = onnx_session(model, vocab, folder.name)
    runs: dict[str, list[float]] = {}
    add = lambda key, value: runs.setdefault(key, []).append(value)
    for _ in range(args.rounds):
        for library in ("torch", "numpy"):
            add(f"bw {library}", matvec_bandwidth(weight_bytes, args.hidden, library))
            add(f"flops {library}", matmul_flops(64, shapes, library))
        add("plain", plain_loop(model, max(200, args.chars // 10)))
        for p in precisions:
            add(f"{p} 1", ours(model, vocab, args.chars, 1, p))
            add(f"{p} torch calls 1", ours(model, vocab, args.chars, 1, p, extension=False))
            add(f"{p} 64", ours(model, vocab, args.chars // 4, 64, p))
        if session is not None:
            # Last in the round, then a pause: onnxruntime's pool threads spin for a while after
            # a run and would take the second core from whatever is timed next.
            add("onnxruntime 1", onnx_loop(session, cfg, args.chars, 1))
            add("onnxruntime 64", onnx_loop(session, cfg, args.chars // 4, 64))
            time.sleep(0.5)
    folder.cleanup()
    med = {k: statistics.median(v) for k, v in runs.items()}
    plain, b1 = med["plain"], med["float32 1"]
    bandwidth = max(med["bw torch"], med["bw numpy"])
    bound = bandwidth / weight_bytes
    flops = max(med["flops torch"], med["flops numpy"])
    compute_bound = flops / sum(2 * k * n for k, n in shapes)  # characters: 2kn FLOPs each per matrix
    # Each round's speed over the bound read in the same round: a shared host's speed drifts
    # between rounds, and a median over rounds can pair a slow round's speed with a fast bound.
    bounds = [max(t, n) / weight_bytes for t, n in zip(runs["bw torch"], runs["bw numpy"])]
    by_round = lambda speeds: [round(v / b, 3) for v, b in zip(speeds, bounds)]
    emit(bench="sampler", who="plain nn.LSTM loop, fresh process", batch=1, chars_per_s=round(fresh, 1))
    emit(
        bench="sampler",
        who="plain nn.LSTM loop, warm allocator",
        batch=1,
        chars_per_s=round(plain, 1),
        runs=[round(v) for v in runs["plain"]],
    )
    for who in [f"charrnn {p}" for p in precisions] + (["onnxruntime"] if session is not None else []):
        key = who.removeprefix("charrnn ")
        one, many = med[f"{key} 1"], med[f"{key} 64"]
        emit(
            bench="sampler",
            who=who,
            batch=1,
            chars_per_s=round(one, 1),
            vs_plain_warm=round(one / plain, 2),
            vs_charrnn_float32=round(one / b1, 2),
            fraction_of_float32_bound=round(one / bound, 3),
            fraction_by_round=by_round(runs[f"{key} 1"]),
            runs=[round(v) for v in runs[f"{key} 1"]],
        )
        emit(
            bench="sampler",
            who=who,
            batch=64,
            chars_per_s=round(many, 1),
            vs_batch1=round(many / one, 2),
            fraction_of_compute_bound=round(many / compute_bound, 3),
            runs=[round(v) for v in runs[f"{key} 64"]],
        )
        if f"{key} torch calls 1" in med:
            calls = med[f"{key} torch calls 1"]
            emit(
                bench="sampler",
                who=f"{who}, gates in torch's calls (CHARRNN_FUSED=0)",
                batch=1,
                chars_per_s=round(calls, 1),
                fused_vs_this=round(one / calls, 3),
                fraction_of_float32_bound=round(calls / bound, 3),
                fraction_by_round=by_round(runs[f"{key} torch calls 1"]),
                fused=gate_kernel.why_not(args.hidden) or "used",
                runs=[round(v) for v in runs[f"{key} torch calls 1"]],
            )
    emit(
        bench="sampler",
        who="bandwidth bound, batch 1",
        weight_mb_per_char=round(weight_bytes / 1e6, 2),
        matvec_gb_s=round(bandwidth / 1e9, 2),
        torch_matvec_gb_s=round(med["bw torch"] / 1e9, 2),
        numpy_matvec_gb_s=round(med["bw numpy"] / 1e9, 2),
        bound_chars_per_s=round(bound, 1),
        bfloat16_weights_bound_chars_per_s=round(2 * bound, 1),
        int8_weights_bound_chars_per_s=round(4 * bound, 1),
        charrnn_float32_fraction_of_bound=round(b1 / bound, 3),
        best_fraction_of_float32_bound=round(max(med[f"{p} 1"] for p in precisions) / bound, 3),
    )
    emit(bench="sampler", **auto_pick(model, med, bound))
    emit(
        bench="sampler",
        who="compute bound, batch 64 (float32)",
        matmul_gflop_s=round(flops / 1e9, 1),
        torch_matmul_gflop_s=round(med["flops torch"] / 1e9, 1),
        numpy_matmul_gflop_s=round(med["flops numpy"] / 1e9, 1),
        bound_chars_per_s=round(compute_bound, 1),
        charrnn_float32_fraction_of_bound=round(med["float32 64"] / compute_bound, 3),
        best_possible_vs_batch1=round(compute_bound / bound, 2),
    )


if __name__ == "__main__":
    main()
