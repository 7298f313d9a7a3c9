"""The one module that touches PyTorch's internals: each private op behind one small function, with
one guard for a torch that lacks it, and what public behaviour it stands for.

charrnn calls a private op only where the public one is measurably slower (oneDNN's packed
bfloat16 product), where torch has no public call (its CPU feature checks), or where a sample's
text must be torch's to the bit (the C gate kernels' expf and tanh are libtorch's own). A torch
release may rename or drop any of them: ``tests/runtime/test_kernels.py`` checks each against its
public counterpart, so an upgrade that breaks one fails there, by name, rather than somewhere in
a sample's text.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import torch

_MKLDNN_OPS = ("_reorder_linear_weight", "_linear_pointwise")
# torch's AVX2 sigmoid calls SLEEF's 8-wide expf (1.0 ULP) and its tanh MKL's vmsTanh.
GATE_SYMBOLS = ("Sleef_expf8_u10", "vmsTanh")


# -- CPU features ------------------------------------------------------------------------------
def cpu_supports(feature: str) -> bool:
    """``torch.cpu._is_<feature>_supported()``: whether this CPU has ``feature`` (``amx_tile``,
    ``avx512_bf16``, ``amx_fp16``) as oneDNN, which runs the bfloat16 and float16 LSTM, sees it.

    torch has no public CPU feature check; the alternative, /proc/cpuinfo, is Linux's alone and
    its own reading of the CPU, not the one torch goes by. A torch without the check (older than
    the feature) reports False, as a CPU without the feature would."""
    check = getattr(torch.cpu, f"_is_{feature}_supported", None)
    return bool(check()) if check is not None else False


# -- oneDNN's packed bfloat16 product, the sampler's at batch 1 ---------------------------------
def has_packed_bfloat16() -> bool:
    """Whether this torch has oneDNN and the two private ops ``pack_bfloat16`` and
    ``packed_product`` call: the guard ``sample --precision bfloat16`` passes before either runs."""
    return torch.backends.mkldnn.is_available() and all(hasattr(torch.ops.mkldnn, op) for op in _MKLDNN_OPS)


def pack_bfloat16(w: torch.Tensor) -> torch.Tensor:
    """A (in, out) float32 matrix as bfloat16 in oneDNN's blocked layout for one-row products
    (``torch.ops.mkldnn._reorder_linear_weight``), laid out once: multiplied by
    ``packed_product``, it gives ``x @ w`` in bfloat16.

    A bfloat16 ``torch.mm`` on a plain matrix re-lays it out on every call: on a 2-core Xeon with
    AMX the sampler's three products a step took 404 us that way against 265 us in float32, and
    200 us packed (one process, same minute)."""
    # torch.ops's operators are looked up at run time: typed Any.
    return torch.ops.mkldnn._reorder_linear_weight(w.t().contiguous().to(torch.bfloat16), 1)  # type: ignore[no-any-return]


def packed_product(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """``x @ w`` for a bfloat16 row block ``x`` and a matrix packed by ``pack_bfloat16``: what
    ``F.linear(x, w.t())`` gives in bfloat16 (float32 accumulation, one bfloat16 rounding), by
    ``torch.ops.mkldnn._linear_pointwise``, the one op that takes the packed layout (see
    ``pack_bfloat16`` for the speed)."""
    # torch.ops's operators are looked up at run time: typed Any.
    return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")  # type: ignore[no-any-return]


# -- libtorch's own expf and tanh, for charrnn's C gate kernels ---------------------------------
def gate_function_addresses() -> tuple[int, int]:
    """The addresses of ``Sleef_expf8_u10`` and ``vmsTanh`` in libtorch_cpu: the functions torch's
    AVX2 sigmoid and tanh compute with, bound through ctypes so that ``charrnn.model.gate_kernel``'s
    C kernels compute what torch's calls compute, bit for bit (1.35-1.44x the characters per second
    of a batch-1 2x512 LSTM on a 2-core Zen 3 EPYC, see ``charrnn.model.single_row``).

    Raises ``LookupError`` saying why where the library or a symbol is not found."""
    library = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    try:
        lib = ctypes.CDLL(str(library))
        expf8, tanh = (ctypes.cast(getattr(lib, name), ctypes.c_void_p).value for name in GATE_SYMBOLS)
    except (OSError, AttributeError) as e:
        raise LookupError(f"torch's expf/tanh are not found in {library.name} ({e})") from None
    if not (expf8 and tanh):
        raise LookupError(f"torch's expf/tanh are at a null address in {library.name}")
    return expf8, tanh
