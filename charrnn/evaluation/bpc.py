"""Bits per character of a text under a model, over the whole text with the state carried."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.data.batches import val_streams
from charrnn.data.vocab import Vocab
from charrnn.model.network import CharRNN, select_state
from charrnn.runtime.distributed import World, sum_values

# A stream started from a zero state pays ~11 extra bits before its context builds up (measured
# on tinyshakespeare: 32 streams over the 111k-char val split read 0.003 bpc worse than 2, 128
# streams 0.012 worse). So every stream but the first reads BURN_IN tokens before the part it
# scores, only to build its state, and the text can run as many short rows in parallel: one row
# walks the recurrence one token at a time, so the rows, not the tokens, set the speed.
TOKENS_PER_STREAM = 2048
BURN_IN = 256
MAX_STREAMS = 256


@dataclass(frozen=True)
class Score:
    nats: float
    tokens: int
    chars: int

    @property
    def bpc(self) -> float:
        """Bits per character: total cross-entropy in bits over the characters predicted."""
        return self.nats / math.log(2) / max(1, self.chars)

    @property
    def bits_per_token(self) -> float:
        return self.nats / math.log(2) / max(1, self.tokens)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats / max(1, self.tokens))


def _ids(a: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a).astype(np.int64)).to(device)


def default_streams(n: int) -> int:
    """Rows a text of ``n`` ids is scored as: one per 2k predictions, at most ``MAX_STREAMS``."""
    return max(1, min(MAX_STREAMS, (n - 1) // TOKENS_PER_STREAM))


def tokens_read(ids: np.ndarray) -> int:
    """How many tokens ``evaluate`` runs through the model to score ``ids`` with its default
    rows: every prediction once, plus each row's burn-in."""
    inputs, _, _, tail, _ = val_streams(ids, default_streams(len(ids)), BURN_IN)
    return inputs.size + len(tail)


@torch.no_grad()
def evaluate(
    model: CharRNN,
    ids: np.ndarray,
    device: torch.device,
    streams: int | None = None,
    window: int = 256,
    chars: int | None = None,
    world: World | None = None,
    burn_in: int = BURN_IN,
) -> Score:
    """Score every prediction of ``ids`` exactly once.

    The text runs as ``streams`` contiguous rows in parallel (by default one per 2k tokens), each
    after the first reading the ``burn_in`` tokens before its part unscored, so it starts with
    context instead of a zero state; the few leftover positions continue the last row's state,
    so nothing is skipped and nothing counted twice.
    ``chars`` is how many characters the predicted tokens (all but the first) decode to; it
    defaults to one per token (a character vocabulary), and makes subword scores comparable.
    Under torchrun each rank scores a block of the rows and the totals are summed, which gives
    the single-process result (the rank with the last row also scores the tail).
    """
    was_training = model.training
    model.eval()
    if streams is None:
        streams = default_streams(len(ids))
    inputs, targets, burn_in, tail_in, tail_tgt = val_streams(ids, streams, burn_in)
    rows = inputs.shape[0]
    lo, hi = 0, rows
    if world is not None and world.active:
        per = -(-rows // world.size)
        lo, hi = min(rows, world.rank * per), min(rows, (world.rank + 1) * per)
        inputs, targets = inputs[lo:hi], targets[lo:hi]
    holds_last = lo < hi == rows
    burning = torch.arange(lo, hi, device=device) > 0  # the rows whose first columns are burn-in
    total = torch.zeros((), dtype=torch.float64, device=device)
    state = None
    for a in range(0, inputs.shape[1] if len(inputs) else 0, window):
        logits, state = model(_ids(inputs[:, a : a + window], device), state)
        y = _ids(targets[:, a : a + window], device)
        losses = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none").view(y.shape)
        if a < burn_in:
            losses[burning, : burn_in - a] = 0
        total += losses.sum(dtype=torch.float64)
    if len(tail_in) and holds_last:
        last = select_state(state, slice(-1, None)) if state is not None else None
        logits, _ = model(_ids(tail_in, device)[None], last)
        total += F.cross_entropy(logits[0].float(), _ids(tail_tgt, device), reduction="sum").double()
    model.train(was_training)
    if world is not None:
        total = sum_values(world, total)
    n = len(ids) - 1
    return Score(nats=float(total), tokens=n, chars=n if chars is None else chars)


def text_ids(vocab: Vocab, text: str, skip_unknown: bool = False) -> tuple[np.ndarray, int]:
    """``text`` as ids to score, and how many characters outside the vocabulary were dropped
    (``skip_unknown``; otherwise they are an error)."""
    from charrnn.data.prepare import encode_text
    from charrnn.data.vocab import describe_chars
    from charrnn.errors import CharrnnError

    missing = vocab.missing(text)
    skipped = 0
    if missing:
        if not skip_unknown:
            raise CharrnnError(
                f"text has characters the vocabulary lacks: {describe_chars(missing)} (use --unknown skip to drop them)"
            )
        gone = set(missing)
        kept = "".join(c for c in text if c not in gone)
        skipped, text = len(text) - len(kept), kept
    ids = encode_text(vocab, text)
    if len(ids) < 2:
        raise CharrnnError("text is too short to evaluate (needs at least 2 tokens)")
    return ids, skipped


def score_text(model: CharRNN, vocab: Vocab, text: str, skip_unknown: bool = False) -> tuple[Score, int]:
    """The score of ``text`` (as ``charrnn eval`` reports it) and how many characters outside
    the vocabulary were dropped."""
    ids, skipped = text_ids(vocab, text, skip_unknown)
    return evaluate(model, ids, torch.device("cpu"), chars=vocab.count_chars(ids[1:])), skipped
