"""Continuous batching: one worker thread per model steps every active request as one batch.

An RNN's whole memory of a request is its state, a few kilobytes, so unrelated requests can
share each step: a request joins the batch at the next tick once its prompt has been read in
one full-sequence pass, and leaves at its length, a stop string, or a cancel. The worker is
the only thread that touches the model; it hands each tick's text to a ``sink`` callback in one
call, so a web server wakes its event loop at most once per tick rather than once per character.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from charrnn.data.vocab import Vocab
from charrnn.model.network import CharRNN
from charrnn.model.stepper import Stepper
from charrnn.sampling.batch import Batch, Row
from charrnn.sampling.generate import start_ids, warm_up
from charrnn.sampling.options import SampleOptions
from charrnn.sampling.pick import RowNoise
from charrnn.sampling.text import LENGTH, STOP, RowText


@dataclass(eq=False)
class Job:
    """One generated text (one choice of a completion request), with its own settings.

    ``temp`` 0 is greedy. ``listener`` and ``index`` are the caller's: where the sink should
    route this job's text. ``tokens`` is how many tokens it generated, counted by its last event
    (what the usage reports).
    """

    prompt_ids: list[int]
    max_tokens: int
    seed: int
    temp: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    stops: list[str] = field(default_factory=list)
    listener: Any = None
    index: int = 0
    tokens: int = 0
    cancelled: bool = False


# One tick's output: (job, text, finish) with finish None while the job goes on.
Event = tuple[Job, str, "str | None"]
Sink = Callable[[list[Event]], None]


class Engine:
    """The worker that owns one model. ``submit`` and ``cancel`` are safe from any thread."""

    def __init__(
        self, model: CharRNN, vocab: Vocab, sink: Sink, device: torch.device | str = "cpu", threads: int | None = None
    ) -> None:
        self.model = model.eval().to(device)
        self.threads = threads
        self.vocab = vocab
        self.device = torch.device(device)
        self.sink = sink
        # The precision `charrnn sample` steps in by default, so a seeded request gets its text.
        stepper = Stepper(self.model, "auto" if self.device.type == "cpu" else "float32")
        # Compacting: a row leaves the batch's tensors when its request ends.
        self.batch = Batch(stepper, vocab.token_bytes(), compact=True)
        self._pending: list[list[Job]] = []
        self._wake = threading.Condition()
        self._running = True
        self._closing = self._end_now = False
        self._thread = threading.Thread(target=self._work, name="charrnn-engine", daemon=True)
        self._thread.start()

    @property
    def active(self) -> int:
        """Jobs in the batch or waiting to join it."""
        with self._wake:
            return len(self.batch.rows) + sum(len(group) for group in self._pending)

    def submit(self, jobs: list[Job]) -> None:
        """Queue jobs to join the batch. Waiting jobs that share a prompt (the n choices of a
        request, clients that arrive together with the same text) read it once."""
        with self._wake:
            if self._closing:
                self.sink([(job, "", STOP) for job in jobs])
                return
            self._pending.append(jobs)
            self._wake.notify()

    def cancel(self, jobs: list[Job]) -> None:
        """Drop these jobs at the next tick, without a last event (their reader is gone)."""
        for job in jobs:
            job.cancelled = True

    def finish_all(self) -> None:
        """End every job now with a last event, and refuse new ones (the server is stopping)."""
        with self._wake:
            self._closing = self._end_now = True
            self._wake.notify()

    def close(self, timeout: float = 1.0) -> None:
        self.finish_all()
        with self._wake:
            self._running = False
            self._wake.notify()
        self._thread.join(timeout)

    def _work(self) -> None:
        if self.threads is not None:
            # torch's thread count is per calling thread: this one is the model's.
            torch.set_num_threads(self.threads)
        with torch.no_grad():
            while True:
                with self._wake:
                    while self._running and not (self._pending or self.batch.rows or self._end_now):
                        self._wake.wait()
                    groups, self._pending = self._pending, []
                    end, self._end_now = self._end_now or not self._running, False
                    running = self._running
                if end:
                    self._end_all(groups)
                    if not running:
                        return
                    continue
                waiting = self._admit(groups)
                if waiting:
                    with self._wake:
                        self._pending[:0] = waiting
                if self.batch.rows:
                    self._tick()

    def _end_all(self, groups: list[list[Job]]) -> None:
        jobs = [_counted(row) for row in self.batch.clear()] + [job for group in groups for job in group]
        self.sink([(job, "", STOP) for job in jobs if not job.cancelled])

    def _admit(self, groups: list[list[Job]]) -> list[list[Job]]:
        """Read the first waiting prompt in one full-sequence pass, once for every waiting job
        that starts from it, and add their rows to the batch; jobs with other prompts wait for
        the next ticks (returned), so a tick waits for at most one prompt read and the first
        request's text starts after its own read alone."""
        jobs = [job for group in groups for job in group if not job.cancelled]
        done: list[Event] = [(job, "", LENGTH) for job in jobs if job.max_tokens <= 0]
        if done:
            self.sink(done)
        jobs = [job for job in jobs if job.max_tokens > 0]
        if not jobs:
            return []
        ids = start_ids(self.vocab, jobs[0].prompt_ids)
        now = [job for job in jobs if start_ids(self.vocab, job.prompt_ids) == ids]
        later = [job for job in jobs if start_ids(self.vocab, job.prompt_ids) != ids]
        logits, state = warm_up(self.model, ids, len(now))
        noise = RowNoise([job.seed for job in now], logits.shape[-1])
        self.batch.join([_row(job) for job in now], logits, state, noise)
        return [later] if later else []

    def _tick(self) -> None:
        """One step of the batch; its text to the sink in one call (cancelled jobs leave silently)."""
        events = self.batch.step(lambda job: job.cancelled)
        if events:
            self.sink([(row.key if finish is None else _counted(row), text, finish) for row, text, finish in events])


def _row(job: Job) -> Row:
    """A job's row: it picks as ``charrnn sample`` with its settings, and ends after ``max_tokens``
    tokens (its draws are the batch's ``RowNoise``, seeded by the job)."""
    # Greedy at temperature 0, and at one that is 0 as the float32 the logits are divided in.
    greedy = torch.tensor(job.temp, dtype=torch.float32).item() == 0
    options = SampleOptions(temp=job.temp, greedy=greedy, top_k=job.top_k, top_p=job.top_p)
    return Row(job, options, RowText(job.max_tokens, job.stops, per_token=True))


def _counted(row: Row) -> Job:
    """The row's job, with the tokens it generated (set once, as it ends)."""
    job: Job = row.key
    job.tokens = row.text.count
    return job
