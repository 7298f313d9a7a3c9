"""The server's engine without the server: a seeded job's text is the sampler's, a tick reads at
most one prompt, cancelled jobs leave silently, and each job's tokens are counted."""

import threading
import time

import pytest
import torch

from charrnn.data.vocab import CharVocab
from charrnn.model.network import CharRNN, ModelConfig
from charrnn.runtime import kernels
from charrnn.sampling.generate import generate
from charrnn.sampling.options import SampleOptions
from charrnn.serving import engine as engine_module
from charrnn.serving.engine import Engine, Job
from charrnn.serving.lull import FLOOR


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(2)
    vocab = CharVocab.build("abcdefgh \n")
    return CharRNN(ModelConfig(vocab_size=vocab.size, layers=2, hidden=16, embed=8, dropout=0.0)).eval(), vocab


class Collector:
    """The engine's sink: every event in order, each job's text and finish."""

    def __init__(self, log: list) -> None:
        self.log, self.texts, self.finish = log, {}, {}
        self.cond = threading.Condition()

    def __call__(self, events) -> None:
        with self.cond:
            self.log.append(("tick", len(events)))
            for job, text, finish in events:
                self.texts[job.index] = self.texts.get(job.index, "") + text
                if finish is not None:
                    self.finish[job.index] = finish
            self.cond.notify_all()

    def wait(self, indices) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: set(indices) <= set(self.finish), timeout=60)


JOBS = [  # prompt, max_tokens, seed, temp, top_k, top_p, stops
    ("ab", 40, 11, 0.0, None, None, []),
    ("ab", 60, 12, 0.9, 3, None, []),
    ("ab", 50, 13, 1.3, None, 0.8, ["h"]),
    ("", 30, 14, 1.0, None, None, []),
    ("cab", 45, 15, 0.7, 5, 0.9, ["gg", "e\n"]),
]


def _sampled(model, vocab, prompt, max_tokens, seed, temp, top_k, top_p, stops):
    """``charrnn sample``'s text for a job (a character vocabulary: a token is a character)."""
    settings = {"temp": temp or 0.8, "greedy": temp == 0, "top_k": top_k, "top_p": top_p}
    opts = SampleOptions(length=max_tokens, seed=seed, stops=stops, **settings)
    return "".join(piece for _, piece in generate(model, vocab, opts, vocab.encode(prompt).tolist()))


def test_jobs_in_one_batch_are_the_sampler_alone(tiny, monkeypatch):
    model, vocab = tiny
    log: list = []
    read = engine_module.read_chunks
    monkeypatch.setattr(engine_module, "read_chunks", lambda m, ids: (log.append(("read", ids)), read(m, ids))[1])
    sink = Collector(log)
    engine = Engine(model, vocab, sink)
    gone = Job(vocab.encode("h").tolist(), 10_000, 99, index=99)
    engine.submit([gone])
    with sink.cond:
        assert sink.cond.wait_for(lambda: 99 in sink.texts, timeout=60)
    engine.cancel([gone])  # its reader went away: it leaves at the next tick, without a last event
    jobs = [Job(vocab.encode(prompt).tolist(), *settings, index=i) for i, (prompt, *settings) in enumerate(JOBS)]
    engine.submit([*jobs, Job([], 0, 1, index=100)])
    sink.wait([*range(len(JOBS)), 100])
    engine.close()
    for i, spec in enumerate(JOBS):
        assert sink.texts[i] == _sampled(model, vocab, *spec), i
    assert [sink.finish[i] for i in range(len(JOBS))] == ["length", "length", "stop", "length", "stop"]
    assert [job.tokens for job in jobs][:2] == [40, 60] and 0 < jobs[2].tokens < 50
    assert sink.finish[100] == "length" and 99 not in sink.finish
    # "ab" is read once for its three jobs, then "\n" (for "") and "cab": one prompt a tick.
    reads = [vocab.decode(entry[1]) for entry in log if entry[0] == "read"]
    assert reads == ["h", "ab", "\n", "cab"]
    assert all(log[i + 1][0] == "tick" for i, entry in enumerate(log) if entry[0] == "read")


def test_a_long_prompt_is_read_a_chunk_per_tick_beside_streaming_rows(tiny):
    """A 3,000-token prompt never holds the generating rows up for more than one chunk's pass,
    and its text is still the sampler's (which reads in the same chunks)."""
    model, vocab = tiny
    log: list = []
    sink = Collector(log)
    passes = []
    forward = model.forward
    model.forward = lambda x, state=None: (passes.append((x.shape[1], len(log))), forward(x, state))[1]
    try:
        engine = Engine(model, vocab, sink)
        streaming = Job(vocab.encode("ab").tolist(), 400, 7, index=0)
        engine.submit([streaming])
        with sink.cond:
            assert sink.cond.wait_for(lambda: 0 in sink.texts, timeout=60)
        prompt = ("abcdefgh \n" * 300)[:3000]
        engine.submit([Job(vocab.encode(prompt).tolist(), 30, 8, index=1)])
        sink.wait([0, 1])
        engine.close()
    finally:
        del model.forward
    reads = [(tokens, ticks) for tokens, ticks in passes if tokens > 2]
    assert sum(tokens for tokens, _ in reads) == 3000 and max(tokens for tokens, _ in reads) <= 512
    # The streaming row got a tick between every two chunks.
    assert all(b[1] > a[1] for a, b in zip(reads, reads[1:]))
    assert sink.texts[1] == _sampled(model, vocab, prompt, 30, 8, 0.8, None, None, [])


def test_a_tick_that_raises_fails_only_the_jobs_whose_step_raises(tiny):
    model, vocab = tiny
    sink = Collector([])
    faulty = {1}

    def fault(jobs):
        if any(job.index in faulty for job in jobs):
            raise RuntimeError("injected")

    engine = Engine(model, vocab, sink, fault=fault)
    ab = vocab.encode("ab").tolist()
    engine.submit([Job(ab, 50, 3, index=0), Job(ab, 50, 4, index=1), Job(ab, 60, 5, 1.2, index=7)])
    sink.wait([0, 1, 7])
    # Job 1's step raised on the first tick: the rows beside it went on with their own text.
    assert sink.finish == {0: "length", 1: "error", 7: "length"} and engine.dead is None
    assert sink.texts[0] == _sampled(model, vocab, "ab", 50, 3, 0.8, None, None, [])
    assert sink.texts[7] == _sampled(model, vocab, "ab", 60, 5, 1.2, None, None, [])
    engine.submit([Job(vocab.encode("cab").tolist(), 45, 15, 0.7, 5, 0.9, ["gg", "e\n"], index=2)])
    sink.wait([2])
    assert sink.texts[2] == _sampled(model, vocab, "cab", 45, 15, 0.7, 5, 0.9, ["gg", "e\n"])
    # Three failing ticks in a row: the engine stops for good, and fails what comes after at once.
    for i in (3, 4, 5):
        faulty.add(i)
        engine.submit([Job(vocab.encode("a").tolist(), 50, i, index=i)])
        sink.wait([i])
    assert engine.dead is not None and "3 ticks in a row failed" in engine.dead
    engine.submit([Job(vocab.encode("a").tolist(), 5, 6, index=6)])
    assert sink.finish[6] == "error" and [sink.finish[i] for i in (3, 4, 5)] == ["error"] * 3
    engine.close()


def test_a_row_whose_reader_is_behind_is_parked_and_keeps_its_text(tiny):
    """While ``behind`` says so a job is not stepped (no text comes for it), its neighbour goes
    on; once it says no, the job goes on from where it waited, with the sampler's text."""
    model, vocab = tiny
    log: list = []
    sink = Collector(log)
    slow: set[int] = set()
    engine = Engine(model, vocab, sink, behind=lambda job: job.index in slow)
    ab = vocab.encode("ab").tolist()
    engine.submit([Job(ab, 400, 21, index=0), Job(ab, 3000, 22, index=1)])
    with sink.cond:
        assert sink.cond.wait_for(lambda: len(sink.texts.get(0, "")) >= 20, timeout=60)
        slow.add(0)
    with sink.cond:
        assert sink.cond.wait_for(lambda: len(engine.parked.rows) == 1, timeout=60)
        held = len(sink.texts[0])
        assert sink.cond.wait_for(lambda: len(sink.texts[1]) > 1000, timeout=60)
        assert len(sink.texts[0]) == held and 0 not in sink.finish and engine.active == 2
    slow.clear()
    sink.wait([0, 1])
    engine.close()
    assert not engine.parked.rows
    assert sink.texts[0] == _sampled(model, vocab, "ab", 400, 21, 0.8, None, None, [])
    assert sink.texts[1] == _sampled(model, vocab, "ab", 3000, 22, 0.8, None, None, [])


def test_the_idle_hook_runs_once_after_each_busy_spell(tiny, monkeypatch):
    """The server gives memory back when its engine has had nothing to do for a moment: once per
    spell of work, never while jobs run, and never while the engine merely waits."""
    monkeypatch.setattr(engine_module, "IDLE_AFTER", 0.2)
    model, vocab = tiny
    sink = Collector([])
    calls: list[int] = []
    engine = Engine(model, vocab, sink, idle=lambda: calls.append(engine.active))
    time.sleep(0.5)
    assert calls == []  # no work yet: nothing to give back
    engine.submit([Job(vocab.encode("ab").tolist(), 200, 1, index=0)])
    sink.wait([0])
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.6)
    assert calls == [0]
    engine.submit([Job(vocab.encode("ab").tolist(), 20, 2, index=1)])
    sink.wait([1])
    deadline = time.monotonic() + 10
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    engine.close()
    assert calls == [0, 0]


def test_the_idle_hook_also_runs_once_a_burst_of_rows_is_over(tiny, monkeypatch):
    """A server that always has a client never goes idle: the memory a burst of rows left goes
    back once the rows have stayed under half their peak for ``IDLE_AFTER``, while others run."""
    monkeypatch.setattr(engine_module, "IDLE_AFTER", 0.2)
    model, vocab = tiny
    sink = Collector([])
    calls: list[int] = []
    engine = Engine(model, vocab, sink, idle=lambda: calls.append(engine.active))
    _burst_beside_a_long_job(engine, vocab, sink, calls)
    time.sleep(0.5)
    engine.close()
    assert calls == [1]  # once, while the long job still ran


def _burst_beside_a_long_job(engine: Engine, vocab, sink: Collector, calls: list[int]) -> Job:
    """A long job, then ``FLOOR`` short ones (indices 1 to FLOOR) beside it, waited for until
    they have ended and the idle hook (which appends to ``calls``) has run, or 10 s; the long job."""
    ids = vocab.encode("ab").tolist()
    long = Job(ids, 1_000_000, 1, index=0)
    engine.submit([long])
    burst = list(range(1, FLOOR + 1))
    engine.submit([Job(ids, 10, 1 + i, index=i) for i in burst])
    sink.wait(burst)
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:
        time.sleep(0.05)
    return long


def test_an_idle_hook_that_raises_costs_no_row_and_says_so_once(tiny, monkeypatch, capfd):
    """Giving memory back is best effort: a hook that raises inside a tick (a burst is over) or
    when idle fails no job, leaves the worker alive and is logged once, not on every release."""
    monkeypatch.setattr(engine_module, "IDLE_AFTER", 0.2)
    model, vocab = tiny
    sink = Collector([])
    calls: list[int] = []

    def broken() -> None:
        calls.append(engine.active)
        raise OSError("no allocator to ask")

    engine = Engine(model, vocab, sink, idle=broken)
    long = _burst_beside_a_long_job(engine, vocab, sink, calls)
    assert calls and calls[0] >= 1  # in a tick, beside the long job
    ids = vocab.encode("ab").tolist()
    engine.submit([Job(ids, 30, 99, index=99)])
    sink.wait([99])
    engine.cancel([long])
    deadline = time.monotonic() + 10
    while calls[-1] != 0 and time.monotonic() < deadline:  # then with nothing to do
        time.sleep(0.05)
    assert engine.dead is None and calls[-1] == 0 and len(calls) >= 2
    engine.submit([Job(ids, 30, 100, index=100)])
    sink.wait([100])
    engine.close()
    assert all(sink.finish[i] == "length" for i in [*range(1, FLOOR + 1), 99, 100])
    err = capfd.readouterr().err
    assert err.count("warning: the server could not give memory back (OSError: no allocator to ask)") == 1, err
    assert "error" not in err


def test_a_row_whose_text_raises_fails_alone_and_the_step_stands(tiny, monkeypatch):
    """A fault while a row's token is added to its text (after the model stepped and the draws
    moved on) ends that row's job; the rows beside it keep the text they would have had, no
    token twice or missing, as the step is not tried again."""
    model, vocab = tiny
    text_of = engine_module.RowText

    class Faulty(text_of):
        def add(self, piece):
            if self.length == 77 and self.count == 9:
                raise RuntimeError("injected text fault")
            return super().add(piece)

    monkeypatch.setattr(engine_module, "RowText", Faulty)
    sink = Collector([])
    engine = Engine(model, vocab, sink)
    ab = vocab.encode("ab").tolist()
    engine.submit([Job(ab, 50, 3, index=0), Job(ab, 77, 4, index=1), Job(ab, 60, 5, 1.2, index=7)])
    sink.wait([0, 1, 7])
    assert sink.finish == {0: "length", 1: "error", 7: "length"} and engine.dead is None
    assert sink.texts[0] == _sampled(model, vocab, "ab", 50, 3, 0.8, None, None, [])
    assert sink.texts[7] == _sampled(model, vocab, "ab", 60, 5, 1.2, None, None, [])
    assert sink.texts[1] == _sampled(model, vocab, "ab", 9, 4, 0.8, None, None, [])
    # Alone in the batch, such rows fail tick after tick: the model is sound, the engine goes on.
    for i in (2, 3, 4):
        engine.submit([Job(ab, 77, i, index=i)])
        sink.wait([i])
    engine.close()
    assert [sink.finish[i] for i in (2, 3, 4)] == ["error"] * 3 and engine.dead is None


def test_a_prompt_whose_read_raises_fails_its_own_jobs_alone(tiny, monkeypatch):
    """A fault while a prompt is read (its own text, a bug in the read) ends that prompt's jobs
    with an error; the rows already streaming go on with the text they would have had."""
    model, vocab = tiny
    poisoned = vocab.encode("hh").tolist()
    read = engine_module.read_chunks

    def faulty(m, ids):
        if ids[-2:] == poisoned:
            raise RuntimeError("injected read fault")
        yield from read(m, ids)

    monkeypatch.setattr(engine_module, "read_chunks", faulty)
    sink = Collector([])
    engine = Engine(model, vocab, sink)
    ab = vocab.encode("ab").tolist()
    engine.submit([Job(ab, 3000, 31, index=0)])
    with sink.cond:
        assert sink.cond.wait_for(lambda: len(sink.texts.get(0, "")) >= 20, timeout=60)
    engine.submit([Job(poisoned, 50, 32, index=1), Job(poisoned, 50, 33, index=2)])
    sink.wait([0, 1, 2])
    engine.close()
    assert sink.finish == {0: "length", 1: "error", 2: "error"} and engine.dead is None
    assert sink.texts[0] == _sampled(model, vocab, "ab", 3000, 31, 0.8, None, None, [])


def test_the_worker_gives_mkl_its_choice_of_threads_back(tiny):
    """The worker sets its torch threads, which stops MKL choosing its threads per call (a
    one-row step then stalls on numpy's spinning OpenBLAS threads: ``kernels.let_mkl_choose_threads``);
    every tick gives the choice back, whatever a thread set meanwhile."""
    if kernels.mkl_chooses_threads() is None:
        pytest.skip("this torch has no MKL")
    model, vocab = tiny
    sink = Collector([])
    engine = Engine(model, vocab, sink, threads=torch.get_num_threads())
    try:
        engine.submit([Job(vocab.encode("ab").tolist(), 20, 1, index=0)])
        sink.wait([0])
        torch.set_num_threads(torch.get_num_threads())  # another thread's, meanwhile
        assert kernels.mkl_chooses_threads() is False
        engine.submit([Job(vocab.encode("ab").tolist(), 20, 2, index=1)])
        sink.wait([1])
        assert kernels.mkl_chooses_threads() is True
    finally:
        engine.close()
        kernels.let_mkl_choose_threads()
