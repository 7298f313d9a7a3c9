"""Generating text: the prime read once, then one token per step for every row, each row's
text decoded, cut at its length or first stop string, and yielded as it grows."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

import torch

from charrnn.data.vocab import Vocab
from charrnn.model.network import CharRNN, State, map_state
from charrnn.model.single_row import SingleRow
from charrnn.model.stepper import Stepper
from charrnn.runtime.kernels import let_mkl_choose_threads
from charrnn.sampling import precision
from charrnn.sampling.batch import Batch, Row, RowsFailed
from charrnn.sampling.options import SampleOptions
from charrnn.sampling.pick import RowNoise, single_row_pick
from charrnn.sampling.text import RowText


def start_ids(vocab: Vocab, prime_ids: list[int]) -> list[int]:
    """What the model reads before generating: the prime, or a newline (start of a line)."""
    if prime_ids:
        return prime_ids
    newline = vocab.missing("\n") == []
    ids: list[int] = vocab.encode("\n").tolist() if newline else [0]
    return ids


# Tokens of a prompt read in one full-sequence pass: the server reads a chunk per tick, so a long
# prompt never holds up the rows already generating for more than one chunk's pass.
PROMPT_CHUNK = 256


@torch.no_grad()
def read_chunks(model: CharRNN, ids: list[int]) -> Iterator[tuple[torch.Tensor, State]]:
    """Read the start text ``PROMPT_CHUNK`` tokens at a time, each pass from the state the last
    left: after each chunk, the logits after its last token (1, vocab) and the state. Every
    caller reads in these chunks, so a prompt is read the same way wherever it is read."""
    device = model.embed.weight.device
    state: State | None = None
    for start in range(0, len(ids), PROMPT_CHUNK):
        chunk = torch.tensor(ids[start : start + PROMPT_CHUNK], dtype=torch.long, device=device)[None]
        logits, state = model(chunk, state)
        yield logits[:, -1], state


def copies(logits: torch.Tensor, state: State, batch: int) -> tuple[torch.Tensor, State]:
    """A read's logits and state copied to ``batch`` rows."""
    logits = logits.float().expand(batch, -1).contiguous()
    return logits, map_state(lambda s: s.expand(-1, batch, -1).contiguous(), state)


def warm_up(model: CharRNN, ids: list[int], batch: int) -> tuple[torch.Tensor, State]:
    """Run the start text through the full-sequence model; the logits after it and the state.

    It is read once and copied to every row, so each row starts bit for bit as a lone run does
    (a batched pass may round differently)."""
    ((logits, state),) = deque(read_chunks(model, ids), maxlen=1)  # the last chunk's
    return copies(logits, state, batch)


def _single_row(
    stepper: Stepper, logits: torch.Tensor, state: State, opts: SampleOptions, pieces: list[bytes]
) -> Iterator[tuple[int, str]]:
    """generate's loop for one LSTM row (see ``charrnn.model.single_row``): the same tokens in the
    same order of random draws, with a fraction of the calls per character."""
    row = SingleRow(stepper, logits, state)
    noise = RowNoise([opts.seed], logits.shape[-1]) if opts.seed is not None and not opts.picks_greedily else None
    choose = single_row_pick(opts, row.logits, noise, row.kernels)
    text = RowText(opts.length, opts.stops, opts.keep_stop)
    while True:
        token = choose()
        piece, finish = text.add(pieces[token])
        if piece:
            yield 0, piece
        if finish is not None:
            return
        row.step(token)


def generate(
    model: CharRNN, vocab: Vocab, opts: SampleOptions, prime_ids: list[int], num_samples: int = 1
) -> Iterator[tuple[int, str]]:
    """Yield (row, text) pieces as ``num_samples`` rows are generated together in one batch.

    Each row ends after ``opts.length`` characters or at its first stop string. With a seed S
    row i draws from its own stream seeded S + i, so it is the text a lone run with seed S + i
    gives.
    """
    opts.check()
    model.eval()
    # A caller's torch.set_num_threads leaves MKL running a one-row step's tanh on every thread.
    let_mkl_choose_threads()
    stepper = Stepper(model, precision.choose(model, opts.precision, model.embed.weight.device).name)
    logits, state = warm_up(model, start_ids(vocab, prime_ids), num_samples)
    pieces = vocab.token_bytes()
    if num_samples == 1 and SingleRow.handles(stepper):
        # Not under no_grad: every tensor it touches is detached, and a no_grad generator
        # switches autograd off and on again around every yield (~10 us of a character's ~300).
        yield from _single_row(stepper, logits, state, opts, pieces)
    else:
        yield from _rows(stepper, logits, state, opts, pieces)


@torch.no_grad()
def _rows(
    stepper: Stepper, logits: torch.Tensor, state: State, opts: SampleOptions, pieces: list[bytes]
) -> Iterator[tuple[int, str]]:
    """generate's loop for a batch of rows (or any cell at batch 1), stepped together to the end."""
    num_samples = logits.shape[0]
    noise = None
    if opts.seed is not None and not opts.picks_greedily:
        noise = RowNoise([opts.seed + i for i in range(num_samples)], logits.shape[-1])
    batch = Batch(stepper, pieces, compact=False)
    batch.join(
        [Row(i, opts, RowText(opts.length, opts.stops, opts.keep_stop)) for i in range(num_samples)],
        logits,
        state,
        noise,
    )
    while batch.generating:
        try:
            events = batch.step()
        except RowsFailed as e:  # as the one-row loop: the row's own error
            raise e.__cause__ or e from None
        for row, piece, _ in events:
            if piece:
                yield row.key, piece
