"""The one batch loop: generate drives it to the end, the server's engine a tick at a time."""

import pytest
import torch

from charrnn.data.vocab import CharVocab
from charrnn.model.network import CharRNN, ModelConfig
from charrnn.model.stepper import Stepper
from charrnn.sampling.batch import Batch, Row
from charrnn.sampling.generate import generate, warm_up
from charrnn.sampling.options import SampleOptions
from charrnn.sampling.pick import RowNoise
from charrnn.sampling.text import LENGTH, STOP, RowText


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(1)
    vocab = CharVocab.build("abcdefgh \n")
    cfg = ModelConfig(model="gru", vocab_size=vocab.size, layers=2, hidden=16, embed=8, dropout=0.0)
    return CharRNN(cfg).eval(), vocab


def _texts(model, vocab, opts, n):
    texts = [""] * n
    for row, piece in generate(model, vocab, opts, vocab.encode("ab").tolist(), num_samples=n):
        texts[row] += piece
    return texts


def test_rows_that_end_early_leave_their_neighbours_text_unchanged(tiny):
    model, vocab = tiny
    plain = _texts(model, vocab, SampleOptions(length=120, seed=3, temp=1.2), 4)
    stopped = _texts(model, vocab, SampleOptions(length=120, seed=3, temp=1.2, stops=["a"]), 4)
    # Each row ends at its own first "a"; the others go on with the very tokens they had.
    assert stopped == [text.split("a")[0] for text in plain]
    assert len({len(text) for text in stopped}) > 1


def _join(batch, model, vocab, specs):
    """Rows for (key, options, max_tokens, stops, seed), reading the prompt "ab" once for them all."""
    logits, state = warm_up(model, vocab.encode("ab").tolist(), len(specs))
    rows = [Row(key, opts, RowText(n, stops, per_token=True)) for key, opts, n, stops, _ in specs]
    batch.join(rows, logits, state, RowNoise([seed for *_, seed in specs], logits.shape[-1]))


def _step(batch, out, cancelled=frozenset()):
    for row, text, finish in batch.step(lambda key: key in cancelled):
        out[row.key] = (out.get(row.key, ("", None))[0] + text, finish)


SPECS = [
    ("greedy", SampleOptions(greedy=True), 30, [], 1),
    ("top-k", SampleOptions(temp=0.9, top_k=3), 50, [], 2),
    ("top-p stop", SampleOptions(temp=1.3, top_p=0.8), 40, ["h"], 3),
    ("plain", SampleOptions(temp=1.0), 25, [], 4),
    ("gone", SampleOptions(temp=1.0), 60, [], 5),
]


def test_a_compacting_batch_gives_each_row_its_text_alone(tiny):
    model, vocab = tiny
    alone = {}
    for spec in SPECS:
        batch = Batch(Stepper(model), vocab.token_bytes(), compact=True)
        _join(batch, model, vocab, [spec])
        while batch.rows:
            _step(batch, alone)
    together = {}
    batch = Batch(Stepper(model), vocab.token_bytes(), compact=True)
    _join(batch, model, vocab, SPECS[:2])
    for _ in range(5):
        _step(batch, together)
    _join(batch, model, vocab, SPECS[2:])  # rows joining five steps later, beside rows with other settings
    assert len(batch.rows) == 5
    while batch.rows:
        _step(batch, together, cancelled={"gone"})
        assert not batch.rows or batch.state.shape[1] == len(batch.rows)  # rows that ended left the tensors
    del alone["gone"]
    assert together == alone
    assert alone["top-p stop"][1] == STOP and alone["plain"][1] == LENGTH and len(alone["plain"][0]) == 25
