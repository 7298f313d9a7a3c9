"""Generating text: the prime read once, then one token per step for every row, each row's
text decoded, cut at its length or first stop string, and yielded as it grows."""

from __future__ import annotations

import codecs
from typing import Iterator

import torch

from charrnn.model.network import CharRNN, State, map_state
from charrnn.model.single_row import SingleRow
from charrnn.model.stepper import Stepper
from charrnn.sampling.options import SampleOptions
from charrnn.sampling.pick import RowNoise, pick, single_row_pick


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
    return logits, map_state(lambda s: s.expand(-1, batch, -1).contiguous(), state)


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


def _single_row(stepper: Stepper, logits: torch.Tensor, state: State, opts: SampleOptions, pieces: list[bytes]):
    """generate's loop for one LSTM row (see ``charrnn.model.single_row``): the same tokens in the
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
