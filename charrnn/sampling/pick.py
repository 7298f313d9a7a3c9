"""Choosing the next token from the logits: temperature, top-k, top-p and the random draws.

``pick_rows`` is the one implementation, with settings per row (``RowFilters``: the server's
unrelated requests share a batch); ``pick`` is it with one setting for every row, and
``temperature_pick`` is the batch-1 fast path, making the same operations on the same values,
so a row's token never depends on which path chose it. Each row's random draws come from its
own generator (``RowNoise``), so a row's text depends on its seed alone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, overload

import numpy as np
import torch

from charrnn.sampling.options import SampleOptions

if TYPE_CHECKING:
    from charrnn.model.gate_kernel import Kernels


@dataclass(frozen=True)
class RowFilters:
    """Each row's temperature, top-k and top-p as the tensors ``pick_rows`` takes, built once per
    batch (not per step): (rows, 1) each, or (1, 1) for one setting that every row shares.

    A greedy row keeps every token at temperature 1 (its token is the argmax, whatever the
    others compute); a row without top-k keeps all ``vocab_size`` tokens, one without top-p has
    inf, so rows that filter share one tensor with rows that do not. A filter no row uses is None.
    """

    temp: torch.Tensor
    top_k: torch.Tensor | None
    top_p: torch.Tensor | None
    greedy: torch.Tensor | None
    all_greedy: bool
    k_max: int

    @classmethod
    def of(cls, rows: list[SampleOptions], vocab_size: int, device: torch.device | str | None = None) -> RowFilters:
        """The filters for ``rows``: one ``SampleOptions`` per row, or one for them all."""

        def column(values: Sequence[float], dtype: torch.dtype) -> torch.Tensor:
            return torch.tensor([[v] for v in values], dtype=dtype, device=device)

        greedy = [o.picks_greedily for o in rows]
        # float32 whatever torch's default dtype: one setting's Python floats divide the logits
        # and meet top-p's cumulative sums as float32 too.
        temp = column([1.0 if g else o.temp for o, g in zip(rows, greedy)], torch.float32)
        k = [vocab_size if g or o.top_k is None else min(o.top_k, vocab_size) for o, g in zip(rows, greedy)]
        top_k = column(k, torch.long) if min(k) < vocab_size else None
        # top_p 1 keeps every token: skipped, not compared (a cumulative sum can round past 1).
        p = [o.top_p if not g and o.top_p is not None and o.top_p < 1 else float("inf") for o, g in zip(rows, greedy)]
        top_p = column(p, torch.float32) if min(p) < float("inf") else None
        greedy_rows = torch.tensor(greedy, device=device) if any(greedy) else None
        return cls(temp, top_k, top_p, greedy_rows, all(greedy), max(k))


def filter_logits(logits: torch.Tensor, filters: RowFilters) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p), as logits with excluded tokens at -inf."""
    x = logits.float() / filters.temp
    if filters.top_k is not None:
        # The k-th largest value of each row; a row that keeps all V tokens compares with its least.
        k = filters.top_k.expand(x.shape[0], 1)
        kth = torch.topk(x, filters.k_max, dim=-1).values.gather(-1, k - 1)
        x = x.masked_fill(x < kth, float("-inf"))
    if filters.top_p is not None:
        sorted_x, order = torch.sort(x, dim=-1, descending=True)
        probs = sorted_x.softmax(-1)
        before = probs.cumsum(-1) - probs
        # Keep the smallest prefix whose mass reaches top_p: a token stays if the mass before
        # it is still below top_p (the most likely token always stays).
        drop_sorted = before >= filters.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        x = x.masked_fill(drop, float("-inf"))
    return x


def pick_rows(
    logits: torch.Tensor, filters: RowFilters, race: torch.Tensor | None = None, gen: torch.Generator | None = None
) -> torch.Tensor:
    """One token per row of ``logits`` (batch, vocab), each row with its own ``filters``;
    ``race`` is each row's own Exp(1) draws (from ``RowNoise``), else they come from ``gen`` (or
    the global RNG) for the whole batch. Every operation is row by row, so a row gets bit for
    bit the token it gets alone or beside rows with other settings."""
    if filters.all_greedy:
        return logits.argmax(-1)
    probs = filter_logits(logits, filters).softmax(-1)
    # One draw per row by the exponential race: argmax(p_k / E_k) with E_k ~ Exp(1) picks k with
    # probability p_k, what torch.multinomial does for one sample, without its per-call checks
    # (a quarter of the per-character overhead at batch 1). Excluded tokens have p = 0.
    if race is None:
        race = torch.empty_like(probs).exponential_(generator=gen)
    tokens = probs.div_(race).argmax(-1)
    if filters.greedy is not None:
        tokens = torch.where(filters.greedy, logits.argmax(-1), tokens)
    return tokens


def pick(
    logits: torch.Tensor, opts: SampleOptions, gen: torch.Generator | None = None, race: torch.Tensor | None = None
) -> torch.Tensor:
    """``pick_rows`` with one setting for every row (a loop that picks often builds its
    ``RowFilters`` once instead)."""
    return pick_rows(logits, RowFilters.of([opts], logits.shape[-1], logits.device), race, gen)


class RowNoise:
    """Each row's Exp(1) draws from its own ``torch.Generator`` (seeded S + i for row i), so a
    row's text depends on its seed alone, not on its batch or its place in it.

    A generator fills ``block`` steps' worth at once (the same numbers, in the same order, as
    one call per step: torch draws element by element), so the per-step cost is one gather
    for the whole batch instead of a call per row.
    """

    def __init__(self, seeds: list[int], vocab_size: int) -> None:
        self.block = max(1, min(64, 65536 // vocab_size))
        self.gens = [torch.Generator().manual_seed(s) for s in seeds]
        self.buf = torch.empty(len(seeds), self.block, vocab_size)
        self.used = [self.block] * len(seeds)

    def draw(self) -> torch.Tensor:
        """The next step's draws, (batch, vocab): a view while every row is at the same step
        (as in ``generate``), gathered when rows joined at different ticks (the server).

        They stay the next step's until ``advance``: a step that raises before it can be tried
        again with the same draws, so a row's text is as if it had never raised."""
        used = self.used
        for i, u in enumerate(used):
            if u == self.block:
                self.buf[i].exponential_(generator=self.gens[i])
                used[i] = 0
        first = used[0]
        if all(u == first for u in used):
            return self.buf[:, first]
        return self.buf[torch.arange(len(used)), torch.tensor(used)]

    def advance(self) -> None:
        """The step that used ``draw``'s draws is done: the next ``draw`` is the next step's."""
        self.used = [u + 1 for u in self.used]

    @overload
    def stream(self, arrays: Literal[False] = False) -> Iterator[torch.Tensor]: ...

    @overload
    def stream(self, arrays: Literal[True]) -> Iterator[np.ndarray]: ...

    def stream(self, arrays: bool = False) -> Iterator[torch.Tensor] | Iterator[np.ndarray]:
        """``draw``'s draws for a fresh ``RowNoise`` whose rows all step together, as views a
        block at a time (numpy's with ``arrays``): the same numbers without ``draw``'s
        bookkeeping on every step (for generate's batch-1 loop; not to be mixed with ``draw``)."""
        while True:
            for buf, gen in zip(self.buf, self.gens):
                buf.exponential_(generator=gen)
            yield from (self.buf.numpy().swapaxes(0, 1) if arrays else self.buf.unbind(1))

    def addresses(self) -> Iterator[int]:
        """``stream``'s draws for a fresh one-row ``RowNoise`` as the address of each step's
        float32 draws (for ``charrnn.model.gate_kernel``'s race), valid until the next step's."""
        if len(self.gens) != 1:
            raise ValueError("addresses() is for a single row")
        buf, gen = self.buf, self.gens[0]
        stride = buf.shape[-1] * buf.element_size()
        while True:
            buf[0].exponential_(generator=gen)
            yield from range(buf.data_ptr(), buf.data_ptr() + self.block * stride, stride)

    def keep(self, rows: list[int]) -> None:
        """Only these rows go on (the others' requests ended)."""
        self.gens = [self.gens[i] for i in rows]
        self.used = [self.used[i] for i in rows]
        self.buf = self.buf[torch.tensor(rows, dtype=torch.long)]

    def take(self, rows: list[int]) -> RowNoise:
        """These rows leave for a ``RowNoise`` of their own, each with its generator and its
        place in its draws (a row the server parks, or steps apart), and the others stay."""
        out = copy.copy(self)
        out.keep(rows)
        chosen = set(rows)
        self.keep([i for i in range(len(self.gens)) if i not in chosen])
        return out

    def extend(self, other: RowNoise) -> None:
        """Append ``other``'s rows (new requests joining the batch)."""
        self.gens += other.gens
        self.used += other.used
        self.buf = torch.cat([self.buf, other.buf])


def single_row_pick(
    opts: SampleOptions, logits: torch.Tensor, noise: RowNoise | None, kernels: Kernels | None = None
) -> Callable[[], int]:
    """``pick`` for one row's fixed ``logits`` buffer as a function returning the token as an
    int: plain temperature sampling (the default) through ``temperature_pick``, the very
    operations ``pick_rows`` makes (in ``kernels``, ``charrnn.model.gate_kernel``, where given);
    top-k/top-p call ``pick_rows`` itself with its filters built once, greedy its argmax."""
    # torch types Tensor.item() as any number, whatever the dtype: a token's (int64) is an int.
    if opts.picks_greedily:
        return lambda: logits.argmax(-1).item()  # type: ignore[return-value]
    if opts.top_k is not None or opts.top_p is not None:
        races = noise.stream() if noise is not None else None
        filters = RowFilters.of([opts], logits.shape[-1], logits.device)
        return lambda: pick_rows(logits, filters, next(races) if races is not None else None).item()  # type: ignore[return-value]
    return temperature_pick(logits, opts.temp, noise, kernels)


def temperature_pick(
    logits: torch.Tensor, temp: float, noise: RowNoise | None, kernels: Kernels | None = None
) -> Callable[[], int]:
    """``pick_rows``'s temperature sampling of the fixed ``logits`` buffer as a function of
    nothing, returning the token: the same division, softmax, division by the Exp(1) draws
    (``noise``'s, else the global generator's) and argmax, into fixed buffers; the arithmetic
    around the softmax in ``kernels`` (``charrnn.model.gate_kernel``) where given."""
    V = logits.shape[-1]
    scaled, probs, own = (torch.empty(1, V) for _ in range(3))
    softmax = torch.softmax
    if kernels is not None:
        temper, race = kernels.temper, kernels.race
        at = logits.data_ptr(), scaled.data_ptr(), probs.data_ptr(), own.data_ptr()
        draws = noise.addresses() if noise is not None else None

        def choose_fused() -> int:
            temper(temp, at[0], at[1], V)
            softmax(scaled, -1, out=probs)
            if draws is None:
                own.exponential_()
            return race(at[2], at[3] if draws is None else next(draws), V)

        # The buffers the addresses point into live as long as the function does (an attribute
        # set through vars: a function's type declares none).
        vars(choose_fused)["buffers"] = (logits, scaled, probs, own)
        return choose_fused
    races = noise.stream(arrays=True) if noise is not None else None
    logits_, scaled_, probs_, own_ = logits.numpy(), scaled.numpy(), probs.numpy(), own.numpy()
    temp32, divide = np.float32(temp), np.divide

    def choose() -> int:
        # torch's divisions overflow to inf (a tiny --temp) and divide by a zero draw silently;
        # numpy's would warn.
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            divide(logits_, temp32, out=scaled_)
            softmax(scaled, -1, out=probs)
            if races is None:
                own.exponential_()
            return int(divide(probs_, own_ if races is None else next(races), out=probs_).argmax())

    return choose
