"""Choosing the next token from the logits: temperature, top-k, top-p and the random draws.

``pick`` takes one setting for the whole batch, ``pick_rows`` a setting per row (the server's
unrelated requests), ``temperature_pick`` is the batch-1 fast path; all make the same
operations on the same values, so a row's token never depends on which path chose it. Each
row's random draws come from its own generator (``RowNoise``), so a row's text depends on its
seed alone.
"""

from __future__ import annotations

from types import ModuleType
from typing import Callable, Iterator, Literal, overload

import numpy as np
import torch

from charrnn.sampling.options import SampleOptions


def filter_logits(logits: torch.Tensor, temp: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p), as logits with excluded tokens at -inf."""
    logits = logits.float() / temp
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs
        # Keep the smallest prefix whose mass reaches top_p: a token stays if the mass before
        # it is still below top_p (the most likely token always stays).
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def pick(
    logits: torch.Tensor, opts: SampleOptions, gen: torch.Generator | None = None, race: torch.Tensor | None = None
) -> torch.Tensor:
    """One token per row of ``logits`` (batch, vocab); ``race`` is each row's own Exp(1) draws
    (from ``RowNoise``), else they come from ``gen`` (or the global RNG) for the whole batch."""
    if opts.greedy:
        return logits.argmax(-1)
    probs = filter_logits(logits, opts.temp, opts.top_k, opts.top_p).softmax(-1)
    # One draw per row by the exponential race: argmax(p_k / E_k) with E_k ~ Exp(1) picks k with
    # probability p_k, what torch.multinomial does for one sample, without its per-call checks
    # (a quarter of the per-character overhead at batch 1). Excluded tokens have p = 0.
    if race is None:
        race = torch.empty_like(probs).exponential_(generator=gen)
    return probs.div_(race).argmax(-1)


def pick_rows(
    logits: torch.Tensor, temp: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None, race: torch.Tensor
) -> torch.Tensor:
    """``pick`` with settings per row, for a batch of unrelated requests: ``temp`` (batch, 1),
    0 meaning greedy; ``top_k`` (batch, 1) with the vocabulary size for none; ``top_p``
    (batch, 1) with inf for none. A row gets bit for bit the token ``pick`` gives it alone:
    the same operations on the same values, row by row."""
    greedy = temp == 0
    x = logits.float() / torch.where(greedy, 1.0, temp)
    if top_k is not None:
        kth = x.sort(-1, descending=True).values.gather(-1, top_k - 1)
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p is not None:
        sorted_x, order = torch.sort(x, dim=-1, descending=True)
        probs = sorted_x.softmax(-1)
        drop_sorted = probs.cumsum(-1) - probs >= top_p
        x = x.masked_fill(torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted), float("-inf"))
    tokens = x.softmax(-1).div_(race).argmax(-1)
    if bool(greedy.any()):
        tokens = torch.where(greedy[:, 0], logits.argmax(-1), tokens)
    return tokens


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
        (as in ``generate``), gathered when rows joined at different ticks (the server)."""
        used = self.used
        for i, u in enumerate(used):
            if u == self.block:
                self.buf[i].exponential_(generator=self.gens[i])
                used[i] = 0
        first = used[0]
        if all(u == first for u in used):
            race = self.buf[:, first]
        else:
            race = self.buf[torch.arange(len(used)), torch.tensor(used)]
        self.used = [u + 1 for u in used]
        return race

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

    def extend(self, other: "RowNoise") -> None:
        """Append ``other``'s rows (new requests joining the batch)."""
        self.gens += other.gens
        self.used += other.used
        self.buf = torch.cat([self.buf, other.buf])


def single_row_pick(
    opts: SampleOptions, logits: torch.Tensor, noise: RowNoise | None, kernels: ModuleType | None = None
) -> Callable[[], int]:
    """``pick`` for one row's fixed ``logits`` buffer as a function returning the token as an
    int: plain temperature sampling (the default) through ``single_row.temperature_pick``, the
    very operations ``pick`` makes (in ``kernels``, ``charrnn.model.gate_kernel``, where given); top-k/top-p
    call ``pick`` itself, greedy its argmax."""
    if opts.greedy:
        return lambda: logits.argmax(-1).item()
    if opts.top_k is not None or opts.top_p is not None:
        races = noise.stream() if noise is not None else None
        return lambda: pick(logits, opts, race=next(races) if races is not None else None).item()
    return temperature_pick(logits, opts.temp, noise, kernels)


def temperature_pick(
    logits: torch.Tensor, temp: float, noise: "RowNoise | None", kernels: ModuleType | None = None
) -> Callable[[], int]:
    """``sample.pick``'s temperature sampling of the fixed ``logits`` buffer as a function of
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

        # The buffers the addresses point into live as long as the function does.
        choose_fused.buffers = (logits, scaled, probs, own)
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
