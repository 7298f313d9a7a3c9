"""Why int8 does not pay at one row here: a step's products alone, float32 against each int8 kernel.

For the matrices a 2x512 LSTM's step multiplies by (layer 0's recurrent 512 -> 2048, layer 1's
input and recurrent 1024 -> 2048, the head 512 -> 65) and a product too small to cost anything
but its call (512 -> 8), at --rows rows: microseconds per product for float32 by numpy
(``stepper.row_product``, the sampler's float32 product at one row) and by torch (``F.linear``),
fbgemm's int8 (``kernels.int8_product``, what ``--precision int8`` steps with) and, where torch
has it, ``torch._weight_int8pack_mm`` (int8 weights, float rows: the kernel gpt-fast and torchao
use for int8 weight-only models). One JSON line per product and kernel, with its time as a
ratio to the faster float32's in the same run (the median of --rounds interleaved rounds): under
1 is faster than float32. int8 reads a quarter of the bytes, so at one row, where a product is
memory-bound, it would be ~0.25-0.5 if the call cost nothing; the 512 -> 8 line is that cost.
Usage: python bench/int8_products.py [--rows 1] [--rounds 5] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_name, emit  # noqa: E402

from charrnn.model.stepper import row_product  # noqa: E402
from charrnn.runtime import kernels  # noqa: E402

SHAPES = {"call only": (512, 8), "layer 0 recurrent": (512, 2048), "layer 1": (1024, 2048), "head": (512, 65)}


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    for _ in range(calls // 10):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def candidates(w: torch.Tensor, x: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The products of ``x`` (rows, in) by ``w`` (in, out) each kernel computes."""
    wt = w.t().contiguous()
    x_, w_, y_ = x.numpy(), w.numpy(), np.empty((x.shape[0], w.shape[1]), np.float32)
    out: dict[str, Callable[[], object]] = {
        "float32 numpy": lambda: row_product(x_, w_, y_),
        "float32 torch": lambda: F.linear(x, wt),
    }
    if kernels.has_int8_product():
        packed = kernels.pack_int8(w)
        out["int8 fbgemm"] = lambda: kernels.int8_product(x, packed)
    if hasattr(torch, "_weight_int8pack_mm"):
        scales = (wt.abs().amax(1) / 127).clamp_min(1e-12)
        q = torch.round(wt / scales[:, None]).to(torch.int8).contiguous()
        out["int8 weight-only"] = lambda: torch._weight_int8pack_mm(x, q, scales)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=2000, help="products per kernel per round")
    ap.add_argument("--threads", type=int, help="torch's threads (default: torch's own)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name, (n_in, n_out) in SHAPES.items():
        w = torch.randn(n_in, n_out) / n_in**0.5
        x = torch.rand(args.rows, n_in) * 2 - 1  # the sampler's states lie in [-1, 1]
        kinds = candidates(w, x)
        times: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(args.rounds):
            for kind, fn in kinds.items():
                times[kind].append(per_call_us(fn, args.calls))
        base = min(statistics.median(times[kind]) for kind in ("float32 numpy", "float32 torch"))
        for kind, ts in times.items():
            us = statistics.median(ts)
            emit(
                bench="int8_products",
                product=name,
                shape=f"{n_in}x{n_out}",
                rows=args.rows,
                kernel=kind,
                us=round(us, 1),
                ratio_to_float32=round(us / base, 3),
                threads=torch.get_num_threads(),
                cpu=cpu_name(),
            )


if __name__ == "__main__":
    main()
