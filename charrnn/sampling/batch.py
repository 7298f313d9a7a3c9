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


class RowsFailed(Exception):
    """Some rows' text raised once the step was taken: they ended, the others' step stands.

    The step cannot be tried again (the draws and the other rows' text have moved on), so it
    carries what the rows that went on added (``events``) and the rows that failed (``rows``).
    """

    def __init__(self, rows: list[Row], events: list[Event], first: Exception) -> None:
        super().__init__(f"{len(rows)} row(s) failed adding their text: {type(first).__name__}: {first}")
        self.rows, self.events = rows, events


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

    def take(self, rows: list[int]) -> Batch:
        """These rows (by place) leave for a batch of their own, with their logits, state and
        draws, and the others stay: the server parks a row whose reader is behind, or steps
        rows apart to find the one whose step raises. ``join`` brings them back."""
        out = Batch(self.stepper, self.pieces, self.compact)
        if not rows or self.logits is None or self.state is None:
            return out
        index = torch.tensor(rows, device=self.logits.device)
        noise = self.noise.take(rows) if self.noise is not None else None
        out.rows, out.logits, out.noise = [self.rows[i] for i in rows], self.logits[index], noise
        out.state = select_state(self.state, index)
        chosen = set(rows)
        rest = [i for i in range(len(self.rows)) if i not in chosen]
        if not rest:
            self.clear()
            return out
        index = torch.tensor(rest, device=self.logits.device)
        self.rows, self.logits, self._filters = [self.rows[i] for i in rest], self.logits[index], None
        self.state = select_state(self.state, index)
        return out

    def step(self, cancelled: Callable[[Any], bool] | None = None) -> list[Event]:
        """Every generating row's next token and the text it adds (an event where there is text
        or an end), and one model step; a row whose key is ``cancelled`` leaves without an
        event (its reader is gone).

        The model steps every row before any row's text or draws change, so a step that raises
        there changes nothing and can be tried again (the server's engine tries a part of the
        batch at a time, to fail only the row whose step raises). After it the step is taken: a
        row whose text raises ends, the others keep theirs, and ``RowsFailed`` says which. A row
        that ends on this step is stepped too, then dropped: once per row, where stepping first
        saves a retry's text."""
        logits, state = self.logits, self.state
        if logits is None or state is None:
            raise ValueError("a batch without rows has no step")
        if self._filters is None:
            self._filters = RowFilters.of([row.options for row in self.rows], logits.shape[-1], logits.device)
        race = self.noise.draw().to(logits.device) if self.noise is not None else None
        tokens = pick_rows(logits, self._filters, race)
        next_logits, next_state = self.stepper.step(tokens, state)
        if self.noise is not None:
            self.noise.advance()
        self.logits, self.state = next_logits, next_state
        events: list[Event] = []
        failed: list[tuple[Row, Exception]] = []
        for row, token in zip(self.rows, tokens.tolist()):
            if row.done:
                continue
            if cancelled is not None and cancelled(row.key):
                row.done = True
                continue
            try:
                text, finish = row.text.add(self.pieces[token])
            except Exception as e:  # noqa: BLE001 - one row's text fails that row, not the step
                row.done = True
                failed.append((row, e))
                continue
            if text or finish:
                events.append((row, text, finish))
            row.done = finish is not None
        ended = [i for i, row in enumerate(self.rows) if row.done]
        if self.compact and ended:
            self.take(ended)
        if failed:
            raise RowsFailed([row for row, _ in failed], events, failed[0][1]) from failed[0][1]
        return events
