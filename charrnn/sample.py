"""Generating text: the sampling controls (temperature, top-k, top-p, per-row random streams,
stop strings) around the one-token step of ``charrnn.stepper``."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable, Iterator, Literal, overload

import numpy as np
import torch

from charrnn.errors import CharrnnError
from charrnn.model import CharRNN, State
from charrnn.precision import STEP_PRECISIONS
from charrnn.single_row import SingleRow, temperature_pick
from charrnn.stepper import Stepper


@dataclass
class SampleOptions:
    length: int = 1000
    temp: float = 0.8
    greedy: bool = False
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stops: list[str] = field(default_factory=list)
    keep_stop: bool = False
    precision: str = "auto"

    def check(self) -> None:
        if self.length < 0:
            raise CharrnnError(f"--length must be >= 0 (got {self.length})")
        if not self.greedy and not self.temp > 0:
            raise CharrnnError(f"--temp must be > 0 (got {self.temp})")
        if self.top_k is not None and self.top_k < 1:
            raise CharrnnError(f"--top-k must be >= 1 (got {self.top_k})")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise CharrnnError(f"--top-p must be in (0, 1] (got {self.top_p})")
        if any(s == "" for s in self.stops):
            raise CharrnnError("--stop must not be empty")
        if self.precision not in STEP_PRECISIONS:
            raise CharrnnError(f"--precision must be one of {', '.join(STEP_PRECISIONS)} (got {self.precision!r})")


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
        float32 draws (for ``charrnn.fused``'s race), valid until the next step's."""
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


def encode_prime(vocab, prime: str, unknown: str = "error", what: str = "prime text") -> list[int]:
    """Prime text (or any ``what`` a user gives) as ids; characters outside the vocabulary are
    an error or skipped."""
    from charrnn.vocab import describe_chars

    missing = vocab.missing(prime)
    if missing:
        if unknown != "skip":
            raise CharrnnError(
                f"{what} has characters the vocabulary lacks: {describe_chars(missing)} "
                "(use --unknown skip to drop them)"
            )
        prime = "".join(c for c in prime if c not in set(missing))
    return vocab.encode(prime).tolist()


def start_ids(vocab, prime_ids: list[int]) -> list[int]:
    """What the model reads before generating: the prime, or a newline (start of a line)."""
    if prime_ids:
        return prime_ids
    newline = vocab.missing("\n") == []
    return vocab.encode("\n").tolist() if newline else [0]


@torch.no_grad()
def warm_up(model: CharRNN, ids: list[int], batch: int) -> tuple[torch.Tensor, State]:
    """Run the start text through the full-sequence model; the logits after it and the state.

    It is read once and copied to every row, so each row starts bit for bit as a lone run does
    (a batched pass may round differently)."""
    logits, state = model(torch.tensor(ids, dtype=torch.long, device=model.embed.weight.device)[None])
    logits = logits[:, -1].float().expand(batch, -1).contiguous()
    if isinstance(state, tuple):
        return logits, tuple(s.expand(-1, batch, -1).contiguous() for s in state)
    return logits, state.expand(-1, batch, -1).contiguous()


class StopCutter:
    """Emits a row's text as it grows, holding back only what could still begin a stop string."""

    def __init__(self, stops: list[str], keep: bool) -> None:
        self.stops = stops
        self.keep = keep
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.pending = ""
        self.done = False

    def feed(self, text: str) -> str:
        self.pending += text
        if self.stops:
            hits = [(self.pending.find(s), s) for s in self.stops if s in self.pending]
            if hits:
                pos, stop = min(hits)
                self.done = True
                out = self.pending[: pos + (len(stop) if self.keep else 0)]
                self.pending = ""
                return out
        if self.hold == 0:
            out, self.pending = self.pending, ""
        else:
            out, self.pending = self.pending[: -self.hold], self.pending[-self.hold :]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class RowText:
    """One row's text as its tokens arrive: bytes decoded as they complete a character (a
    subword's byte pieces may split one), cut after ``--length`` characters or at the first
    stop string."""

    def __init__(self, opts: SampleOptions) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.cutter = StopCutter(opts.stops, opts.keep_stop) if opts.stops else None
        self.length = opts.length
        self.count = 0

    def add(self, token_bytes: bytes) -> tuple[str, bool]:
        """The text this token adds, and whether the row is finished."""
        piece = self.decoder.decode(token_bytes)
        room = self.length - self.count
        if len(piece) > room:
            piece = piece[:room]
        self.count += len(piece)
        finished = self.count >= self.length
        if self.cutter is not None:
            piece = self.cutter.feed(piece)
            if self.cutter.done:
                finished = True
            elif finished:
                piece += self.cutter.flush()
        return piece, finished


def single_row_pick(
    opts: SampleOptions, logits: torch.Tensor, noise: RowNoise | None, kernels: ModuleType | None = None
) -> Callable[[], int]:
    """``pick`` for one row's fixed ``logits`` buffer as a function returning the token as an
    int: plain temperature sampling (the default) through ``single_row.temperature_pick``, the
    very operations ``pick`` makes (in ``kernels``, ``charrnn.fused``, where given); top-k/top-p
    call ``pick`` itself, greedy its argmax."""
    if opts.greedy:
        return lambda: logits.argmax(-1).item()
    if opts.top_k is not None or opts.top_p is not None:
        races = noise.stream() if noise is not None else None
        return lambda: pick(logits, opts, race=next(races) if races is not None else None).item()
    return temperature_pick(logits, opts.temp, noise, kernels)


def _single_row(stepper: Stepper, logits: torch.Tensor, state: State, opts: SampleOptions, pieces: list[bytes]):
    """generate's loop for one LSTM row (see ``charrnn.single_row``): the same tokens in the
    same order of random draws, with a fraction of the calls per character."""
    row = SingleRow(stepper, logits, state)
    noise = RowNoise([opts.seed], logits.shape[-1]) if opts.seed is not None and not opts.greedy else None
    choose = single_row_pick(opts, row.logits, noise, row.kernels)
    text = RowText(opts)
    while True:
        token = choose()
        piece, finished = text.add(pieces[token])
        if piece:
            yield 0, piece
        if finished:
            return
        row.step(token)


def generate(
    model: CharRNN, vocab, opts: SampleOptions, prime_ids: list[int], num_samples: int = 1
) -> Iterator[tuple[int, str]]:
    """Yield (row, text) pieces as ``num_samples`` rows are generated together in one batch.

    Each row ends after ``opts.length`` characters or at its first stop string. With a seed S
    row i draws from its own stream seeded S + i, so it is the text a lone run with seed S + i
    gives.
    """
    opts.check()
    model.eval()
    stepper = Stepper(model, opts.precision)
    logits, state = warm_up(model, start_ids(vocab, prime_ids), num_samples)
    pieces = vocab.token_bytes()
    if num_samples == 1 and SingleRow.handles(stepper):
        # Not under no_grad: every tensor it touches is detached, and a no_grad generator
        # switches autograd off and on again around every yield (~10 us of a character's ~300).
        yield from _single_row(stepper, logits, state, opts, pieces)
    else:
        yield from _rows(stepper, logits, state, opts, pieces)


@torch.no_grad()
def _rows(stepper: Stepper, logits: torch.Tensor, state: State, opts: SampleOptions, pieces: list[bytes]):
    """generate's loop for a batch of rows (or any cell at batch 1), stepped together."""
    num_samples = logits.shape[0]
    texts = [RowText(opts) for _ in range(num_samples)]
    active = list(range(num_samples))
    noise = None
    if opts.seed is not None and not opts.greedy:
        noise = RowNoise([opts.seed + i for i in range(num_samples)], logits.shape[-1])
    while active:
        token_list = pick(logits, opts, race=noise.draw() if noise is not None else None).tolist()
        still = []
        for row in active:
            piece, finished = texts[row].add(pieces[token_list[row]])
            if piece:
                yield row, piece
            if not finished:
                still.append(row)
        active = still
        if active:
            logits, state = stepper.step(torch.tensor(token_list), state)


@torch.no_grad()
def beam_search(model: CharRNN, vocab, prime_ids: list[int], width: int, length: int) -> tuple[str, float]:
    """The most likely continuation of ``length`` tokens found with ``width`` beams (for a
    subword vocabulary the text is then cut to ``length`` characters).

    The greedy path runs alongside as one extra row that is never pruned, so the result is
    never less likely than greedy decoding (plain beam search can, rarely, lose it).
    Returns the text and its log-probability in nats.
    """
    if width < 1:
        raise CharrnnError(f"--beam-width must be >= 1 (got {width})")
    model.eval()
    stepper = Stepper(model)
    logits, state = warm_up(model, start_ids(vocab, prime_ids), 1)
    logp = logits.log_softmax(-1)
    V = logp.shape[-1]
    scores = torch.zeros(1, dtype=torch.float64)
    seqs = torch.zeros(1, 0, dtype=torch.long)
    greedy_score = torch.zeros((), dtype=torch.float64)
    greedy_seq: list[int] = []
    greedy_logp, greedy_state = logp[0], state
    for _ in range(length):
        g = int(greedy_logp.argmax())
        greedy_score += float(greedy_logp[g])
        greedy_seq.append(g)
        total = (scores[:, None] + logp.double()).flatten()
        k = min(width, total.numel())
        top = torch.topk(total, k)
        rows, toks = top.indices // V, top.indices % V
        scores = top.values
        seqs = torch.cat([seqs[rows], toks[:, None]], 1)
        state = tuple(s[:, rows] for s in state) if isinstance(state, tuple) else state[:, rows]
        # One step for the beams and the greedy row together.
        both = torch.cat([toks, torch.tensor([g])])
        if isinstance(state, tuple):
            joint = tuple(torch.cat([s, gs], 1) for s, gs in zip(state, greedy_state))
        else:
            joint = torch.cat([state, greedy_state], 1)
        out, joint = stepper.step(both, joint)
        out = out.log_softmax(-1)
        logp, greedy_logp = out[:-1], out[-1]
        if isinstance(joint, tuple):
            state, greedy_state = tuple(s[:, :-1] for s in joint), tuple(s[:, -1:] for s in joint)
        else:
            state, greedy_state = joint[:, :-1], joint[:, -1:]
    best = int(scores.argmax())
    if float(greedy_score) > float(scores[best]):
        return vocab.decode(greedy_seq)[:length], float(greedy_score)
    return vocab.decode(seqs[best].tolist())[:length], float(scores[best])
