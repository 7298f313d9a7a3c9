"""generate's batch-1 LSTM loop (charrnn.model.single_row) gives bit for bit the text of the batched
step it replaces, for every sampling control, seeded or not, in float32 and bfloat16."""

import warnings

import pytest
import torch

from charrnn.data.vocab import CharVocab
from charrnn.model import gate_kernel
from charrnn.model.network import CharRNN, ModelConfig
from charrnn.model.single_row import SingleRow
from charrnn.model.stepper import Stepper
from charrnn.runtime.kernels import has_int8_product, has_packed_bfloat16
from charrnn.runtime.precision import cpu_computes
from charrnn.sampling.generate import generate, warm_up
from charrnn.sampling.options import SampleOptions
from charrnn.sampling.pick import RowNoise, pick, temperature_pick

PRECISIONS = (
    ["float32"]
    + (["bfloat16"] if has_packed_bfloat16() and cpu_computes(torch.bfloat16) else [])
    + (["int8"] if has_int8_product() else [])
)
CONTROLS = [
    dict(seed=11),
    dict(seed=12, temp=1.4),
    dict(seed=13, top_k=4),
    dict(seed=14, top_p=0.8),
    dict(greedy=True),
    dict(seed=15, stops=["ab"], keep_stop=True),
    dict(),
]


def _model(layers: int):
    torch.manual_seed(layers)
    vocab = CharVocab.build("abcdefghij klmnop\n")
    model = CharRNN(ModelConfig(vocab_size=vocab.size, layers=layers, hidden=40, embed=12, dropout=0.0)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model, vocab


def _text(model, vocab, opts) -> str:
    if opts.seed is None:
        torch.manual_seed(5)  # unseeded sampling draws from the global generator
    return "".join(piece for _, piece in generate(model, vocab, opts, vocab.encode("ab").tolist()))


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_single_row_loop_gives_the_batched_steps_text(layers, precision, monkeypatch):
    model, vocab = _model(layers)
    for controls in CONTROLS:
        opts = SampleOptions(length=300, precision=precision, **controls)
        fast = _text(model, vocab, opts)
        with monkeypatch.context() as m:
            m.setattr(SingleRow, "handles", staticmethod(lambda stepper: False))
            assert fast == _text(model, vocab, opts), controls
        assert len(fast) == 300 or controls.get("stops"), controls
        assert controls.get("greedy") or len(set(fast)) > 5


def test_single_row_is_what_batch_1_runs(monkeypatch):
    model, vocab = _model(2)
    used = []
    real_step = SingleRow.step
    monkeypatch.setattr(SingleRow, "step", lambda self, token: used.append(token) or real_step(self, token))
    text = _text(model, vocab, SampleOptions(length=50, seed=1, precision="float32"))  # auto would time steps
    assert len(used) == 49 and vocab.decode(used) == text[:49]


@pytest.mark.parametrize("use_fused", ["1", "0"], ids=["fused", "torch-calls"])
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_single_row_step_keeps_every_value_of_the_batched_step(layers, precision, use_fused, monkeypatch):
    """Equal tokens over a short text could hide a last-bit drift; the logits and the state
    must be equal after every step, with the gates in charrnn.model.gate_kernel's kernels or in torch's calls."""
    monkeypatch.setenv("CHARRNN_FUSED", use_fused)
    model, vocab = _model(layers)
    stepper = Stepper(model, precision)
    logits, state = warm_up(model, vocab.encode("ab").tolist(), 1)
    row = SingleRow(stepper, logits, state)
    assert (row.kernels is not None) == (use_fused == "1" and gate_kernel.why_not(40) is None)
    tokens = torch.randint(vocab.size, (200,), generator=torch.Generator().manual_seed(layers)).tolist()
    for token in tokens:
        logits, state = stepper.step(torch.tensor([token]), state)
        row.step(token)
        h, c = row.state()
        assert torch.equal(row.logits, logits) and torch.equal(h, state[0]) and torch.equal(c, state[1])


@pytest.mark.parametrize("use_fused", [False, True], ids=["numpy", "fused"])
def test_temperature_pick_is_pick_on_the_same_logits_and_draws(use_fused):
    kernels = gate_kernel.kernels(30) if use_fused else None
    if use_fused and kernels is None:
        pytest.skip(f"no fused kernels here: {gate_kernel.why_not(30)}")
    logits = torch.empty(1, 30)
    choose = temperature_pick(logits, 0.7, RowNoise([7], 30), kernels)
    races = RowNoise([7], 30).stream()
    opts = SampleOptions(temp=0.7)
    gen = torch.Generator().manual_seed(0)
    picks = []
    for _ in range(500):
        logits.normal_(0, 3, generator=gen)
        picks.append(choose())
        assert picks[-1] == pick(logits, opts, race=next(races)).item()
    assert len(set(picks)) > 10
    logits.normal_(0, 3, generator=gen)[0, 3] = 3e38  # divided by 0.7 it overflows, silently in torch
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose() == pick(logits, opts, race=next(races)).item()
