"""Which precision the sampler steps in: ``--precision auto`` decides by measuring, here.

At batch 1 a step streams every weight once per character, so fewer bytes per weight can make it
faster, but only where the CPU multiplies those bytes at full speed, and no flag says where: a
2-core Xeon with AMX sampled a 2x512 LSTM in bfloat16 at 0.94x float32 (bench/sampler.py), and on
a 2-core Zen 3 EPYC (AVX2) fbgemm's int8 product ran at 0.9-1.1x numpy's float32 one at batch 1.
So ``auto`` times the step of each precision this machine can compute, for this model's shapes
at one row and at 64, in interleaved rounds (about a second, once; see ``time_precisions``),
keeps the timings per machine, torch, threads and shape in
``~/.cache/charrnn/step-precision.json``, and steps in float32 unless a reduced precision ran at
least ``MARGIN`` times as fast at both: on a 2-core Zen 5 EPYC (AVX-512) that is int8 (1.3-1.7x
float32 at one row and ~3x at 64 in bench/sampler.py). One verdict for every batch keeps a seed's
text the same wherever it is sampled (``sample``, its ``--num-samples`` rows, the API, a server's
request), though it leaves speed behind where the batches disagree: on the Zen 3 EPYC int8 ran a 2x512 LSTM at 0.62x
float32 at one row and 1.78x at 64 (``--precision int8`` takes it there). A reduced precision
must also keep the model's predictions: its bits per token on text the model itself writes in
float32 (so the check needs no corpus and measures the distribution a sample draws from) may
rise by at most ``MAX_BPC_CHANGE``; that verdict is kept per model.
"""

from __future__ import annotations

import hashlib
import math
import statistics
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from charrnn.errors import CharrnnError
from charrnn.model.network import CharRNN, State
from charrnn.model.single_row import SingleRow
from charrnn.model.stepper import Stepper
from charrnn.runtime import measured
from charrnn.runtime.kernels import let_mkl_choose_threads
from charrnn.runtime.precision import STEP_DTYPES, step_unavailable

# A reduced precision is picked where it stepped at least this much faster than float32: timings
# on a shared 2-core machine move by a few percent between rounds.
MARGIN = 1.1
# ... and where the model's bits per token on its own float32 text rose by less than this.
MAX_BPC_CHANGE = 0.01
REDUCED = ("bfloat16", "int8")
BATCHES = (1, 64)
ROUNDS = 3
ROUND_SECONDS = 0.03
# The quality check: this many rows of this many tokens, written by the float32 step at temperature 1.
CHECK_ROWS, CHECK_TOKENS = 16, 128


@dataclass(frozen=True)
class StepChoice:
    """The precision a sampler steps in, and whether ``auto`` measured its way there."""

    name: str
    chosen_by_auto: bool = False

    def describe(self) -> str:
        return f"{self.name} (--precision auto, measured here)" if self.chosen_by_auto else self.name


def choose(model: CharRNN, name: str, device: torch.device | None = None) -> StepChoice:
    """``--precision name`` for sampling ``model``: the precision asked for (refused where this
    machine cannot step in it), or ``auto``'s measured pick."""
    kind = model.cfg.model
    if name != "auto":
        why = step_unavailable(name, kind, device)
        if why is not None:
            raise CharrnnError(f"{why}; use float32" if name in STEP_DTYPES else why)
        return StepChoice(name)
    candidates = [p for p in REDUCED if step_unavailable(p, kind, device) is None]
    if not candidates:
        return StepChoice("float32", chosen_by_auto=True)
    path = measured.cache_path("step-precision")
    known = measured.read(path)
    found: dict[str, object] = {}
    speeds = [_speeds(model, candidates, batch, known, found) for batch in BATCHES]
    faster = [p for p in candidates if all(s[p] >= MARGIN * s["float32"] for s in speeds)]
    best = "float32"
    for p in sorted(faster, key=lambda p: -min(s[p] / s["float32"] for s in speeds)):
        key = f"quality|{measured.machine()}|{_digest(model)}|{p}"
        change = known.get(key)
        if not isinstance(change, (int, float)):
            change = found[key] = bpc_change(model, p)
        if change < MAX_BPC_CHANGE:
            best = p
            break
    if found:
        measured.remember(path, found)
    return StepChoice(best, chosen_by_auto=True)


def _speeds(
    model: CharRNN, candidates: list[str], batch: int, known: dict[str, object], found: dict[str, object]
) -> dict[str, float]:
    """Each precision's steps per second at ``batch`` rows: as kept from an earlier run, or timed
    now (and added to ``found``)."""
    key = f"speed|{measured.machine()}|{_shape(model)}|batch {batch}"
    speeds = known.get(key)
    names = ["float32", *candidates]
    if isinstance(speeds, dict) and all(isinstance(speeds.get(p), (int, float)) for p in names):
        return speeds
    timed = found[key] = time_precisions(model, names, batch)
    return timed


def _shape(model: CharRNN) -> str:
    """What a step's speed depends on: the cell, layers, hidden and embedding sizes, and the
    vocabulary to the next power of two (the output layer's cost moves with it)."""
    c = model.cfg
    return f"{c.model} {c.layers}x{c.hidden} embed {c.embed} vocab {1 << max(0, c.vocab_size - 1).bit_length()}"


def _digest(model: CharRNN) -> str:
    """The model's weights, hashed: a quality verdict belongs to these weights alone. Kept per
    model while its tensors stay where they are, unmodified (their version counters), since
    hashing a 2x512 model's 14 MB on every ``Model.generate`` would cost ~20 ms a call."""
    tensors = list(model.state_dict().values())
    stamp = tuple((t.data_ptr(), t._version) for t in tensors)
    known = _DIGESTS.get(model)
    if known is not None and known[0] == stamp:
        return known[1]
    h = hashlib.sha256()
    for tensor in tensors:
        h.update(tensor.detach().float().contiguous().numpy().tobytes())
    _DIGESTS[model] = (stamp, h.hexdigest()[:16])
    return _DIGESTS[model][1]


_DIGESTS: weakref.WeakKeyDictionary[CharRNN, tuple[tuple[tuple[int, int], ...], str]] = weakref.WeakKeyDictionary()


@torch.no_grad()
def time_precisions(model: CharRNN, names: list[str], batch: int) -> dict[str, float]:
    """Tokens per second of each precision's step at ``batch`` rows, the way ``generate`` steps:
    one row of an LSTM through ``SingleRow``, anything else through ``Stepper.step``.

    The precisions take turns for ``ROUND_SECONDS`` each, ``ROUNDS`` times, every step timed on
    its own; a precision's speed is ``batch`` over the median of all its steps. The median step,
    not a round's total: the precisions multiply through different libraries (numpy's OpenBLAS
    for float32, oneDNN or fbgemm on torch's OpenMP threads for the others), and each library's
    idle threads spin for up to ~0.1 s after its last product. On a 2-core Zen 5 EPYC the first
    steps after a switch took 1-16 ms against ~0.1 ms, so rounds' totals measured the hand-over
    (int8 at 0.01-1.0x float32 at one row) rather than what a sample, which steps in one
    precision throughout, runs at (int8 1.5x float32, each alone); the median step read 1.2-1.65x."""
    # Timed as a sample steps, whatever thread asks and whatever set its torch threads before.
    let_mkl_choose_threads()
    steps = {p: _step_function(Stepper(model, p), model, batch) for p in names}
    times: dict[str, list[float]] = {p: [] for p in names}
    for step in steps.values():
        step()
    clock = time.perf_counter
    for _ in range(ROUNDS):
        for p, step in steps.items():
            start, n = clock(), 0
            while n < 3 or clock() - start < ROUND_SECONDS:
                before = clock()
                step()
                times[p].append(clock() - before)
                n += 1
    return {p: batch / max(statistics.median(t), 1e-9) for p, t in times.items()}


def _step_function(stepper: Stepper, model: CharRNN, batch: int) -> Callable[[], object]:
    vocab = model.cfg.vocab_size
    state = model.init_state(batch)
    if batch == 1 and SingleRow.handles(stepper):
        row = SingleRow(stepper, torch.zeros(1, vocab), state)
        token = iter(range(1 << 62))
        return lambda: row.step(next(token) % vocab)
    tokens = torch.arange(batch) % vocab
    held: list[State] = [state]

    def step() -> object:
        logits, held[0] = stepper.step(tokens, held[0])
        return logits

    return step


@torch.no_grad()
def bpc_change(model: CharRNN, name: str, seed: int = 0) -> float:
    """How many bits per token the ``name`` step's predictions lose against float32's on
    ``CHECK_ROWS`` x ``CHECK_TOKENS`` tokens that the float32 step writes itself at temperature 1:
    its cross-entropy on them minus float32's (their expected difference is the KL divergence
    of the reduced model's next-token distribution from float32's, on the text a sample visits)."""
    exact, reduced = Stepper(model, "float32"), Stepper(model, name)
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(model.cfg.vocab_size, (CHECK_ROWS,), generator=gen)
    state_a = state_b = model.init_state(CHECK_ROWS)
    nats_a = nats_b = 0.0
    for t in range(CHECK_TOKENS + 1):
        logits_a, state_a = exact.step(tokens, state_a)
        logits_b, state_b = reduced.step(tokens, state_b)
        following = torch.multinomial(torch.softmax(logits_a.float(), -1), 1, generator=gen).squeeze(1)
        if t > 0:  # the first token is random, not the model's
            nats_a += float(F.cross_entropy(logits_a.float(), following, reduction="sum"))
            nats_b += float(F.cross_entropy(logits_b.float(), following, reduction="sum"))
        tokens = following
    return (nats_b - nats_a) / math.log(2) / (CHECK_ROWS * CHECK_TOKENS)
