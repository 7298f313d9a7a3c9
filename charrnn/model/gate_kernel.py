"""The batch-1 LSTM step's gate arithmetic in one call per layer, where it is bit for bit torch's.

At batch 1 a character is three matrix-vector products, near the memory bus's speed, and a dozen
small torch calls around them: on a 2-core Zen 3 EPYC each costs 2.5-4.5 us of argument parsing
and dispatch for a microsecond of arithmetic, some 45 us a character. ``charrnn.model._lstm_row`` (a
small C extension, built when charrnn is installed where a C compiler is) does a layer's bias,
sigmoid, tanh and cell update in one call, computing the transcendental functions with torch's
own code: SLEEF's vectorised expf (torch's sigmoid) and MKL's vmsTanh (torch's tanh), taken from
libtorch_cpu. So the text of a seed stays what torch's calls give, and this module makes sure of
it: before a hidden size is used, the kernel runs beside torch on random and extreme gates and
must agree with it in every bit, else the sampler keeps torch's calls. Where the extension, the
symbols or torch's AVX2 or AVX-512 kernels are missing, likewise. ``CHARRNN_FUSED=0`` turns it
off (to compare).
"""

from __future__ import annotations

import functools
import os
from types import ModuleType
from typing import Protocol

import numpy as np
import torch

from charrnn.runtime.kernels import gate_function_addresses


class Kernels(Protocol):
    """The extension's functions the sampler calls (see _lstm_row.pyi and _lstm_row.c)."""

    def lstm_cell(self, gates: int, bias: int, c: int, h: int, up: int, hidden: int, /) -> None: ...
    def add(self, a: int, b: int, n: int, /) -> None: ...
    def temper(self, temp: float, logits: int, scaled: int, n: int, /) -> None: ...
    def race(self, probs: int, draws: int, n: int, /) -> int: ...


_lstm_row: ModuleType | None  # the extension, typed by _lstm_row.pyi
try:
    from charrnn.model import _lstm_row
except ImportError:  # installed without a C compiler: the sampler keeps torch's calls
    _lstm_row = None

# torch's vectorised loops take two vectors per iteration (16 floats in its AVX2 kernels, 32 in
# its AVX-512 ones) and the rest element by element; the same capabilities as
# kernels.EXPF_SYMBOLS, whose expf each binds.
_VECTOR_BLOCK = {"AVX2": 16, "AVX512": 32}
# Up to this hidden size torch computes a layer's sigmoid and tanh in one piece; above it, with
# several threads, it splits them into chunks with remainders of their own.
_MAX_HIDDEN = 2048


def kernels(hidden: int) -> Kernels | None:
    """``_lstm_row`` where its functions are torch's arithmetic for this hidden size, else None."""
    return None if why_not(hidden) else _lstm_row


def why_not(hidden: int) -> str | None:
    """Why the sampler keeps torch's calls for this hidden size (None: it need not)."""
    if os.environ.get("CHARRNN_FUSED", "1") == "0":
        return "CHARRNN_FUSED=0"
    if hidden > _MAX_HIDDEN:
        return f"hidden size {hidden} is over {_MAX_HIDDEN}, where torch splits the gate functions"
    return _unbound() or (None if _agrees(hidden) else f"its results differ from torch's at hidden size {hidden}")


@functools.cache
def _unbound() -> str | None:
    """Why the kernels cannot be bound to torch's functions here (None: they are)."""
    capability = torch.backends.cpu.get_cpu_capability()
    if _lstm_row is None:
        return "charrnn was installed without its C extension (no C compiler?)"
    if capability not in _VECTOR_BLOCK:
        return f"torch runs its {capability} kernels here, not AVX2 or AVX-512"
    try:
        expf, tanh = gate_function_addresses(capability)
    except LookupError as e:
        return str(e)
    if not _lstm_row.bind(expf, tanh, _VECTOR_BLOCK[capability]):
        needs = "AVX-512F, AVX2 and FMA" if capability == "AVX512" else "AVX2 and FMA"
        return f"no {needs} here (the CPU, or an extension built for another architecture)"
    return None


def torch_gates(
    ifo: torch.Tensor,
    g: torch.Tensor,
    i: torch.Tensor,
    f: torch.Tensor,
    o: torch.Tensor,
    c: torch.Tensor,
    h: torch.Tensor,
    up: torch.Tensor | None,
) -> None:
    """One LSTM layer's gates (views of its i, f, o, g buffer, bias added) and cell update in
    place, by torch's calls: what ``lstm_cell`` must equal, and where it cannot be used."""
    ifo.sigmoid_()
    g.tanh_()
    c.mul_(f)
    c.addcmul_(i, g)
    torch.tanh(c, out=h)
    h.mul_(o)
    if up is not None:
        up.copy_(h)


# torch_gates's arguments: ifo, g, i, f, o, c, h and up.
GateViews = tuple[
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor,
    torch.Tensor | None,
]


def gate_views(g: torch.Tensor, c: torch.Tensor, h: torch.Tensor, up: torch.Tensor | None) -> GateViews:
    """``torch_gates``'s arguments for a layer's gates buffer ``g`` (1, 4H: i, f, o, g), its cell
    ``c``, its output ``h`` and the upper layer's copy of h ``up`` (or None)."""
    H = c.shape[-1]
    return g[:, : 3 * H], g[:, 3 * H :], g[:, :H], g[:, H : 2 * H], g[:, 2 * H : 3 * H], c, h, up


@functools.cache
def _agrees(hidden: int) -> bool:
    """Gates from a narrow to a saturating spread, with infinities, signed zeros, a subnormal and
    exp's overflow edge among them, through the kernel and through torch: every gate, cell and
    output bit equal (any NaN for a NaN), and the sampling's arithmetic."""
    ext = _lstm_row
    if ext is None:  # why_not asks only once _unbound() found it; nothing agrees without it
        return False
    H = hidden
    gen = torch.Generator().manual_seed(H)
    special = torch.tensor([float("inf"), float("-inf"), 0.0, -0.0, 1e-40, 88.8, -88.8, 1e-7])
    for scale in (0.01, 1.0, 4.0, 30.0, 200.0):
        gates = torch.randn(1, 4 * H, generator=gen) * scale
        gates[0, torch.randperm(4 * H, generator=gen)[: len(special)]] = special[: 4 * H]
        bias = torch.randn(1, 4 * H, generator=gen)
        cell = torch.randn(1, H, generator=gen) * scale
        ours = [gates.clone(), cell.clone(), torch.empty(1, H), torch.empty(1, H)]
        g_, c_, h_, up_ = (t.data_ptr() for t in ours)
        ext.lstm_cell(g_, bias.data_ptr(), c_, h_, up_, H)
        gates.add_(bias)
        h = torch.empty(1, H)
        torch_gates(*gate_views(gates, cell, h, None))
        if not all(_same(a, b) for a, b in zip(ours, (gates, cell, h, h))):
            return False
    return _sampling_agrees(ext, gen)


def _sampling_agrees(ext: ModuleType, gen: torch.Generator) -> bool:
    """``add``, ``temper`` and ``race`` against numpy's addition, division and argmax
    (``SingleRow``'s and ``temperature_pick``'s), with an overflowing quotient, a zero draw, a
    NaN and an infinity among them."""
    logits, bias = torch.randn(2, 64, 70, generator=gen) * 10
    probs = torch.rand(64, 70, generator=gen)
    draws = torch.empty(64, 70).exponential_(generator=gen)
    logits[0, 3], draws[1, 5], probs[2, 7], probs[3, 9], draws[4] = 3e38, 0.0, float("nan"), float("inf"), 0.0
    scaled = torch.empty(70)
    for z, b, p, d in zip(logits, bias, probs, draws):
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            want_sum = np.add(z.numpy(), b.numpy())
            want_scaled = np.divide(z.numpy(), np.float32(0.7))
            want = int(np.divide(p.numpy(), d.numpy()).argmax())
        ext.temper(0.7, z.data_ptr(), scaled.data_ptr(), z.numel())
        ext.add(z.data_ptr(), b.data_ptr(), z.numel())
        quotients = p.clone()
        winner = ext.race(quotients.data_ptr(), d.data_ptr(), p.numel())
        same = _same(scaled, torch.from_numpy(want_scaled)) and _same(z, torch.from_numpy(want_sum))
        if not same or winner != want:
            return False
    return True


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(((a.view(torch.int32) == b.view(torch.int32)) | (a.isnan() & b.isnan())).all())
