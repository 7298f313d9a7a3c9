"""Continuous batching: one worker thread per model steps every active request as one batch.

An RNN's whole memory of a request is its state, a few kilobytes, so unrelated requests can share each
step: a request joins the batch at the next tick once its prompt has been read in full-sequence passes,
and leaves at its length, a stop string, or a cancel. The worker is the only thread that touches the
model; it hands each tick's text to a ``sink`` callback in one call, so a web server wakes its event
loop at most once per tick rather than once per character. A prompt is read a chunk per tick
(``PROMPT_CHUNK`` tokens), so a long one never holds up the rows already generating for more than one.

A tick that raises is tried again in halves, down to the rows whose own step (or text, once the model
stepped) raises: only their requests fail, every other row goes on with the text it would have had. A
row whose reader has fallen behind (``behind``) is parked, out of the batch and not stepped, until its
reader catches up or goes: a client that never reads costs the others nothing.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from charrnn.data.vocab import Vocab
from charrnn.errors import ServerFailed, one_line
from charrnn.model.network import CharRNN, State
from charrnn.model.stepper import Stepper
from charrnn.runtime.kernels import let_mkl_choose_threads
from charrnn.sampling.batch import Batch, Row, RowsFailed
from charrnn.sampling.batch import Event as BatchEvent
from charrnn.sampling.generate import PROMPT_CHUNK, copies, read_chunks, start_ids
from charrnn.sampling.options import SampleOptions
from charrnn.sampling.pick import RowNoise
from charrnn.sampling.precision import choose
from charrnn.sampling.text import LENGTH, RowText
from charrnn.serving.lull import Lull, forgiving


@dataclass(eq=False)
class Job:
    """One generated text (one choice of a completion request), with its own settings.

    ``temp`` 0 is greedy. ``listener`` and ``index`` are the caller's: where the sink should
    route this job's text. ``tokens`` is how many tokens it generated, counted by its last event
    (what the usage reports)."""

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
# The finish of a job whose tick raised: the server answers it with a 500.
FAILED = "error"
# The finish of a job the server ended because it is stopping (not a stop string: a client must be able to tell).
SHUTDOWN = "shutdown"
# Ticks that raise one after another, with no tick between that did not, before the engine gives up: a
# fault that follows every tick is no one request's. A tick counts when every row in it raised.
MAX_FAILURES = 3
# Seconds between the worker's looks at which rows' readers are behind or back (and its sleep while only
# parked rows need it). A look asks every row: looking on every tick held the tiny preset's 16 good
# streams beside 48 never-reading requests (384 rows) to 0.80x of their quiet speed, against 0.86x
# looking every 20 ms (bench/serve_faults.py, 2-core AMD EPYC Zen 3).
PARK_POLL = 0.02
# Seconds of no work after a busy spell before the ``idle`` hook runs: the event loop frees the
# spell's last responses a moment after the engine's last tick.
IDLE_AFTER = 1.0


@dataclass(eq=False)
class _Read:
    """A prompt being read, a chunk per tick, for the jobs that start from it."""

    jobs: list[Job]
    chunks: Iterator[tuple[torch.Tensor, State]]
    left: int  # chunks still to read


class Engine:
    """The worker that owns one model. ``submit`` and ``cancel`` are safe from any thread."""

    def __init__(
        self,
        model: CharRNN,
        vocab: Vocab,
        sink: Sink,
        device: torch.device | str = "cpu",
        threads: int | None = None,
        fault: Callable[[list[Job]], None] | None = None,
        behind: Callable[[Job], bool] | None = None,
        idle: Callable[[], object] | None = None,
    ) -> None:
        """``fault`` is a test hook, called with the jobs of the batch, or of the part of it being stepped,
        before each step: what it raises is what a bug in the step would raise. ``behind`` says whether a
        job's reader has left too much of its text unread: such a job is parked until it says no. ``idle``
        runs on the worker, without the lock, ``IDLE_AFTER`` seconds after each busy spell and after each
        burst of rows (``Lull``): the server gives memory back there (what it raises is only logged)."""
        self.model = model.eval().to(device)
        self.threads = threads
        self.vocab = vocab
        self.device = torch.device(device)
        self.sink = sink
        # auto's precision (measured here, one verdict for every batch): the precision `charrnn
        # sample` steps in by default, so a seeded request gets its text.
        self.precision = choose(self.model, "auto", self.device)
        stepper = Stepper(self.model, self.precision.name)
        # Compacting: a row leaves the batch's tensors when its request ends.
        self.batch = Batch(stepper, vocab.token_bytes(), compact=True)
        self.parked = Batch(stepper, vocab.token_bytes(), compact=True)  # rows whose reader is behind
        self.behind = behind
        self.idle = forgiving(idle) if idle is not None else None
        self._busy = False  # worked since idle last ran
        self._lull = Lull(IDLE_AFTER)
        self._looked = 0.0  # time.monotonic() of the last look at readers
        self._pending: list[list[Job]] = []
        self._reading: _Read | None = None
        self._wake = threading.Condition()
        self._running = True
        self._closing = self._end_now = False
        self.fault = fault
        self.failures = 0
        self.dead: str | None = None  # why the engine stopped for good
        self._thread = threading.Thread(target=self._work, name="charrnn-engine", daemon=True)
        self._thread.start()

    @property
    def active(self) -> int:
        """Jobs in the batch or waiting to join it."""
        with self._wake:
            reading = len(self._reading.jobs) if self._reading is not None else 0
            held = len(self.batch.rows) + len(self.parked.rows) + reading
            return held + sum(len(group) for group in self._pending)

    def submit(self, jobs: list[Job]) -> None:
        """Queue jobs to join the batch. Waiting jobs that share a prompt (the n choices of a
        request, clients that arrive together with the same text) read it once."""
        with self._wake:
            if self.dead is not None:
                self.sink([(job, "", FAILED) for job in jobs])
                return
            if self._closing:
                self.sink([(job, "", SHUTDOWN) for job in jobs])
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
        """The worker's life: a tick that raises fails the jobs whose step raised and the engine goes on; an
        error it cannot go on from (``MAX_FAILURES`` in a row, or one that escapes) fails
        every job, now and later, and leaves ``dead`` set for the server to report and exit."""
        try:
            self._serve()
        except BaseException as e:  # noqa: BLE001 - whatever ended the worker, its jobs must hear
            self.dead = one_line(e)
            print(f"error: the model's worker stopped: {self.dead}", file=sys.stderr, flush=True)
            with self._wake:
                groups, self._pending = self._pending, []
            self._fail(self._held() + [job for group in groups for job in group])

    def _serve(self) -> None:
        if self.threads is not None:
            # torch's thread count is per calling thread: this one is the model's.
            torch.set_num_threads(self.threads)
        with torch.no_grad():
            while True:
                with self._wake:
                    while self._running and not (self._pending or self._reading or self.batch.rows or self._end_now):
                        if self.parked.rows:  # a parked row's reader may catch up, or go
                            self._wake.wait(PARK_POLL)
                            break
                        if self._busy and self.idle is not None:
                            if not self._wake.wait(IDLE_AFTER):
                                self._run_idle()
                            continue
                        self._wake.wait()
                    groups, self._pending = self._pending, []
                    end, self._end_now = self._end_now or not self._running, False
                    running = self._running
                if end:
                    self._end_all(groups)
                    if not running:
                        return
                    continue
                # Setting any thread's torch threads, this one's or a thread's first torch call
                # after another's set_num_threads, stops MKL choosing its threads per call, which a
                # one-row step needs (a ctypes call, ~1 us a tick).
                let_mkl_choose_threads()
                try:
                    self._advance(groups)
                except ServerFailed:
                    raise
                except Exception as e:  # noqa: BLE001 - outside a row's step: every job held fails
                    self._failed_tick(e, self._held() + [job for group in groups for job in group], 0)

    def _run_idle(self) -> None:
        """The ``idle`` hook, called with ``_wake`` held: run it without (submitters must not wait on it)."""
        assert self.idle is not None
        self._busy = False
        self._wake.release()
        try:
            self.idle()
        finally:
            self._wake.acquire()

    def _failed_tick(self, e: Exception, failed: list[Job], stepped: int, model_ok: bool = False) -> None:
        """Fail ``failed`` and log one line; count the tick against ``MAX_FAILURES`` unless some
        rows (``stepped``) went on without raising or the model stepped for some (``model_ok``),
        which shows the fault is those jobs' own."""
        self.failures = 0 if stepped or model_ok else self.failures + 1
        print(
            f"error: a tick of the model's worker failed ({one_line(e)}); "
            f"{sum(not job.cancelled for job in set(failed))} rows ended, {stepped} went on",
            file=sys.stderr,
            flush=True,
        )
        self._fail(failed)
        if self.failures >= MAX_FAILURES:
            raise ServerFailed(f"{MAX_FAILURES} ticks in a row failed, the last with {one_line(e)}") from e

    def _advance(self, groups: list[list[Job]]) -> None:
        """Admit waiting jobs, read a chunk of a prompt, step the batch: one tick. ``groups``
        (taken from the queue) are back in it, or reading, once it returns."""
        self._busy = True
        waiting = self._admit(groups)
        if waiting:
            with self._wake:
                self._pending[:0] = waiting
        groups.clear()
        reading = self._reading
        if reading is not None:
            try:
                self._read()
            except Exception as e:  # noqa: BLE001 - a prompt's read fails its own jobs, not the batch's
                self._reading = None
                self._failed_tick(e, reading.jobs, len(self.batch.rows) + len(self.parked.rows))
        if self.behind is not None and time.monotonic() - self._looked >= PARK_POLL:
            self._looked = time.monotonic()
            self._park(self.behind)
        if self.batch.rows:
            self._tick()
        held = len(self.batch.rows) + len(self.parked.rows)
        if self.idle is not None and self._lull.update(held, time.monotonic()):
            self.idle()  # a burst of rows is over (the engine is not idle): its memory goes back

    def _held(self) -> list[Job]:
        """Every job the worker holds (in the batch or being read), taken from it."""
        reading = self._reading.jobs if self._reading is not None else []
        self._reading = None
        return [_counted(row) for row in self.batch.clear() + self.parked.clear()] + reading

    def _fail(self, jobs: list[Job]) -> None:
        self.sink([(job, "", FAILED) for job in dict.fromkeys(jobs) if not job.cancelled])

    def _end_all(self, groups: list[list[Job]]) -> None:
        jobs = self._held() + [job for group in groups for job in group]
        self.sink([(job, "", SHUTDOWN) for job in jobs if not job.cancelled])

    def _admit(self, groups: list[list[Job]]) -> list[list[Job]]:
        """Start reading the first waiting prompt, once for every waiting job that starts from it, unless
        a prompt is being read; the jobs that wait for a later read (returned). So a tick waits for at
        most one chunk of one prompt, and the first request's text starts after its own read alone."""
        jobs = [job for group in groups for job in group if not job.cancelled]
        done: list[Event] = [(job, "", LENGTH) for job in jobs if job.max_tokens <= 0]
        if done:
            self.sink(done)
        jobs = [job for job in jobs if job.max_tokens > 0]
        if self._reading is not None or not jobs:
            return [jobs] if jobs else []
        ids = start_ids(self.vocab, jobs[0].prompt_ids)
        now = [job for job in jobs if start_ids(self.vocab, job.prompt_ids) == ids]
        later = [job for job in jobs if start_ids(self.vocab, job.prompt_ids) != ids]
        self._reading = _Read(now, read_chunks(self.model, ids), -(-len(ids) // PROMPT_CHUNK))
        return [later] if later else []

    def _read(self) -> None:
        """The next chunk of the prompt being read; after its last, its jobs' rows join the
        batch. A read whose jobs were all cancelled stops."""
        reading = self._reading
        assert reading is not None  # called only while a prompt is being read
        if all(job.cancelled for job in reading.jobs):
            self._reading = None
            return
        logits, state = next(reading.chunks)
        reading.left -= 1
        if reading.left:
            return
        self._reading = None
        logits, state = copies(logits, state, len(reading.jobs))
        noise = RowNoise([job.seed for job in reading.jobs], logits.shape[-1])
        self.batch.join([_row(job) for job in reading.jobs], logits, state, noise)

    def _park(self, behind: Callable[[Job], bool]) -> None:
        """Rows whose reader is behind leave the batch for ``parked``; parked rows whose reader
        caught up come back, and those whose reader went leave silently. A parked row keeps its
        logits, state and place in its draws, so its text is as if it had never waited."""
        parked = self.parked
        gone = [i for i, row in enumerate(parked.rows) if row.key.cancelled]
        if gone:
            parked.take(gone)
        back = parked.take([i for i, row in enumerate(parked.rows) if not behind(row.key)])
        held = self.batch.take([i for i, row in enumerate(self.batch.rows) if behind(row.key)])
        for moved, into in ((held, parked), (back, self.batch)):
            if moved.rows:
                into.join(moved.rows, *_tensors(moved))

    def _tick(self) -> None:
        """One step of the batch, its text to the sink in one call (cancelled jobs leave silently).
        A step that raises is tried again in halves, down to single rows: a row fails only when
        its own step raises, or its text once the model stepped (``RowsFailed``: not retried)."""
        parts, stepped, failed = [self.batch], [], []
        events: list[Event] = []
        error: Exception | None = None
        went_on = 0  # rows whose step did not raise
        while parts:
            part = parts.pop()
            try:
                if self.fault is not None:
                    self.fault([row.key for row in part.rows])
                rows = len(part.rows)
                events += self._events(part.step(lambda job: job.cancelled))
                stepped.append(part)
                went_on += rows
            except RowsFailed as e:  # the model stepped: the rows that went on keep their step
                error = e
                events += self._events(e.events)
                stepped.append(part)
                went_on += rows - len(e.rows)
                failed += [_counted(row) for row in e.rows]
            except Exception as e:  # noqa: BLE001 - one row's error is its job's, not the batch's
                error = e
                if len(part.rows) == 1:
                    failed.append(_counted(part.rows[0]))
                else:
                    parts += [part, part.take(list(range(len(part.rows) // 2, len(part.rows))))]
        if events:
            self.sink(events)
        if error is None:
            self.failures = 0
            return
        self.batch = Batch(self.batch.stepper, self.batch.pieces, compact=True)  # the parts that went on
        for part in stepped:
            if part.rows:
                self.batch.join(part.rows, *_tensors(part))
        self._failed_tick(error, failed, went_on, model_ok=bool(stepped))

    @staticmethod
    def _events(events: list[BatchEvent]) -> list[Event]:
        return [(row.key if finish is None else _counted(row), text, finish) for row, text, finish in events]


def _row(job: Job) -> Row:
    """A job's row: it picks as ``charrnn sample`` with its settings, and ends after ``max_tokens``
    tokens (its draws are the batch's ``RowNoise``, seeded by the job)."""
    # Greedy at temperature 0 (and, as every sampler is, below GREEDY_BELOW).
    options = SampleOptions(temp=job.temp, greedy=job.temp == 0, top_k=job.top_k, top_p=job.top_p)
    return Row(job, options, RowText(job.max_tokens, job.stops, per_token=True))


def _tensors(batch: Batch) -> tuple[torch.Tensor, State, RowNoise | None]:
    """A batch's logits, state and draws, to join another batch."""
    assert batch.logits is not None and batch.state is not None  # a batch with rows has both
    return batch.logits, batch.state, batch.noise


def _counted(row: Row) -> Job:
    """The row's job, with the tokens it generated (set once, as it ends)."""
    job: Job = row.key
    job.tokens = row.text.count
    return job
