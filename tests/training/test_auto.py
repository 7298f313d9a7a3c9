"""--preset auto: the rule on synthetic corpus sizes, budgets and machine speeds (no training
for minutes), the timing and its cache, and the CLI keeping every flag the user gave."""

import json
import math

import pytest
import torch
from conftest import TINY, run_cli

from charrnn.runtime.precision import Precision
from charrnn.training import auto
from charrnn.training.auto import Budget, choose
from charrnn.training.config import make_config
from charrnn.training.sizes import LADDER
from charrnn.training.speed import Speeds

VOCAB = 80


def machine(tokens_per_second_at_1m_params: float):
    """A synthetic machine: a step's cost grows with the parameters, as on a CPU."""
    return lambda size: tokens_per_second_at_1m_params * 1e6 / size.params(VOCAB)


AVX2, AMX, GPU = machine(20_000), machine(50_000), machine(5_000_000)
CORPORA = [20_000, 80_000, 137_000, 1_000_000, 3_000_000, 10_000_000, 60_000_000, 500_000_000]
BUDGETS = [30, 120, 600, 3600, 4 * 3600]


def params(choice) -> int:
    return choice.size.params(VOCAB)


@pytest.mark.parametrize("speed", [AVX2, AMX, GPU])
@pytest.mark.parametrize("tokens", CORPORA)
def test_a_longer_budget_never_gets_a_smaller_model(speed, tokens):
    sizes = [params(choose(tokens, VOCAB, Budget(seconds=s), speed)) for s in BUDGETS]
    assert sizes == sorted(sizes)


@pytest.mark.parametrize("tokens", CORPORA)
@pytest.mark.parametrize("seconds", BUDGETS)
def test_a_faster_machine_never_gets_a_smaller_model(tokens, seconds):
    sizes = [params(choose(tokens, VOCAB, Budget(seconds=seconds), s)) for s in (AVX2, AMX, GPU)]
    assert sizes == sorted(sizes)


@pytest.mark.parametrize("speed", [AVX2, AMX, GPU])
@pytest.mark.parametrize("seconds", BUDGETS)
def test_more_text_never_gets_a_smaller_model_or_more_dropout(speed, seconds):
    choices = [choose(n, VOCAB, Budget(seconds=seconds), speed) for n in CORPORA]
    assert [params(c) for c in choices] == sorted(params(c) for c in choices)
    for a, b in zip(choices, choices[1:]):
        if a.size == b.size:
            assert b.dropout <= a.dropout
    assert all(c.dropout == 0 for c in choices if c.passes < auto.MEMORISING_PASSES)


def test_a_short_text_caps_the_size_whatever_the_budget():
    for n in (20_000, 80_000):
        choice = choose(n, VOCAB, Budget(seconds=24 * 3600), GPU)
        assert params(choice) <= auto.MAX_PARAMS_PER_TOKEN * n
        assert choice.dropout > 0


def test_the_sizes_follow_the_measured_panel():
    """What the sweeps found (docs/auto.md): on a 2-core AMX CPU two minutes learn most with the
    2x256 model on texts from 80 kB to 1 MB (2x384 and 2x512 tie or lose), ten minutes on the two
    short texts too (2x512 loses there with dropout 0.2 and 0.5), and an hour on a large corpus
    takes a larger model than two minutes."""
    for n in (80_000, 106_000, 1_000_000):
        assert choose(n, VOCAB, Budget(seconds=120), AMX).size.name == "2x256"
    for n in (80_000, 106_000):
        assert choose(n, VOCAB, Budget(seconds=600), AMX).size.name == "2x256"
    kernel = [params(choose(60_000_000, VOCAB, Budget(seconds=s), AMX)) for s in (120, 600, 3600)]
    assert kernel == sorted(kernel) and kernel[2] > kernel[0]


def test_steps_and_epochs_budgets_need_no_timing():
    def no_timing(size):
        raise AssertionError("timed a size for a budget of steps or passes")

    few = choose(1_000_000, VOCAB, Budget(steps=100), no_timing)
    many = choose(1_000_000, VOCAB, Budget(steps=100_000), no_timing)
    assert params(few) < params(many)
    assert choose(1_000_000, VOCAB, Budget(epochs=50), no_timing).passes == 50


def test_timing_stops_at_the_first_rung_that_falls_short():
    timed = []

    def speed(size):
        timed.append(size)
        return AVX2(size)

    choice = choose(10_000_000, VOCAB, Budget(seconds=120), speed)
    last = LADDER.index(choice.size)
    assert set(timed) <= set(LADDER[: last + 2]) and choice.size in timed
    assert LADDER[-1] not in timed
    # A rung that could not qualify even at the speed of the one below is not timed at all.
    timed.clear()

    def slow(size):
        timed.append(size)
        return 100.0

    assert choose(10_000_000, VOCAB, Budget(seconds=120), slow).size == LADDER[0]
    assert set(timed) == {LADDER[0]}


def test_speeds_are_timed_once_per_machine_and_settings(tmp_path):
    size = auto.Size(1, 16, 8, 8, 4, 1e-2, 0.01)
    cpu = Precision("cpu", None)
    first = Speeds(torch.device("cpu"), cpu, vocab=20, cache=tmp_path / "speeds.json")
    rate = first(size)
    assert rate > 0 and first.measured == 1 and first.seconds > 0
    again = Speeds(torch.device("cpu"), cpu, vocab=20, cache=tmp_path / "speeds.json")
    assert again(size) == rate and again.measured == 0
    other_vocab = Speeds(torch.device("cpu"), cpu, vocab=200, cache=tmp_path / "speeds.json")
    other_vocab(size)
    assert other_vocab.measured == 1
    assert len(json.loads((tmp_path / "speeds.json").read_text())) == 2


def test_an_unreadable_cache_is_timed_again(tmp_path):
    cache = tmp_path / "speeds.json"
    cache.write_text("{not json")
    speeds = Speeds(torch.device("cpu"), Precision("cpu", None), vocab=20, cache=cache)
    assert speeds(auto.Size(1, 16, 8, 8, 4, 1e-2, 0.01)) > 0 and speeds.measured == 1


def test_auto_is_the_default_preset():
    assert make_config(None, {}).to_dict() == make_config("auto", {}).to_dict()


def test_explicit_flags_win_and_the_choice_is_one_line(tmp_path, repetitive_corpus, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    r = run_cli(
        "train",
        repetitive_corpus,
        "--layers",
        "1",
        "--hidden",
        "24",
        "--embed",
        "8",
        "--seq-len",
        "16",
        "--batch-size",
        "4",
        "--steps",
        "3",
        "--out",
        tmp_path / "run",
    )
    assert r.exit_code == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("auto:")]
    assert len(lines) == 1
    assert "LSTM 1x24" in lines[0] and "batch 4 x seq 16" in lines[0] and "3 steps" in lines[0]
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["train_config"]
    sizes = (saved["layers"], saved["hidden"], saved["embed"], saved["seq_len"], saved["batch_size"])
    assert sizes == (1, 24, 8, 16, 4)
    # Nothing to time for a budget of steps (the speed cache was not even created).
    assert not (tmp_path / "cache").exists()


def test_auto_times_the_ladder_for_a_time_budget_and_pays_for_it(tmp_path, repetitive_corpus, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    ladder = (auto.Size(1, 16, 8, 16, 8, 1e-2, 0.01), auto.Size(1, 32, 16, 16, 8, 1e-2, 0.01))
    monkeypatch.setattr(auto, "LADDER", ladder)
    r = run_cli("train", repetitive_corpus, "--time", "3s", "--base", "none", "--out", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    line = next(line for line in r.stderr.splitlines() if line.startswith("auto:"))
    assert "timed in" in line and "chars/s" in line and "passes" in line
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["train_config"]
    assert saved["hidden"] in (16, 32) and saved["time"] < 3
    again = run_cli("train", repetitive_corpus, "--time", "3s", "--base", "none", "--out", tmp_path / "run2")
    assert "timed earlier on this machine" in again.stderr


def test_named_presets_and_resumed_runs_skip_auto(tmp_path, repetitive_corpus):
    r = run_cli("train", repetitive_corpus, "--preset", "tiny", *TINY, "--steps", "2", "--out", tmp_path / "run")
    assert r.exit_code == 0, r.stderr
    assert "auto:" not in r.stderr
    again = run_cli("train", "--resume", tmp_path / "run", "--steps", "4")
    assert again.exit_code == 0, again.stderr
    assert "auto:" not in again.stderr


def test_a_fine_tune_keeps_the_checkpoints_size(tmp_path, trained_run, repetitive_corpus):
    r = run_cli(
        "train", repetitive_corpus, "--init-from", trained_run / "best.pt", "--steps", "2", "--out", tmp_path / "tuned"
    )
    assert r.exit_code == 0, r.stderr
    assert "LSTM 1x32" in next(line for line in r.stderr.splitlines() if line.startswith("auto:"))


def test_dropout_rule_is_a_step_in_params_per_token():
    assert auto.dropout_for(1_000_000, 10_000_000, passes=5) == 0
    assert auto.dropout_for(1_000_000, 100_000, passes=1.5) == 0  # reads its text barely once
    assert auto.dropout_for(3_000_000, 1_000_000, passes=10) == 0.2
    assert auto.dropout_for(3_000_000, 80_000, passes=20) == 0.3
    assert math.isclose(
        choose(80_000, VOCAB, Budget(seconds=120), AMX).retrain_dropout,
        min(0.5, choose(80_000, VOCAB, Budget(seconds=120), AMX).dropout + 0.1),
    )


def resolved(given: dict, corpus_tokens: int = 60_000_000, device: str = "cpu"):
    """What resolve makes of flags for a budget of steps (no timing), and its line."""
    from charrnn.runtime.distributed import World

    lines = []
    cfg = make_config("auto", given)
    cfg = auto.resolve(cfg, set(given), corpus_tokens, VOCAB, "char", torch.device(device), World(), None, lines.append)
    return cfg, lines[0]


def test_a_cpu_never_gets_the_gpu_sized_model_and_a_given_window_counts():
    cfg, line = resolved({"steps": 100_000})
    assert cfg.hidden < 1024 and line.startswith("auto: LSTM ")
    small_batch, _ = resolved({"steps": 300})
    big_batch, line = resolved({"steps": 300, "batch_size": 512})
    assert big_batch.batch_size == 512 and "(given: --batch-size)" in line
    assert big_batch.hidden * big_batch.layers > small_batch.hidden * small_batch.layers


def test_a_gru_counts_its_own_parameters():
    lstm, gru = LADDER[3], auto.Size(**{**LADDER[3].__dict__, "cell": "gru"})
    assert gru.params(VOCAB) < lstm.params(VOCAB)
    cfg, line = resolved({"steps": 2000, "model": "gru"})
    assert line.startswith("auto: GRU ")


def test_a_cache_that_is_not_a_table_is_timed_again(tmp_path):
    cache = tmp_path / "speeds.json"
    cache.write_text("[1, 2]")
    speeds = Speeds(torch.device("cpu"), Precision("cpu", None), vocab=20, cache=cache)
    assert speeds(auto.Size(1, 16, 8, 8, 4, 1e-2, 0.01)) > 0 and speeds.measured == 1
    assert len(json.loads(cache.read_text())) == 1
