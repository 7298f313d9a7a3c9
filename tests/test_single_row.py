"""generate's batch-1 LSTM loop (charrnn.single_row) gives bit for bit the text of the batched
step it replaces, for every sampling control, seeded or not, in float32 and bfloat16."""

import pytest
import torch

from charrnn.model import CharRNN, ModelConfig
from charrnn.precision import cpu_computes
from charrnn.sample import SampleOptions, generate
from charrnn.single_row import SingleRow
from charrnn.vocab import CharVocab

PRECISIONS = ["float32"] + (["bfloat16"] if torch.backends.mkldnn.is_available() and cpu_computes(torch.bfloat16) else [])
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
    text = _text(model, vocab, SampleOptions(length=50, seed=1))
    assert len(used) == 49 and vocab.decode(used) == text[:49]
