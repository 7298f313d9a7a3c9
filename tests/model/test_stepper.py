"""The sampler's step: the same text as the full-sequence forward for the same seed, and
bfloat16 weights as an option (`sample --precision`)."""

import json

import pytest
import torch
from conftest import run_cli

import charrnn.sampling.generate
from charrnn.data.vocab import CharVocab
from charrnn.errors import CharrnnError
from charrnn.model.network import CELLS, CharRNN, ModelConfig
from charrnn.model.stepper import Stepper
from charrnn.runtime.kernels import has_int8_product, has_packed_bfloat16
from charrnn.runtime.precision import cpu_computes, step_dtype
from charrnn.sampling.generate import generate
from charrnn.sampling.options import SampleOptions

needs_bfloat16 = pytest.mark.skipif(
    not (has_packed_bfloat16() and cpu_computes(torch.bfloat16)), reason="this CPU has no bfloat16 products"
)
needs_int8 = pytest.mark.skipif(not has_int8_product(), reason="this torch has no fbgemm (x86) quantized engine")
REDUCED = [pytest.param("bfloat16", marks=needs_bfloat16), pytest.param("int8", marks=needs_int8)]


class ForwardStepper:
    """The reference: the model's own full-sequence forward on one token at a time."""

    def __init__(self, model: CharRNN, precision: str = "float32") -> None:
        self.model = model

    def step(self, tokens, state):
        logits, state = self.model(tokens[:, None], state)
        return logits[:, -1], state


def _model(cell: str, hidden: int = 24, scale: float = 0.3):
    torch.manual_seed(3)
    vocab = CharVocab.build("abcdefghij klmnop\n")
    model = CharRNN(
        ModelConfig(vocab_size=vocab.size, model=cell, layers=2, hidden=hidden, embed=12, dropout=0.2)
    ).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, scale)
    return model, vocab


def _text(model, vocab, monkeypatch, stepper_class, batch: int = 1, precision: str = "float32") -> list[str]:
    monkeypatch.setattr(charrnn.sampling.generate, "Stepper", stepper_class)
    opts = SampleOptions(length=400, temp=1.0, seed=11, precision=precision)
    rows = [""] * batch
    for row, piece in generate(model, vocab, opts, vocab.encode("ab").tolist(), batch):
        rows[row] += piece
    return rows


@pytest.mark.parametrize("cell", CELLS)
def test_step_gives_the_full_forwards_text_for_the_same_seed(cell, monkeypatch):
    model, vocab = _model(cell)
    for batch in (1, 3):
        want = _text(model, vocab, monkeypatch, ForwardStepper, batch)
        assert _text(model, vocab, monkeypatch, Stepper, batch) == want
        assert len(set(want[0])) > 5  # a real distribution, not one character over and over


@pytest.mark.parametrize("cell", CELLS)
def test_one_row_multiplies_through_numpy_and_matches_its_row_in_a_batch(cell, monkeypatch):
    """At batch 1 the float32 products are numpy's (stepper.row_product), which round the sums
    in their own order: every value stays within float32 noise of the same row stepped beside
    another through torch's product."""
    import charrnn.model.stepper

    model, _ = _model(cell, hidden=64, scale=0.1)
    calls = []
    real = charrnn.model.stepper.row_product
    counted = lambda x, w, out=None: calls.append(w.shape) or real(x, w, out)
    monkeypatch.setattr(charrnn.model.stepper, "row_product", counted)
    stepper = Stepper(model, "float32")
    x = torch.randint(0, 18, (2, 40), generator=torch.Generator().manual_seed(1))
    one, two = model.init_state(1), model.init_state(2)
    flat = lambda state: torch.cat([s.flatten() for s in (state if isinstance(state, tuple) else (state,))])
    for t in range(40):
        alone, one = stepper.step(x[:1, t], one)
        pair, two = stepper.step(x[:, t], two)
        assert torch.allclose(alone, pair[:1], atol=1e-5, rtol=1e-5)
        first = tuple(s[:, :1] for s in two) if isinstance(two, tuple) else two[:, :1]
        assert torch.allclose(flat(one), flat(first), atol=1e-5)
    assert len(calls) >= 40 * 2  # the output layer and at least one recurrent product per step


@pytest.mark.parametrize("precision", REDUCED)
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_reduced_step_follows_the_forward(cell, precision):
    model, _ = _model(cell, hidden=64, scale=0.1)  # not chaotic: a tiny difference stays tiny
    x = torch.randint(0, 18, (2, 30))
    with torch.no_grad():
        full, _ = model(x)
    stepper = Stepper(model, precision)
    state = model.init_state(2)
    worst = 0.0
    for t in range(30):
        logits, state = stepper.step(x[:, t], state)
        assert logits.dtype == torch.float32
        assert all(s.dtype == torch.float32 for s in (state if isinstance(state, tuple) else (state,)))
        worst = max(worst, float((logits - full[:, t]).abs().max()))
    # bfloat16 keeps 8 bits of mantissa, int8 one scale per column: close to the float32
    # logits, but not equal to them.
    assert 0 < worst < 0.1


def test_step_precisions_are_refused_where_the_step_cannot_take_them():
    for cell in CELLS:
        assert step_dtype("float32", cell) == torch.float32
    for name in ("bfloat16", "int8"):
        with pytest.raises(CharrnnError, match="a cifg model samples in float32"):
            step_dtype(name, "cifg")
    with pytest.raises(CharrnnError, match="must be one of auto, float32, bfloat16, int8"):
        step_dtype("auto", "lstm")  # resolved by measurement before a Stepper is built


@needs_bfloat16
def test_precision_flag(trained_run):
    a = run_cli("sample", trained_run, "--length", "80", "--seed", "4", "--precision", "bfloat16")
    b = run_cli("sample", trained_run, "--length", "80", "--seed", "4", "--precision", "bfloat16")
    assert a.exit_code == 0 and a.stdout == b.stdout and len(a.stdout) == 81
    f = run_cli("sample", trained_run, "--length", "80", "--seed", "4", "--precision", "float32")
    auto = run_cli("sample", trained_run, "--length", "80", "--seed", "4")
    assert f.exit_code == 0 and auto.stdout == f.stdout  # a 32-unit model: auto is float32
    r = run_cli("sample", trained_run, "--precision", "float16")
    assert r.exit_code == 2
    assert r.stderr == "error: --precision must be one of auto, float32, bfloat16, int8 (got 'float16')\n"


@needs_int8
def test_int8_flag(trained_run):
    a = run_cli("sample", trained_run, "--length", "120", "--seed", "4", "--precision", "int8")
    b = run_cli("sample", trained_run, "--length", "120", "--seed", "4", "--precision", "int8")
    assert a.exit_code == 0 and a.stdout == b.stdout and len(a.stdout) == 121
    many = run_cli(
        "sample", trained_run, "--length", "120", "--seed", "4", "--precision", "int8", "--num-samples", "3", "--json"
    )
    assert many.exit_code == 0 and json.loads(many.stdout.splitlines()[0])["text"] == a.stdout[:-1]
