"""Rows generated together: each step picks every row's token, adds it to the row's text, and
steps the model once for the whole batch.

``generate`` drives a ``Batch`` to its end; the server's engine drives one tick at a time,
rows joining between ticks and leaving as their requests end or are cancelled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from charrnn.model.network import State, join_states, select_state
from charrnn.model.stepper import Stepper
from charrnn.sampling.options import SampleOptions
from charrnn.sampling.pick import RowFilters, RowNoise, pick_rows
from charrnn.sampling.text import RowText


@dataclass(eq=False)
class Row:
    """One row: ``key`` is whom its text is for (generate's row number, the server's job),
    ``options`` how it picks (greedy, temperature, top-k, top-p)."""

    key: Any
    options: SampleOptions
    text: RowText
    done: bool = False


# One step's output: (row, text, finish) with finish None while the row goes on.
Event = tuple[Row, str, "str | None"]


class Batch:
    """The rows' logits, state, random draws and filters, stepped together.

    With ``compact`` a row that ends leaves the tensors (the server's rows are unrelated
    requests, coming and going); without it, it stays and falls silent, so the batch keeps the
    shape it started with and a row's products never change shape when a neighbour ends.
    """

    def __init__(self, stepper: Stepper, pieces: list[bytes], compact: bool) -> None:
        self.stepper = stepper
        self.pieces = pieces
        self.compact = compact
        self.rows: list[Row] = []
        self.logits: torch.Tensor | None = None
        self.state: State | None = None
        self.noise: RowNoise | None = None
        self._filters: RowFilters | None = None

    def join(self, rows: list[Row], logits: torch.Tensor, state: State, noise: RowNoise | None) -> None:
        """Add rows whose prompt has been read: their logits and state after it, and their draws
        (``noise`` None, for rows without a seed, draws from the global generator for the whole
        batch at once: only for a batch's one join)."""
        if self.logits is None or self.state is None:  # no rows yet
            self.logits, self.state, self.noise = logits, state, noise
        else:
            if self.noise is None or noise is None:
                raise ValueError("rows without a seed join only an empty batch")
            self.logits = torch.cat([self.logits, logits])
            self.state = join_states([self.state, state])
            self.noise.extend(noise)
        self.rows += rows
        self._filters = None

    @property
    def generating(self) -> int:
        """Rows that have not ended."""
        return sum(not row.done for row in self.rows)

    def clear(self) -> list[Row]:
        """Every row leaves at once (the server is stopping); the rows that were generating."""
        rows = [row for row in self.rows if not row.done]
        self.rows, self.logits, self.state, self.noise, self._filters = [], None, None, None, None
        return rows

    def step(self, cancelled: Callable[[Any], bool] | None = None) -> list[Event]:
        """Every generating row's next token and the text it adds (an event where there is text
        or an end), then one model step for the rows that go on; a row whose key is
        ``cancelled`` leaves without an event (its reader is gone)."""
        logits, state = self.logits, self.state
        if logits is None or state is None:
            raise ValueError("a batch without rows has no step")
        if self._filters is None:
            self._filters = RowFilters.of([row.options for row in self.rows], logits.shape[-1], logits.device)
        race = self.noise.draw().to(logits.device) if self.noise is not None else None
        tokens = pick_rows(logits, self._filters, race)
        events: list[Event] = []
        for row, token in zip(self.rows, tokens.tolist()):
            if row.done:
                continue
            if cancelled is not None and cancelled(row.key):
                row.done = True
                continue
            text, finish = row.text.add(self.pieces[token])
            if text or finish:
                events.append((row, text, finish))
            row.done = finish is not None
        going = [i for i, row in enumerate(self.rows) if not row.done]
        if not going:
            if self.compact:
                self.clear()
            return events
        if self.compact and len(going) < len(self.rows):
            tokens, state = self._keep(going, tokens, state)
        self.logits, self.state = self.stepper.step(tokens, state)
        return events

    def _keep(self, going: list[int], tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Only the ``going`` rows (some) stay; their tokens and state."""
        self.rows = [self.rows[i] for i in going]
        self._filters = None
        index = torch.tensor(going, device=tokens.device)
        if self.noise is not None:
            self.noise.keep(going)
        return tokens[index], select_state(state, index)
