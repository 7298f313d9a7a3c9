"""Where a new run starts: the bundled base model or random weights. ``--base english|none``
choose; under ``--preset auto`` the corpus decides by how well the base reads it; the refusals
are one-line errors; ``sample``, ``serve`` and ``load("base")`` use the base before any
training. A small base trained here stands in for the bundled one where a test needs its own."""

import json

import pytest
from conftest import TINY, run_cli

import charrnn
from charrnn.errors import CharrnnError
from charrnn.model import checkpoint
from charrnn.training import start
from charrnn.training.start import Fit, choose_start, corpus_sample, fit_of, prefers_base


@pytest.fixture(scope="module")
def small_base(trained_run, tmp_path_factory):
    """The tiny trained run's model, as a base: it reads its own corpus well, code badly; a lone
    file, as the bundled base is, without its run's corpus."""
    lone = tmp_path_factory.mktemp("base") / "english.pt"
    lone.write_bytes((trained_run / "best.pt").read_bytes())
    return lone


@pytest.fixture
def as_bundled(monkeypatch, small_base):
    monkeypatch.setattr(checkpoint, "bundled_base", lambda: small_base)
    return small_base


def test_the_rule_weighs_the_fit_the_budget_and_the_size():
    english, small, ten_min = Fit(coverage=1.0, bpc=2.0, chars=1000), 2_000_000, start.LONG_RUN_SECONDS
    assert prefers_base(english, 120, small) and prefers_base(english, None, 10**9)
    assert not prefers_base(Fit(coverage=start.MIN_COVERAGE - 0.01, bpc=2.0, chars=1000), 120, small)
    # Text the base reads badly: from the base only in a long run on a text of a few MB.
    foreign = Fit(coverage=1.0, bpc=start.MAX_ZERO_SHOT_BPC + 0.1, chars=1000)
    assert prefers_base(foreign, ten_min, small) and prefers_base(foreign, 3600, start.LONG_RUN_MAX_BYTES)
    assert not prefers_base(foreign, 120, small) and not prefers_base(foreign, ten_min - 1, small)
    assert not prefers_base(foreign, ten_min, start.LONG_RUN_MAX_BYTES + 1)
    assert not prefers_base(foreign, None, small)  # a budget in steps or passes: not weighed
    assert not prefers_base(Fit(coverage=start.LONG_RUN_COVERAGE - 0.01, bpc=5.0, chars=1000), 3600, small)


def test_fit_measures_the_base_on_the_corpus(small_base, repetitive_corpus, tmp_path):
    base = checkpoint.load(small_base)
    sample, size = corpus_sample([str(repetitive_corpus)], keep_gutenberg=False)
    own = fit_of(base, sample)
    code = tmp_path / "code.c"
    code.write_text("int main(void) { return 0; }\n" * 50)
    other = fit_of(base, corpus_sample([str(code)], keep_gutenberg=False)[0])
    assert own.coverage == 1.0 and own.bpc < 1.0 and size == repetitive_corpus.stat().st_size
    assert own.chars == min(start.SAMPLE_CHARS, len(repetitive_corpus.read_text()))
    assert other.coverage < start.MIN_COVERAGE and other.bpc > own.bpc


def test_auto_starts_from_the_base_where_it_reads_the_text_well(as_bundled, repetitive_corpus, tmp_path):
    said = []
    chosen = choose_start(None, True, [str(repetitive_corpus)], False, 120, said.append)
    assert chosen is not None and chosen["path"] == str(as_bundled)
    assert said and said[0].startswith("auto: from the English base (LSTM 1x32)")
    code = tmp_path / "code.c"
    code.write_text("int main(void) { return 0; }\n" * 50)
    said.clear()
    assert choose_start(None, True, [str(code)], False, 3600, said.append) is None
    assert said[0].startswith("auto: from random weights")


def test_auto_starts_from_the_base_on_text_it_reads_badly_given_a_long_run(as_bundled, repetitive_corpus, tmp_path):
    """The base's own characters in an order it never saw: random weights for a short run, the
    base for a run of ten minutes or more, and the line says which limits decided."""
    shuffled = tmp_path / "shuffled.txt"
    shuffled.write_text(repetitive_corpus.read_text()[::-1])
    said = []
    assert choose_start(None, True, [str(shuffled)], False, 120, said.append) is None
    assert said[0].startswith("auto: from random weights") and "runs of >= 10 min" in said[0]
    assert "this run: 2 min, 0.02 MB" in said[0]
    said.clear()
    assert choose_start(None, True, [str(shuffled)], False, start.LONG_RUN_SECONDS, said.append) is not None
    assert said[0].startswith("auto: from the English base") and "this run: 10 min" in said[0]


def test_auto_trains_a_corpus_from_stdin_from_random_weights(as_bundled, repetitive_corpus, tmp_path):
    """stdin is read once, by the run: auto does not read a sample of it first (which emptied it)."""
    text = repetitive_corpus.read_text()
    r = run_cli("train", "-", "--steps", "2", "--out", tmp_path / "piped", input=text)
    assert r.exit_code == 0, r.stderr
    assert "auto: from random weights: a corpus from stdin is read once" in r.stderr
    assert not checkpoint.load(tmp_path / "piped" / "last.pt")["corpus"]["vocab_given"]  # not the base's


def test_the_flag_overrides_and_other_presets_start_from_random_weights(as_bundled, repetitive_corpus):
    silent = lambda message: pytest.fail(f"said {message!r}")
    assert choose_start("none", True, [str(repetitive_corpus)], False, 600, silent) is None
    assert choose_start(None, False, [str(repetitive_corpus)], False, 600, silent) is None
    assert choose_start("english", False, [str(repetitive_corpus)], False, 600, silent)["path"] == str(as_bundled)


def test_training_from_the_base_fine_tunes_it(as_bundled, repetitive_corpus, tmp_path):
    out = tmp_path / "tuned"
    r = run_cli("train", repetitive_corpus, "--preset", "tiny", "--base", "english", "--steps", "5", "--out", out)
    assert r.exit_code == 0, r.stderr
    ckpt = checkpoint.load(out / "last.pt")
    assert ckpt["model_config"]["hidden"] == 32 and ckpt["corpus"]["vocab_given"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--base", "english", "--hidden", "64"], "--base english trains the base's own model"),
        (["--base", "english", "--vocab", "bpe"], "--base english is a character model"),
        (["--base", "english", "--init-from", "x.pt"], "give --base or --init-from, not both"),
        (["--base", "spanish"], "--base must be english or none (got 'spanish')"),
    ],
)
def test_refusals_are_one_line(as_bundled, repetitive_corpus, tmp_path, flags, message):
    r = run_cli("train", repetitive_corpus, *TINY, "--steps", "2", "--out", tmp_path / "r", *flags)
    assert r.exit_code == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_resume_refuses_a_base(trained_run):
    r = run_cli("train", "--resume", trained_run, "--base", "english")
    assert r.exit_code == 2 and "--base applies to a new run" in r.stderr


def test_without_the_bundled_file_english_is_an_error_and_auto_trains_from_random(
    monkeypatch, tmp_path, repetitive_corpus
):
    monkeypatch.setattr(checkpoint, "bundled_base", lambda: tmp_path / "missing.pt")
    with pytest.raises(CharrnnError, match="lacks the bundled base model"):
        choose_start("english", True, [str(repetitive_corpus)], False, 600, print)
    assert choose_start(None, True, [str(repetitive_corpus)], False, 600, print) is None


def test_sample_and_load_use_the_base_before_any_training(as_bundled, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./checkpoints here
    r = run_cli("sample", "--length", "40", "--seed", "1")
    assert r.exit_code == 0 and len(r.stdout) > 40
    assert "no trained model under ./checkpoints; using the bundled English base model" in r.stderr
    assert charrnn.load("base").path == as_bundled
    r = run_cli("sample", "base", "--length", "20", "--seed", "1", "--json")
    assert json.loads(r.stdout)["longest_copied"] is None  # its training text is not shipped


def test_the_bundled_base_ships_and_says_what_it_is():
    path = checkpoint.bundled_base()
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    r = run_cli("info", "base")
    assert r.exit_code == 0, r.stderr
    for row in ("base model", "corpus sha256", "held back", "pretraining", "trained on", "held-back bpc", "recipe"):
        assert row in r.stdout
    assert path.stat().st_size < 12_000_000
