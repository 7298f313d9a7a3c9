"""Continuous batching: one worker thread per model steps every active request as one batch.

An RNN's whole memory of a request is its state, a few kilobytes, so unrelated requests can
share each step: a request joins the batch at the next tick once its prompt has been read in
one full-sequence pass, and leaves at its length, a stop string, or a cancel. The worker is
the only thread that touches the model; it hands each tick's text to a ``sink`` callback in one
call, so a web server wakes its event loop at most once per tick rather than once per character.
"""

from __future__ import annotations

import codecs
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from charrnn.model.network import CharRNN, join_states, select_state
from charrnn.sampling.generate import StopCutter, start_ids, warm_up
from charrnn.sampling.pick import RowNoise, pick_rows
from charrnn.model.stepper import Stepper

# What a job's last event says: it reached max_tokens, or a stop string (or the server stopped).
LENGTH, STOP = "length", "stop"


@dataclass(eq=False)
class Job:
    """One generated text (one choice of a completion request), with its own settings.

    ``temp`` 0 is greedy. ``listener`` and ``index`` are the caller's: where the sink should
    route this job's text.
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


class _Row:
    """A job's place in the batch: its byte decoder and stop cutter, as ``generate`` keeps them."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.cutter = StopCutter(job.stops, False) if job.stops else None

    def advance(self, piece: bytes) -> tuple[str, str | None]:
        """The text one more token adds, and the finish reason if it was the last."""
        job = self.job
        text = self.decoder.decode(piece)
        job.tokens += 1
        finish = LENGTH if job.tokens >= job.max_tokens else None
        if finish is not None:
            text += self.decoder.decode(b"", final=True)
        if self.cutter is not None:
            text = self.cutter.feed(text)
            if self.cutter.done:
                finish = STOP
            elif finish is not None:
                text += self.cutter.flush()
        return text, finish


class Engine:
    """The worker that owns one model. ``submit`` and ``cancel`` are safe from any thread."""

    def __init__(self, model: CharRNN, vocab, sink: Sink, device: torch.device | str = "cpu",
                 threads: int | None = None) -> None:
        self.model = model.eval().to(device)
        self.threads = threads
        self.vocab = vocab
        self.device = torch.device(device)
        self.sink = sink
        # The precision `charrnn sample` steps in by default, so a seeded request gets its text.
        self.stepper = Stepper(self.model, "auto" if self.device.type == "cpu" else "float32")
        self.pieces = vocab.token_bytes()
        self.rows: list[_Row] = []
        self._pending: list[list[Job]] = []
        self._wake = threading.Condition()
        self.logits: torch.Tensor | None = None
        self.state = None
        self.noise: RowNoise | None = None
        self._settings: tuple | None = None
        self._running = True
        self._closing = self._end_now = False
        self._thread = threading.Thread(target=self._work, name="charrnn-engine", daemon=True)
        self._thread.start()

    @property
    def active(self) -> int:
        """Jobs in the batch or waiting to join it."""
        with self._wake:
            return len(self.rows) + sum(len(group) for group in self._pending)

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
                    while self._running and not (self._pending or self.rows or self._end_now):
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
                if self.rows:
                    self._tick()

    def _end_all(self, groups: list[list[Job]]) -> None:
        jobs = [row.job for row in self.rows] + [job for group in groups for job in group]
        self.rows = []
        self.sink([(job, "", STOP) for job in jobs if not job.cancelled])

    def _admit(self, groups: list[list[Job]]) -> list[list[Job]]:
        """Read the first waiting prompt in one full-sequence pass, once for every waiting job
        that starts from it, and add their rows to the batch; jobs with other prompts wait for
        the next ticks (returned), so a tick waits for at most one prompt read and the first
        request's text starts after its own read alone."""
        jobs = [job for group in groups for job in group if not job.cancelled]
        done = [(job, "", LENGTH) for job in jobs if job.max_tokens <= 0]
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
        if self.rows:
            self.logits = torch.cat([self.logits, logits])
            self.state = join_states([self.state, state])
            self.noise.extend(noise)
        else:
            self.logits, self.state, self.noise = logits, state, noise
        self.rows += [_Row(job) for job in now]
        self._settings = None
        return [later] if later else []

    def _tick(self) -> None:
        """Pick every row's next token, hand out the text, drop ended rows, step the rest."""
        if self._settings is None:
            self._settings = _row_settings([row.job for row in self.rows], self.logits.shape[-1], self.device)
        race = self.noise.draw().to(self.device)
        tokens = pick_rows(self.logits, *self._settings, race)
        events: list[Event] = []
        keep: list[int] = []
        for i, (row, token) in enumerate(zip(self.rows, tokens.tolist())):
            if row.job.cancelled:
                continue
            text, finish = row.advance(self.pieces[token])
            if text or finish:
                events.append((row.job, text, finish))
            if finish is None:
                keep.append(i)
        if events:
            self.sink(events)
        if len(keep) < len(self.rows):
            self.rows = [self.rows[i] for i in keep]
            self._settings = None
            if not keep:
                return
            index = torch.tensor(keep, device=self.device)
            tokens, self.state = tokens[index], select_state(self.state, index)
            self.noise.keep(keep)
        self.logits, self.state = self.stepper.step(tokens, self.state)


def _row_settings(jobs: list[Job], vocab_size: int, device: torch.device) -> tuple:
    """The batch's per-row temperature, top-k and top-p as ``pick_rows`` takes them."""
    temp = torch.tensor([[job.temp] for job in jobs], device=device)
    top_k = top_p = None
    if any(job.top_k is not None and job.top_k < vocab_size for job in jobs):
        top_k = torch.tensor([[min(job.top_k or vocab_size, vocab_size)] for job in jobs], device=device)
    if any(job.top_p is not None and job.top_p < 1 for job in jobs):
        inf = float("inf")
        top_p = torch.tensor([[job.top_p if job.top_p is not None and job.top_p < 1 else inf] for job in jobs], device=device)
    return temp, top_k, top_p
