"""charrnn.runtime.kernels: each private PyTorch op charrnn calls still exists and still gives what
its public counterpart gives, so a torch upgrade that changed or removed one fails here, naming
it, rather than somewhere in a sample's text."""

import threading

import pytest
import torch
import torch.nn.functional as F

from charrnn.runtime import kernels
from charrnn.runtime.precision import cpu_computes

ONEDNN = torch.backends.mkldnn.is_available()
needs_onednn = pytest.mark.skipif(not ONEDNN, reason="this torch has no oneDNN: charrnn samples in float32 only")
# charrnn multiplies in bfloat16 only where the CPU does (AVX-512-BF16 or AMX); the ops take
# float32 on any CPU, so each is checked in float32 everywhere and in bfloat16 where it is used.
DTYPES = [
    torch.float32,
    pytest.param(
        torch.bfloat16,
        marks=pytest.mark.skipif(
            not (ONEDNN and cpu_computes(torch.bfloat16)),
            reason="this CPU has no bfloat16 products (AVX-512-BF16, AMX)",
        ),
    ),
]
# One rounding of the result apart at most: float32's, or bfloat16's (8 bits of mantissa).
ROUNDING = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2**-7, atol=1e-4)}


def _mkldnn_op(name: str):
    op = getattr(torch.ops.mkldnn, name, None)
    assert op is not None, f"torch {torch.__version__} has no torch.ops.mkldnn.{name} (charrnn.runtime.kernels uses it)"
    return op


def _operands(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows ``x`` (3, in), a float32 matrix ``w`` (in, out) as the sampler holds it, and ``w`` as
    ``F.linear`` takes it (out, in) in ``dtype``; sizes with remainders past any vector width."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 40, generator=gen).to(dtype)
    w = torch.randn(40, 24, generator=gen)
    return x, w, w.t().contiguous().to(dtype)


@needs_onednn
@pytest.mark.parametrize("dtype", DTYPES)
def test_linear_pointwise_is_F_linear(dtype):
    """``torch.ops.mkldnn._linear_pointwise`` (``kernels.packed_product``) on a plain weight."""
    _mkldnn_op("_linear_pointwise")
    assert kernels.has_packed_bfloat16()
    x, _, plain = _operands(dtype)
    got = kernels.packed_product(x, plain)
    assert got.dtype == dtype and got.shape == (3, 24), "torch.ops.mkldnn._linear_pointwise: a changed result"
    torch.testing.assert_close(
        got.float(),
        F.linear(x, plain).float(),
        **ROUNDING[dtype],
        msg=lambda m: f"torch.ops.mkldnn._linear_pointwise differs from F.linear: {m}",
    )


@needs_onednn
@pytest.mark.parametrize("dtype", DTYPES)
def test_reorder_linear_weight_multiplies_the_same(dtype):
    """``torch.ops.mkldnn._reorder_linear_weight`` (``kernels.pack_bfloat16``): the packed matrix
    multiplies as the plain one does."""
    reorder = _mkldnn_op("_reorder_linear_weight")
    x, w, plain = _operands(dtype)
    packed = kernels.pack_bfloat16(w) if dtype == torch.bfloat16 else reorder(w.t().contiguous(), 1)
    got = kernels.packed_product(x, packed)
    torch.testing.assert_close(
        got.float(),
        F.linear(x, plain).float(),
        **ROUNDING[dtype],
        msg=lambda m: f"a matrix packed by torch.ops.mkldnn._reorder_linear_weight: {m}",
    )


@pytest.mark.parametrize("feature", ["amx_tile", "avx512_bf16", "amx_fp16"])
def test_cpu_feature_checks_answer(feature):
    """``torch.cpu._is_<feature>_supported`` (``kernels.cpu_supports``): there, and a bool."""
    name = f"torch.cpu._is_{feature}_supported"
    check = getattr(torch.cpu, f"_is_{feature}_supported", None)
    assert check is not None, f"torch {torch.__version__} has no {name}: charrnn would take this CPU to lack it"
    assert isinstance(check(), bool), f"{name} returned {check()!r}, not a bool"
    assert kernels.cpu_supports(feature) is check()


@pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() not in kernels.EXPF_SYMBOLS,
    reason=f"torch runs its {torch.backends.cpu.get_cpu_capability()} kernels here, and charrnn binds "
    "its gate kernels to torch's expf and tanh only where they are the AVX2 or AVX-512 ones",
)
def test_gate_function_symbols_resolve():
    """libtorch_cpu's ``Sleef_expf8_u10`` (AVX2) or ``Sleef_expf16_u10`` (AVX-512) and ``vmsTanh``
    (``kernels.gate_function_addresses``). That the kernels bound to them give torch's sigmoid
    and tanh bit for bit is tests/model/test_gate_kernel.py's to check."""
    capability = torch.backends.cpu.get_cpu_capability()
    try:
        addresses = kernels.gate_function_addresses(capability)
    except LookupError as e:
        pytest.fail(f"{kernels.EXPF_SYMBOLS[capability]} and {kernels.TANH_SYMBOL}: {e}")
    assert len(addresses) == 2 and all(isinstance(a, int) and a for a in addresses), addresses


@pytest.mark.skipif(not kernels.has_int8_product(), reason="this torch has no fbgemm (x86) quantized engine")
def test_int8_product_is_the_product_of_the_scaled_matrix():
    """``torch.ops.quantized.linear_prepack`` / ``linear_dynamic`` (``kernels.pack_int8`` and
    ``int8_product``): the product of rows with the matrix rounded to 255 levels per column,
    within what quantizing the rows to 7 bits adds, and no warning for torch's deprecation of the
    quantized tensor it is built from."""
    x, w, _ = _operands(torch.float32)
    x = x.tanh()  # the sampler multiplies states in [-1, 1]
    w[:, 5] *= 100  # one scale per column: a large column costs the others nothing
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = kernels.int8_product(x, kernels.pack_int8(w))
    scale = w.abs().amax(0) / 127
    rounded = (w / scale).round() * scale
    assert got.dtype == torch.float32 and got.shape == (3, 24), "torch.ops.quantized.linear_dynamic: a changed result"
    # Rows on 7 bits over [-1, 1]: each of the 40 terms off by at most half a step (1/127) times
    # the largest weight of its column (127 scales).
    bound = 40 * (1 / 127) * (scale * 127)
    assert ((got - x @ rounded).abs() <= bound).all(), "torch.ops.quantized.linear_dynamic differs from x @ w"
    assert (got - x @ w).abs().max() > 0  # int8: not float32's product
    # A row's product is its own, whatever else its batch holds.
    assert torch.equal(kernels.int8_product(x[:1], kernels.pack_int8(w)), got[:1])
    assert torch.equal(kernels.int8_product(torch.cat([x[:1], x[1:] * 0.01]), kernels.pack_int8(w))[:1], got[:1])


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="this torch has no MKL")
def test_mkl_buffer_pool_symbols_resolve():
    """``mkl_serv_mem_stat`` and ``mkl_serv_free_buffers`` in libtorch_cpu (what a server's
    ``release`` calls when idle): a torch that drops them fails here by name."""
    torch.randn(64, 256) @ torch.randn(256, 1024)
    assert kernels.blas_buffered_bytes() is not None, kernels.MKL_BUFFERED
    assert kernels.free_blas_buffers(), kernels.MKL_FREE_BUFFERS
    assert kernels.blas_buffered_bytes() == 0


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="this torch has no MKL")
def test_mkl_chooses_its_threads_again_after_torch_set_num_threads(monkeypatch):
    """``mkl_serv_set_dynamic`` / ``mkl_serv_get_dynamic``: ``torch.set_num_threads`` switches
    MKL's choice of threads per call off, and so does a new thread's first torch call after it
    (torch sets a thread up lazily by calling it again); ``let_mkl_choose_threads`` sets the
    calling thread up first, so its choice holds through that thread's torch calls after it."""
    monkeypatch.delenv("MKL_DYNAMIC", raising=False)
    threads = torch.get_num_threads()
    seen: dict[str, object] = {}

    def fresh_thread() -> None:
        torch.set_num_threads(threads)
        seen["set"] = kernels.mkl_chooses_threads()
        seen["let"] = kernels.let_mkl_choose_threads()
        torch.randn(64, 4096).tanh()  # a torch call split across the thread's team
        seen["after"] = kernels.mkl_chooses_threads()

    try:
        worker = threading.Thread(target=fresh_thread)
        worker.start()
        worker.join()
        assert seen["set"] is False, "torch.set_num_threads no longer turns MKL_DYNAMIC off"
        assert seen["let"] is True, kernels.MKL_SET_DYNAMIC
        assert seen["after"] is True, "MKL's choice did not hold through the thread's first torch calls"
        monkeypatch.setenv("MKL_DYNAMIC", "FALSE")  # the user's own choice stands
        torch.set_num_threads(threads)
        assert kernels.let_mkl_choose_threads() is False and kernels.mkl_chooses_threads() is False
    finally:
        monkeypatch.delenv("MKL_DYNAMIC", raising=False)
        kernels.let_mkl_choose_threads()
