"""The one top-k/top-p implementation: a row's token is the same with one setting for the batch,
a setting per row beside unrelated rows, or alone, and it is what charrnn 1.x's filter chose."""

import pytest
import torch

from charrnn.sampling.options import SampleOptions
from charrnn.sampling.pick import RowFilters, RowNoise, pick, pick_rows, single_row_pick

V = 40
MIXED = [
    SampleOptions(greedy=True),
    SampleOptions(temp=0.7, top_k=3),
    SampleOptions(temp=1.3, top_p=0.9),
    SampleOptions(temp=0.8),
    SampleOptions(temp=1.1, top_k=5, top_p=0.6),
    SampleOptions(greedy=True, top_k=2),
    SampleOptions(temp=0.5, top_k=V + 7, top_p=1.0),  # filters that keep every token
    SampleOptions(temp=2.0, top_k=1),
]


def _reference(logits: torch.Tensor, opts: SampleOptions, race: torch.Tensor) -> int:
    """One row's token as charrnn 1.x's ``filter_logits`` and ``pick`` chose it: top-k's k-th
    value by ``topk``, top-p over the sorted probabilities, the race's argmax."""
    if opts.greedy:
        return int(logits.argmax())
    x = logits.float() / opts.temp
    if opts.top_k is not None and opts.top_k < x.shape[-1]:
        x = x.masked_fill(x < torch.topk(x, opts.top_k).values[-1], float("-inf"))
    if opts.top_p is not None and opts.top_p < 1:
        sorted_x, order = torch.sort(x, descending=True)
        probs = sorted_x.softmax(-1)
        drop = torch.zeros_like(order, dtype=torch.bool).scatter(-1, order, probs.cumsum(-1) - probs >= opts.top_p)
        x = x.masked_fill(drop, float("-inf"))
    return int(x.softmax(-1).div_(race).argmax())


def _logits(seed: int, rows: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if seed % 3 == 0:  # ties, where the k-th value is shared
        return torch.randint(-2, 3, (rows, V), generator=g).float()
    return torch.randn(rows, V, generator=g) * (1 + seed % 5)


@pytest.mark.parametrize("seed", range(40))
def test_rows_with_their_own_settings_pick_as_alone_and_as_1x(seed):
    logits = _logits(seed, len(MIXED))
    race = torch.empty(len(MIXED), V).exponential_(generator=torch.Generator().manual_seed(1000 + seed))
    together = pick_rows(logits, RowFilters.of(MIXED, V), race.clone()).tolist()
    alone = [int(pick(logits[i : i + 1], opts, race=race[i : i + 1].clone())) for i, opts in enumerate(MIXED)]
    assert together == alone == [_reference(logits[i], opts, race[i]) for i, opts in enumerate(MIXED)]


@pytest.mark.parametrize("opts", MIXED, ids=repr)
def test_one_setting_for_a_batch_is_every_row_alone(opts):
    logits, race = _logits(7, 6), torch.empty(6, V).exponential_(generator=torch.Generator().manual_seed(7))
    batch = pick(logits, opts, race=race.clone()).tolist()
    assert batch == [_reference(logits[i], opts, race[i]) for i in range(6)]


def test_filters_left_out_where_no_row_uses_them():
    plain = RowFilters.of([SampleOptions(temp=0.9, top_k=V, top_p=1.0), SampleOptions(greedy=True, top_k=2)], V)
    # top_p 1 is skipped rather than compared: a cumulative sum can round past 1 and drop a token.
    assert plain.top_k is None and plain.top_p is None and plain.greedy.tolist() == [False, True]
    assert plain.temp.dtype == torch.float32 and plain.temp.flatten().tolist() == [pytest.approx(0.9), 1.0]
    assert not plain.all_greedy and RowFilters.of([SampleOptions(greedy=True)], V).all_greedy


def test_a_greedy_batch_draws_nothing():
    torch.manual_seed(3)
    before = torch.get_rng_state()
    tokens = pick(_logits(1, 4), SampleOptions(greedy=True))
    assert torch.equal(torch.get_rng_state(), before) and tokens.tolist() == _logits(1, 4).argmax(-1).tolist()


def test_a_tiny_temperature_is_greedy_on_every_path():
    """1e-40 divides logits past float32's range (inf - inf made NaN, and every pick token 0):
    alone, beside other rows, with top-k/top-p and on the batch-1 path, it is the argmax."""
    logits = torch.randn(6, V, generator=torch.Generator().manual_seed(5)) * 30
    logits[:, 0] = -100  # token 0 is never the argmax
    tiny = [SampleOptions(temp=1e-40), SampleOptions(temp=1e-35, top_k=4), SampleOptions(temp=1e-40, top_p=0.5)]
    rows = [*tiny, *MIXED[1:4]]
    race = torch.empty(6, V).exponential_(generator=torch.Generator().manual_seed(6))
    tokens = pick_rows(logits, RowFilters.of(rows, V), race)
    assert tokens[:3].tolist() == logits[:3].argmax(-1).tolist()
    assert tokens[3:].tolist() == [_reference(logits[i], rows[i], race[i]) for i in range(3, 6)]
    assert pick(logits, SampleOptions(temp=1e-40)).tolist() == logits.argmax(-1).tolist()
    row = logits[:1].contiguous()
    assert single_row_pick(SampleOptions(temp=1e-40), row, RowNoise([1], V))() == int(row.argmax())
