import functools

import numpy as np
import pytest
import torch

from charrnn.data.batches import Batches, val_streams
from charrnn.data.prepare import prepare
from charrnn.evaluation.bpc import evaluate
from charrnn.model.network import CharRNN, ModelConfig, detach_state


def test_windows_are_contiguous_per_stream():
    ids = np.arange(1001, dtype=np.uint32)
    b = Batches(ids, batch_size=4, seq_len=10)
    per_stream = 1000 // 4
    assert b.windows == per_stream // 10
    for k in range(b.windows - 1):
        x0, y0 = b.window(k)
        x1, _ = b.window(k + 1)
        # each row continues exactly where it stopped; targets are inputs shifted by one
        assert np.array_equal(x1[:, 0], x0[:, -1] + 1)
        assert np.array_equal(y0, x0 + 1)
    x, _ = b.window(0)
    assert list(x[:, 0]) == [0, 250, 500, 750]


def test_carried_state_equals_one_long_pass():
    """TBPTT carry: windows with the state carried give the same outputs as the whole stream at once."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=50, layers=2, hidden=16, embed=8, dropout=0.0)).eval()
    ids = np.random.default_rng(0).integers(0, 50, 3 * 40 + 1).astype(np.uint8)
    batches = Batches(ids, batch_size=3, seq_len=8)
    full, _ = model(torch.from_numpy(batches.inputs[:, : batches.windows * 8].astype(np.int64)))
    state, pieces = None, []
    for k in range(batches.windows):
        x, _ = batches.window(k)
        out, state = model(torch.from_numpy(x.astype(np.int64)), state)
        state = detach_state(state)
        pieces.append(out)
    assert torch.allclose(torch.cat(pieces, 1), full, atol=1e-5)


@pytest.mark.parametrize("n", [103, 2, 1, 0])
@pytest.mark.parametrize("streams, burn_in", [(5, 0), (5, 7), (3, 40), (1, 7), (200, 7)])
def test_val_streams_cover_every_prediction_once(n, streams, burn_in):
    ids = np.arange(n)
    inputs, targets, burn, tail_in, tail_tgt = val_streams(ids, streams, burn_in)
    assert np.array_equal(targets, inputs + 1)
    scored = targets[0].tolist() + targets[1:, burn:].flatten().tolist() + tail_tgt.tolist()
    assert scored == list(range(1, n))  # in order: each row's scored part follows the last one's
    if len(inputs) > 1:
        assert burn == burn_in and np.array_equal(inputs[1:, burn], targets[:-1, -1])  # burn-in, then on from there
    if len(tail_in):
        assert tail_in[0] == inputs[-1, -1] + 1  # the tail continues the last row


def test_evaluate_matches_sequential_loss():
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=20, layers=1, hidden=16, embed=8, dropout=0.0)).eval()
    ids = np.random.default_rng(1).integers(0, 20, 500)
    x = torch.from_numpy(ids[:-1])[None]
    with torch.no_grad():
        logits, _ = model(x)
    nats = torch.nn.functional.cross_entropy(logits[0], torch.from_numpy(ids[1:]), reduction="sum")
    score = evaluate(model, ids, torch.device("cpu"), streams=1, window=64)
    assert abs(score.nats - float(nats)) < 1e-3


def test_evaluate_picks_a_row_per_tokens_per_stream(monkeypatch):
    import charrnn.evaluation.bpc as evaluate_mod

    monkeypatch.setattr(evaluate_mod, "TOKENS_PER_STREAM", 100)
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=20, layers=1, hidden=16, embed=8, dropout=0.0)).eval()
    ids = np.random.default_rng(1).integers(0, 20, 1001)
    cpu = torch.device("cpu")
    cold = functools.partial(evaluate, model, device=cpu, burn_in=0)  # cold rows: the stream count shows
    assert cold(ids).nats == pytest.approx(cold(ids, streams=10).nats, abs=1e-6)
    assert cold(ids).nats != pytest.approx(cold(ids, streams=5).nats, abs=1e-3)
    short = ids[:80]
    assert cold(short).nats == pytest.approx(cold(short, streams=1).nats, abs=1e-6)


def test_burn_in_gives_each_row_the_context_one_long_pass_has():
    """A model that remembers: the LSTM's forget gates are held open, so a row started from a zero
    state scores differently from one long pass; reading the tokens before its part first makes it
    score the same, whatever the number of rows."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=20, layers=1, hidden=16, embed=8, dropout=0.0)).eval()
    with torch.no_grad():
        model.rnn.bias_ih_l0[16:32] = 2.0  # with bias_hh 1: forget gate ~0.95, memory over ~20 tokens
    ids = np.random.default_rng(1).integers(0, 20, 3001)
    cpu = torch.device("cpu")
    whole = evaluate(model, ids, cpu, streams=1).nats
    cold = evaluate(model, ids, cpu, streams=30, burn_in=0).nats
    warm = evaluate(model, ids, cpu, streams=30, burn_in=400).nats
    assert abs(cold - whole) > 0.5
    assert abs(warm - whole) < 0.02 * abs(cold - whole)


def test_cache_is_reused_and_changed_corpus_reencoded(tmp_path, monkeypatch):
    import charrnn.data.prepare as data_mod

    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world\n" * 50)
    cache = tmp_path / "cache"
    first = prepare([str(corpus)], cache, 0.1)
    assert [p.name for p in cache.iterdir()] == [first.key]  # one folder per cache, no temp files

    def no_rebuild(*a, **k):
        raise AssertionError("the cached corpus should have been used")

    monkeypatch.setattr(data_mod, "_build", no_rebuild)
    again = prepare([str(corpus)], cache, 0.1)
    assert again.key == first.key and isinstance(again.train, np.memmap)
    assert np.array_equal(np.asarray(again.train), np.asarray(first.train))
    monkeypatch.undo()
    corpus.write_text("HELLO WORLD\n" * 50)
    changed = prepare([str(corpus)], cache, 0.1)
    assert changed.key != first.key and changed.vocab.decode(changed.train[:5]) == "HELLO"


def test_evaluate_hands_the_rnn_a_contiguous_state():
    """cuDNN refuses a strided hx ("rnn: hx is not contiguous", seen on an H100 when validating a
    plain nn.LSTM): the tail row's state, cut from the batch's, must be a contiguous copy."""

    class Strict(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(20, 8)
            self.rnn = torch.nn.LSTM(8, 16, num_layers=2, batch_first=True)  # 2 layers: the row's state is strided
            self.head = torch.nn.Linear(16, 20)

        def forward(self, x, state=None):
            assert state is None or all(s.is_contiguous() for s in state)
            out, state = self.rnn(self.embed(x), state)
            return self.head(out), state

    ids = np.random.default_rng(2).integers(0, 20, 503)  # 5 streams and a tail continuing the last
    score = evaluate(Strict().eval(), ids, torch.device("cpu"), streams=5, window=32)
    assert np.isfinite(score.nats)


def test_burn_in_rows_split_over_ranks_sum_to_one_process(monkeypatch):
    """Under torchrun each rank scores a block of rows; only the text's first row has no burn-in,
    whichever rank holds it, so the ranks' totals add up to the single-process score."""
    import charrnn.evaluation.bpc as evaluate_mod
    from charrnn.runtime.distributed import World

    monkeypatch.setattr(evaluate_mod, "sum_values", lambda world, total: total)  # each rank's own part
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=20, layers=1, hidden=16, embed=8, dropout=0.0)).eval()
    ids = np.random.default_rng(3).integers(0, 20, 1003)
    cpu = torch.device("cpu")
    one = evaluate(model, ids, cpu, streams=7, burn_in=50, window=32).nats
    for size in (2, 3):
        parts = [
            evaluate(model, ids, cpu, streams=7, burn_in=50, window=32, world=World(rank=r, size=size)).nats
            for r in range(size)
        ]
        assert sum(parts) == pytest.approx(one, abs=1e-6)
