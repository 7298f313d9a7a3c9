"""``--precision auto`` for sampling: a reduced precision only where this machine measured it
faster (at one row and at 64) and it keeps the model's predictions; the timings kept per machine
and shape, so a second sample pays nothing."""

import json
import time
from types import SimpleNamespace

import pytest
import torch

from charrnn.data.vocab import CharVocab
from charrnn.model import checkpoint
from charrnn.model.network import CharRNN, ModelConfig
from charrnn.runtime import kernels, measured
from charrnn.sampling import precision
from charrnn.sampling.generate import generate
from charrnn.sampling.options import SampleOptions

needs_int8 = pytest.mark.skipif(
    not kernels.has_int8_product(), reason="this torch has no fbgemm (x86) quantized engine"
)


def _model(hidden: int = 24) -> CharRNN:
    torch.manual_seed(5)
    vocab = CharVocab.build("abcdefghij klmnop\n")
    return CharRNN(ModelConfig(vocab_size=vocab.size, layers=2, hidden=hidden, embed=12, dropout=0.0)).eval()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return measured.cache_path("step-precision")


def _timed(monkeypatch, by_batch: dict[int, dict[str, float]]) -> list[int]:
    """Replace the timing with these speeds (``by_batch``): what a machine would have measured."""
    calls: list[int] = []

    def fake(model, names, batch):
        calls.append(batch)
        return {p: by_batch[batch].get(p, 1.0) for p in names}

    monkeypatch.setattr(precision, "time_precisions", fake)
    monkeypatch.setattr(precision, "REDUCED", ("int8",))
    monkeypatch.setattr(precision, "step_unavailable", lambda name, kind, device=None: None)
    return calls


@pytest.mark.parametrize(
    "one, many, picked",
    [
        (1.5, 1.8, "int8"),  # faster at both batches
        (1.05, 1.8, "float32"),  # within the margin at one row: not measured faster
        (1.5, 0.9, "float32"),  # slower at 64: one verdict for every batch keeps a seed's text
        (0.6, 1.8, "float32"),
    ],
)
def test_auto_picks_a_reduced_precision_only_where_it_measured_faster(cache, monkeypatch, one, many, picked):
    _timed(monkeypatch, {1: {"float32": 1000.0, "int8": 1000.0 * one}, 64: {"float32": 9e3, "int8": 9e3 * many}})
    monkeypatch.setattr(precision, "bpc_change", lambda model, name: 0.001)
    choice = precision.choose(_model(), "auto")
    assert choice == precision.StepChoice(picked, chosen_by_auto=True)


def test_auto_refuses_a_faster_precision_that_changes_the_predictions(cache, monkeypatch):
    _timed(monkeypatch, {1: {"float32": 1000.0, "int8": 2000.0}, 64: {"float32": 9e3, "int8": 2e4}})
    monkeypatch.setattr(precision, "bpc_change", lambda model, name: 0.05)
    assert precision.choose(_model(), "auto").name == "float32"


def test_the_verdict_is_kept_per_machine_and_shape(cache, monkeypatch):
    calls = _timed(monkeypatch, {1: {"float32": 1000.0, "int8": 2000.0}, 64: {"float32": 9e3, "int8": 2e4}})
    checked = []
    monkeypatch.setattr(precision, "bpc_change", lambda model, name: checked.append(name) or 0.001)
    assert precision.choose(_model(), "auto").name == "int8"
    assert calls == [1, 64] and checked == ["int8"]
    assert precision.choose(_model(), "auto").name == "int8"  # a second sample: nothing timed
    assert calls == [1, 64] and checked == ["int8"]
    keys = json.loads(cache.read_text())
    assert any(k.startswith(f"speed|{measured.machine()}|lstm 2x24 ") for k in keys)
    precision.choose(_model(hidden=32), "auto")  # another shape is timed again
    assert calls == [1, 64, 1, 64]


def test_a_precision_asked_for_is_not_measured(cache, monkeypatch):
    calls = _timed(monkeypatch, {})
    assert precision.choose(_model(), "float32") == precision.StepChoice("float32")
    assert calls == [] and not cache.exists()


@needs_int8
def test_auto_never_picks_what_measured_slower_here(cache):
    """Timed for real: whatever auto picks ran at least MARGIN times float32's speed here."""
    model = _model(hidden=64)
    choice = precision.choose(model, "auto")
    kept = json.loads(cache.read_text())
    speeds = [v for k, v in kept.items() if k.startswith("speed|")]
    assert len(speeds) == 2 and all(set(s) >= {"float32", "int8"} and min(s.values()) > 0 for s in speeds)
    if choice.name != "float32":
        assert all(s[choice.name] >= precision.MARGIN * s["float32"] for s in speeds)


@needs_int8
def test_bpc_change_measures_how_far_the_predictions_moved(trained_run, monkeypatch):
    model, _ = checkpoint.build_model(checkpoint.load(trained_run))
    assert precision.bpc_change(model, "float32") == 0
    assert abs(precision.bpc_change(model, "int8")) < precision.MAX_BPC_CHANGE
    # A product that lost half its size shows as a large change.
    real = kernels.int8_product
    monkeypatch.setattr("charrnn.model.stepper.int8_product", lambda x, w: real(x, w) * 0.5)
    assert precision.bpc_change(model, "int8") > 10 * precision.MAX_BPC_CHANGE


@needs_int8
def test_a_seeds_int8_text_is_the_same_alone_and_in_a_batch():
    """int8's rows are quantized over a fixed range: a row's text does not depend on its batch."""
    model = _model(hidden=48)
    vocab = CharVocab.build("abcdefghij klmnop\n")
    opts = SampleOptions(length=200, seed=3, precision="int8")
    alone = "".join(piece for _, piece in generate(model, vocab, opts, [1], 1))
    batch = [""] * 5
    for row, piece in generate(model, vocab, opts, [1], 5):
        batch[row] += piece
    assert batch[0] == alone


def test_a_quality_verdict_belongs_to_the_weights(cache, monkeypatch):
    _timed(monkeypatch, {1: {"float32": 1000.0, "int8": 2000.0}, 64: {"float32": 9e3, "int8": 2e4}})
    checked = []
    monkeypatch.setattr(precision, "bpc_change", lambda model, name: checked.append(name) or 0.001)
    model = _model()
    precision.choose(model, "auto")
    precision.choose(model, "auto")
    assert checked == ["int8"]
    with torch.no_grad():
        model.head.bias.add_(1.0)  # the same tensors, changed in place: checked again
    precision.choose(model, "auto")
    assert checked == ["int8", "int8"]


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _library_steps(monkeypatch, cost: dict[str, float], hand_over: dict[str, float]) -> None:
    """Steps that take ``cost[p]`` seconds each, and ``hand_over[p]`` more on the first step after
    another precision's: the other library's threads still spinning on the cores."""
    last: list[str] = [""]

    def step_function(stepper, model, batch):
        name = stepper.dtype_name

        def step():
            if last[0] != name:
                time.sleep(hand_over.get(name, 0.0))
                last[0] = name
            _busy(cost[name])

        return step

    monkeypatch.setattr(precision, "_step_function", step_function)
    monkeypatch.setattr(precision, "Stepper", lambda model, p: SimpleNamespace(dtype_name=p))


def test_timing_measures_the_steps_not_the_hand_over_between_libraries(monkeypatch):
    """int8 as fast as float32 but paying 20 ms each time float32's library hands it the cores,
    and a precision twice as slow: the first measures as fast, the second as slow."""
    _library_steps(monkeypatch, {"float32": 2e-4, "int8": 2e-4, "slow": 4e-4}, hand_over={"int8": 0.02})
    speeds = precision.time_precisions(_model(), ["float32", "int8", "slow"], 1)
    assert 0.8 < speeds["int8"] / speeds["float32"] < 1.25, speeds
    assert 0.4 < speeds["slow"] / speeds["float32"] < 0.65, speeds
