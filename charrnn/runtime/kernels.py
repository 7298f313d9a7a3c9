"""The one module that touches PyTorch's internals: each private op behind one small function, with
one guard for a torch that lacks it, and what public behaviour it stands for.

charrnn calls a private op only where the public one is measurably slower (oneDNN's packed
bfloat16 product, fbgemm's packed int8 one), where torch has no public call (its CPU feature
checks; MKL's choice of threads and its buffer pool), or where a sample's text must be torch's to
the bit (the C gate kernels' expf and tanh are libtorch's own). A torch release may rename or drop
any of them:
``tests/runtime/test_kernels.py`` checks each against its public counterpart, so an upgrade that
breaks one fails there, by name, rather than somewhere in a sample's text.
"""

from __future__ import annotations

import ctypes
import functools
import os
import warnings
from pathlib import Path
from typing import Any

import torch

_MKLDNN_OPS = ("_reorder_linear_weight", "_linear_pointwise")
# torch's sigmoid calls SLEEF's expf (1.0 ULP), 8 floats wide in its AVX2 kernels and 16 in its
# AVX-512 ones, and its tanh MKL's vmsTanh.
EXPF_SYMBOLS = {"AVX2": "Sleef_expf8_u10", "AVX512": "Sleef_expf16_u10"}
TANH_SYMBOL = "vmsTanh"
# MKL, linked into libtorch_cpu, exports its service functions under these names.
MKL_FREE_BUFFERS = "mkl_serv_free_buffers"
MKL_BUFFERED = "mkl_serv_mem_stat"
MKL_SET_DYNAMIC = "mkl_serv_set_dynamic"
MKL_GET_DYNAMIC = "mkl_serv_get_dynamic"
_LIBTORCH_CPU = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"


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


# -- fbgemm's int8 product with per-row scales, the sampler's int8 ------------------------------
def has_int8_product() -> bool:
    """Whether this torch's quantized engine multiplies by int8 matrices on this CPU (fbgemm, or
    the x86 engine that wraps it and oneDNN): the guard ``sample --precision int8`` passes."""
    return any(e in torch.backends.quantized.supported_engines for e in ("x86", "fbgemm")) and hasattr(
        torch.ops.quantized, "linear_dynamic"
    )


def pack_int8(w: torch.Tensor) -> torch.ScriptObject:
    """A (in, out) float32 matrix as int8 with one scale per output column (its largest magnitude
    over 127, symmetric), packed once by ``torch.ops.quantized.linear_prepack``: a quarter of the
    bytes a one-row product streams, for ``int8_product``. Two zero rows follow ``w``'s: the
    products' two fixed columns (see ``int8_product``) add nothing.

    The packed object is what ``torch.ao.nn.quantized.dynamic.Linear`` holds; building it needs
    a quantized tensor, whose constructors torch marks deprecated (a warning, silenced here:
    ``tests/runtime/test_kernels.py`` fails by name the day they go)."""
    cols = torch.cat([w, w.new_zeros(2, w.shape[1])]).t().contiguous()
    scales = (cols.abs().amax(1) / 127).clamp_min(torch.finfo(torch.float32).tiny).double()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        q = torch.quantize_per_channel(cols, scales, torch.zeros(len(scales), dtype=torch.long), 0, torch.qint8)
        # torch.ops's operators are looked up at run time: typed Any.
        return torch.ops.quantized.linear_prepack(q, None)  # type: ignore[no-any-return]


_RANGE = torch.tensor([[-1.0, 1.0]])


def int8_product(x: torch.Tensor, packed: torch.ScriptObject) -> torch.Tensor:
    """``x @ w`` in float32 for float32 rows ``x`` in [-1, 1] (the sampler's states) and a matrix
    packed by ``pack_int8``, by ``torch.ops.quantized.linear_dynamic``.

    It quantizes its input per call to 7-bit unsigned integers (which cannot overflow fbgemm's
    16-bit pair sums on CPUs without VNNI) over the input's whole range, so one row's product
    would move with the other rows of its batch. Two columns holding -1 and 1 fix that range
    whatever the rows hold: a row's product, and so a seed's text, is the same alone, in a
    ``--num-samples`` batch, or beside other requests in a server."""
    fixed = torch.cat([x, _RANGE.expand(x.shape[0], 2)], 1)
    # torch.ops's operators are looked up at run time: typed Any.
    return torch.ops.quantized.linear_dynamic(fixed, packed, True)  # type: ignore[no-any-return]


# -- libtorch's own expf and tanh, for charrnn's C gate kernels ---------------------------------
def gate_function_addresses(capability: str) -> tuple[int, int]:
    """The addresses of SLEEF's expf for torch's ``capability`` kernels (``EXPF_SYMBOLS``) and of
    ``vmsTanh`` in libtorch_cpu: the functions torch's sigmoid and tanh compute with there, bound
    through ctypes so that ``charrnn.model.gate_kernel``'s C kernels compute what torch's calls
    compute, bit for bit (1.35-1.44x the characters per second of a batch-1 2x512 LSTM on a
    2-core Zen 3 EPYC, see ``charrnn.model.single_row``).

    Raises ``LookupError`` saying why where the library or a symbol is not found."""
    names = (EXPF_SYMBOLS[capability], TANH_SYMBOL)
    try:
        lib = ctypes.CDLL(str(_LIBTORCH_CPU))
        expf, tanh = (ctypes.cast(getattr(lib, name), ctypes.c_void_p).value for name in names)
    except (OSError, AttributeError) as e:
        raise LookupError(f"torch's expf/tanh are not found in {_LIBTORCH_CPU.name} ({e})") from None
    if not (expf and tanh):
        raise LookupError(f"torch's expf/tanh are at a null address in {_LIBTORCH_CPU.name}")
    return expf, tanh


# -- MKL's service functions -------------------------------------------------------------------
@functools.cache
def _mkl(name: str) -> Any:
    """An MKL service function of libtorch_cpu, typed (bound once: a server calls them every tick
    or every few seconds); None where this torch has no MKL."""
    try:
        function = getattr(ctypes.CDLL(str(_LIBTORCH_CPU)), name)
    except (OSError, AttributeError):
        return None
    if name == MKL_BUFFERED:
        function.restype, function.argtypes = ctypes.c_int64, [ctypes.POINTER(ctypes.c_int)]
    elif name == MKL_SET_DYNAMIC:
        function.restype, function.argtypes = None, [ctypes.c_int]
    elif name == MKL_GET_DYNAMIC:
        function.restype, function.argtypes = ctypes.c_int, []
    else:
        function.restype, function.argtypes = None, []
    return function


# -- MKL's threads per call --------------------------------------------------------------------
def let_mkl_choose_threads() -> bool:
    """Let MKL choose how many threads each of its calls takes (``mkl_set_dynamic(1)``), as it
    does in a fresh process; False where this torch has no MKL or ``MKL_DYNAMIC=FALSE`` is set.

    ``torch.set_num_threads`` turns that choice off (so that OpenMP teams are not rebuilt between
    MKL's calls and torch's), for the whole process, and so does every thread's first torch call
    after it (torch sets each thread up lazily by calling it again). MKL then runs even a
    512-element tanh (``vmsTanh``, torch's tanh and the gate kernels') on a team of every thread,
    and at batch 1 that team waits for a core that numpy's OpenBLAS threads, spinning between a
    step's products, are holding: on a 2-core Zen 5 EPYC a 2x512 LSTM sampled 48 characters a
    second in float32 after ``torch.set_num_threads(2)``, against 6,500 before it and after this.
    So this sets the calling thread up first (``torch.get_num_threads``), then gives MKL its
    choice back; another thread's first torch call can still take it away again."""
    set_dynamic = _mkl(MKL_SET_DYNAMIC)
    if set_dynamic is None or os.environ.get("MKL_DYNAMIC", "").strip().upper() == "FALSE":
        return False
    torch.get_num_threads()
    set_dynamic(1)
    return True


def mkl_chooses_threads() -> bool | None:
    """Whether MKL chooses its threads per call (``mkl_get_dynamic``); None without MKL."""
    get_dynamic = _mkl(MKL_GET_DYNAMIC)
    return None if get_dynamic is None else bool(get_dynamic())


# -- MKL's buffer pool, given back by an idle server -------------------------------------------
def free_blas_buffers() -> bool:
    """Give back the buffers MKL keeps for its products (``mkl_free_buffers``); False where this
    torch has no MKL.

    MKL's memory manager pools the packing buffers of each thread's products for reuse and never
    returns them: after one batch of 400 rows a server holds ~7 MB it may not need again. It frees
    every thread's unused buffers and, as MKL documents it, none a product is using, so another
    model's worker may be mid-product meanwhile; the next big product allocates afresh
    (``MKL_DISABLE_FAST_MM``, which turns the pool off, halved a server's throughput on a 2-core
    Zen 3 EPYC)."""
    free = _mkl(MKL_FREE_BUFFERS)
    if free is None:
        return False
    free()
    return True


def blas_buffered_bytes() -> int | None:
    """The bytes MKL's pool holds now (``mkl_mem_stat``): how the tests see ``free_blas_buffers``
    work; None where this torch has no MKL."""
    stat = _mkl(MKL_BUFFERED)
    if stat is None:
        return None
    buffers = ctypes.c_int(0)
    return int(stat(ctypes.byref(buffers)))
