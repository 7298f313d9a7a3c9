"""Where a new run starts: the bundled English base model or random weights.

A model that already reads English learns a small English text in minutes where random weights
spend them inventing words; on text unlike the base's books (code, LaTeX, another language) a
small fresh model learns faster for the first minutes, and the base's larger model passes it
only given time, and only on a text small enough for the fresh one to read many times over.
``--base english`` and ``--base none`` choose; under ``--preset auto`` without either, the
corpus and the budget decide: how much of its text the base's characters spell, how many bits
per character the base needs for a sample of it (its "zero-shot" bpc, measured here in about a
second), the corpus's size and the run's time, by the rule in ``prefers_base``, whose limits
come from ``bench/base.py``'s panel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from charrnn.errors import CharrnnError

ENGLISH, NONE = "english", "none"
CHOICES = (ENGLISH, NONE)
# The sample of the corpus the base reads: at most this many characters, from its start.
SAMPLE_CHARS = 16_384
# The base starts a run when at least this share of the corpus's characters are in its
# vocabulary and it reads the sample in at most this many bits per character. The panel's
# English texts read at 1.77-2.84 bpc (War and Peace, Earnest, tinyshakespeare, the demo
# screenplays) and the others at 4.88-6.34 (Don Quijote in Spanish, LaTeX, kernel C): the
# limit sits between them (bench/base.py --fits-only; docs/benchmarks.md).
MIN_COVERAGE = 0.99
MAX_ZERO_SHOT_BPC = 3.5
# Text the base does not read starts from it in a run of at least LONG_RUN_SECONDS on a corpus of
# at most LONG_RUN_MAX_BYTES whose characters it mostly spells: at 2 minutes random weights won
# Don Quijote (Spanish, 2.2 MB), the Stacks LaTeX (1.8 MB, 96% spelled) and the kernel C (64 MB)
# by 0.11-0.19 bpc; at 10 minutes the base won the first two by 0.011-0.015 (the shipped base
# by 0.013 and 0.020) and lost the kernel by 0.073, where a fresh model reads fresh text all the
# way (0.1 of a pass); at 5 minutes random weights still won the first two. Thin evidence
# (three budgets, three texts; nothing measured between 2.2 and 64 MB): the time limit is the
# budget measured to gain, the size limit a text the fresh run still reads about twice in 10
# minutes on a 2-core CPU (13M characters read on Quijote), and the coverage limit just under
# the LaTeX's.
LONG_RUN_SECONDS = 600.0
LONG_RUN_MAX_BYTES = 6_000_000
LONG_RUN_COVERAGE = 0.95
# The peak learning rate of a run that starts from the base, unless --lr is given: a third of a
# fresh 2x512's, so the first steps refine what the base knows instead of shaking it loose
# (earnest, 200 steps from a partial base: 1e-2 1.611, 3e-3 1.575, 1e-3 1.639 val bpc).
FINE_TUNE_LR = 3e-3


@dataclass(frozen=True)
class Fit:
    """How well the base model reads a corpus before any training on it."""

    coverage: float  # the share of the sample's characters the base's vocabulary has
    bpc: float  # bits per character of the sample's known characters under the base
    chars: int  # characters sampled


def reads_well(fit: Fit) -> bool:
    """Whether the base already reads the text: English, as its books are."""
    return fit.coverage >= MIN_COVERAGE and fit.bpc <= MAX_ZERO_SHOT_BPC


def prefers_base(fit: Fit, seconds: float | None, corpus_bytes: int) -> bool:
    """Auto's rule: start from the base where it already reads the text, or where the run is
    long enough for its model to pass a fresh one on a text that the fresh one would read over
    and over (``seconds`` None: a budget in steps or passes, which the rule does not weigh)."""
    if reads_well(fit):
        return True
    long_run = seconds is not None and seconds >= LONG_RUN_SECONDS
    return long_run and corpus_bytes <= LONG_RUN_MAX_BYTES and fit.coverage >= LONG_RUN_COVERAGE


def fit_of(base: dict[str, Any], text: str) -> Fit:
    """The base's coverage of ``text`` and its bits per character on the known characters."""
    import torch

    from charrnn.evaluation.bpc import evaluate
    from charrnn.model import checkpoint

    model, vocab = checkpoint.build_model(base)
    missing = set(vocab.missing(text))
    known = "".join(c for c in text if c not in missing)
    coverage = len(known) / max(1, len(text))
    if len(known) < 2:
        return Fit(coverage, float("inf"), len(text))
    return Fit(coverage, evaluate(model, vocab.encode(known), torch.device("cpu")).bpc, len(text))


def corpus_sample(paths: list[str], keep_gutenberg: bool, limit: int = SAMPLE_CHARS) -> tuple[str, int]:
    """The first ``limit`` characters of the corpus as training reads it, and its size in bytes."""
    from charrnn.data import corpus

    sources = corpus.open_sources(paths)
    try:
        pieces, size = [], 0
        for text, _ in corpus.iter_corpus(sources, keep_gutenberg):
            pieces.append(text[: limit - size])
            size += len(pieces[-1])
            if size >= limit:
                break
        return "".join(pieces), sum(source.size for source in sources)
    finally:
        corpus.release(sources)


def choose_start(
    base: str | None,
    auto: bool,
    paths: list[str],
    keep_gutenberg: bool,
    seconds: float | None,
    log: Callable[[str], None],
) -> dict[str, Any] | None:
    """The base model's checkpoint where this run starts from it, else None (random weights).

    ``base`` is the ``--base`` flag (None: not given; its value checked by ``train_run``); without
    it only ``--preset auto`` may choose the base, for a run of ``seconds`` (None: not timed),
    and says why in one line.
    """
    from charrnn.data.corpus import STDIN
    from charrnn.model import checkpoint

    if base == NONE or (base is None and not auto):
        return None
    found = checkpoint.bundled_base()
    if not found.is_file():
        if base == ENGLISH:
            raise CharrnnError(f"--base english: this installation lacks the bundled base model ({found})")
        return None
    if base is None and STDIN in paths:  # read once, by the run: the base cannot read a sample of it first
        log("auto: from random weights: a corpus from stdin is read once, by the run (--base english: from the base)")
        return None
    ckpt = checkpoint.load(found)
    if base == ENGLISH:
        return ckpt
    sample, size = corpus_sample(paths, keep_gutenberg)
    fit = fit_of(ckpt, sample)
    chosen = prefers_base(fit, seconds, size)
    log(_said(fit, chosen, ckpt["model_config"], seconds, size))
    return ckpt if chosen else None


def _said(fit: Fit, chosen: bool, cfg: dict[str, Any], seconds: float | None, size: int) -> str:
    """Auto's one line: where the run starts, and the figures the rule read."""
    verdict = (
        f"from the English base ({cfg['model'].upper()} {cfg['layers']}x{cfg['hidden']})"
        if chosen
        else "from random weights"
    )
    read = (
        f"the base reads this text at {fit.bpc:.2f} bpc before training and spells "
        f"{100 * fit.coverage:.1f}% of its characters (first {fit.chars:,})"
    )
    if reads_well(fit):
        why = f"it starts runs at <= {MAX_ZERO_SHOT_BPC:g} bpc and >= {100 * MIN_COVERAGE:g}%"
    else:
        budget = f"{seconds / 60:g} min" if seconds is not None else "a budget in steps or passes"
        why = (
            f"on other text, runs of >= {LONG_RUN_SECONDS / 60:g} min on <= {LONG_RUN_MAX_BYTES / 1e6:g} MB "
            f"with >= {100 * LONG_RUN_COVERAGE:g}% of characters known; this run: {budget}, {size / 1e6:.2f} MB"
        )
    return f"auto: {verdict}: {read}; {why}; --base english|none overrides"
