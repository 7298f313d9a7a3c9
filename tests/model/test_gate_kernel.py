"""charrnn.model.gate_kernel: the batch-1 LSTM step's gate arithmetic in one C call per layer, used only where
it is torch's to the bit, else torch's own calls; a seed's text is the same either way."""

import ctypes
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from charrnn.data.vocab import CharVocab
from charrnn.model import gate_kernel
from charrnn.model.network import CharRNN, ModelConfig
from charrnn.model.single_row import SingleRow
from charrnn.model.stepper import Stepper
from charrnn.runtime import kernels
from charrnn.sampling.generate import generate, warm_up
from charrnn.sampling.options import SampleOptions

REASON = gate_kernel.why_not(40)
needs_kernels = pytest.mark.skipif(REASON is not None, reason=f"the fused kernels are not used here: {REASON}")


@pytest.fixture
def fresh_checks():
    """The checks run again, and their results are forgotten afterwards."""
    gate_kernel._agrees.cache_clear()
    gate_kernel._unbound.cache_clear()
    yield
    gate_kernel._agrees.cache_clear()
    gate_kernel._unbound.cache_clear()


def _row(hidden: int) -> SingleRow:
    torch.manual_seed(hidden)
    vocab = CharVocab.build("abcdefghij klmnop\n")
    model = CharRNN(ModelConfig(vocab_size=vocab.size, layers=2, hidden=hidden, embed=12, dropout=0.0)).eval()
    logits, state = warm_up(model, vocab.encode("ab").tolist(), 1)
    return SingleRow(Stepper(model), logits, state)


@needs_kernels
@pytest.mark.parametrize("hidden", [1, 7, 16, 40, 100, 256])
def test_the_kernels_are_torchs_arithmetic_at_every_hidden_size(hidden):
    """Sizes with and without a remainder past torch's vector loop (16 or 32 elements)."""
    assert gate_kernel._agrees.__wrapped__(hidden)
    assert _row(hidden).kernels is not None


@needs_kernels
def test_kernels_that_differ_from_torch_in_one_rounding_are_not_used(monkeypatch, fresh_checks):
    """The cell update rounded twice (c * f + i * g) instead of once, as torch's addcmul does."""

    def twice_rounded(ifo, g, i, f, o, c, h, up):
        ifo.sigmoid_()
        g.tanh_()
        c.mul_(f).add_(i * g)
        torch.tanh(c, out=h)
        h.mul_(o)

    monkeypatch.setattr(gate_kernel, "torch_gates", twice_rounded)
    assert gate_kernel.why_not(40) == "its results differ from torch's at hidden size 40"
    assert _row(40).kernels is None


def test_without_the_extension_the_sampler_keeps_torchs_calls(monkeypatch, fresh_checks):
    monkeypatch.setattr(gate_kernel, "_lstm_row", None)
    assert "without its C extension" in gate_kernel.why_not(40)
    row = _row(40)
    assert row.kernels is None
    assert row.step(3) is row.logits


def test_over_2048_hidden_units_torch_splits_the_gates_so_its_calls_stay():
    assert gate_kernel.why_not(4096) == "hidden size 4096 is over 2048, where torch splits the gate functions"


def test_charrnn_fused_0_switches_them_off(monkeypatch):
    monkeypatch.setenv("CHARRNN_FUSED", "0")
    assert gate_kernel.why_not(40) == "CHARRNN_FUSED=0" and _row(40).kernels is None


@pytest.mark.parametrize("hidden", [40, 64])
def test_the_same_seed_gives_the_same_text_with_the_kernels_or_without(hidden, monkeypatch):
    torch.manual_seed(0)
    vocab = CharVocab.build("abcdefghij klmnop\n")
    model = CharRNN(ModelConfig(vocab_size=vocab.size, layers=2, hidden=hidden, embed=12, dropout=0.0)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    texts = []
    for flag in ("1", "0"):
        monkeypatch.setenv("CHARRNN_FUSED", flag)
        for seed, temp in ((1, 0.7), (2, 1.0), (3, 1.8)):
            opts = SampleOptions(length=400, seed=seed, temp=temp)
            texts.append("".join(piece for _, piece in generate(model, vocab, opts, [0])))
    assert texts[:3] == texts[3:] and len(set(texts[0])) > 5


def test_charrnn_sample_writes_the_same_bytes_with_the_kernels_or_without(trained_run):
    outs = []
    for flag in ("1", "0"):
        env = {**os.environ, "CHARRNN_FUSED": flag}
        args = [sys.executable, "-m", "charrnn", "sample", str(trained_run), "--seed", "4", "--length", "500"]
        r = subprocess.run(args, capture_output=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
    assert outs[0] == outs[1] and len(outs[0]) >= 500


@pytest.mark.skipif(gate_kernel._lstm_row is None, reason="charrnn was installed without its C extension")
def test_where_torch_runs_other_kernels_its_calls_stay(monkeypatch, fresh_checks):
    """Only torch's AVX2 and AVX-512 loops are known to the kernels (their expf and loop block)."""
    monkeypatch.delenv("CHARRNN_FUSED", raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert gate_kernel.why_not(40) == "torch runs its DEFAULT kernels here, not AVX2 or AVX-512"
    assert _row(40).kernels is None


@pytest.mark.parametrize(
    "capability, symbol, block", [("AVX2", "Sleef_expf8_u10", 16), ("AVX512", "Sleef_expf16_u10", 32)]
)
def test_each_capability_binds_its_own_expf_and_loop_block(monkeypatch, fresh_checks, capability, symbol, block):
    """Where torch runs its AVX2 kernels the kernels take SLEEF's 8-wide expf and a 16-float loop
    block, where it runs its AVX-512 ones the 16-wide expf and 32 floats (checked on any CPU with
    a stand-in extension that records what it is bound to)."""
    bound = []
    fake = SimpleNamespace(bind=lambda expf, tanh, vector_block: bound.append((expf, tanh, vector_block)) or True)
    monkeypatch.setattr(gate_kernel, "_lstm_row", fake)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert gate_kernel._unbound() is None
    lib = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
    expf, tanh = (ctypes.cast(getattr(lib, name), ctypes.c_void_p).value for name in (symbol, "vmsTanh"))
    assert bound == [(expf, tanh, block)]


@needs_kernels
def test_bind_refuses_a_loop_block_it_has_no_vectors_for(fresh_checks):
    """16 floats a loop is two AVX2 vectors, 32 two AVX-512 ones; anything else is refused and
    leaves the kernels bound as they were."""
    ext = gate_kernel._lstm_row
    capability = torch.backends.cpu.get_cpu_capability()
    expf, tanh = kernels.gate_function_addresses(capability)
    assert not ext.bind(expf, tanh, 24) and not ext.bind(expf, tanh, 8)
    gate_kernel._agrees.cache_clear()
    assert gate_kernel._agrees(40)
