"""Where a new run starts: the bundled English base model or random weights.

A model that already reads English learns a small English text in minutes where random weights
spend them inventing words; on text unlike the base's books (code, LaTeX, another language) or
with a budget that reads a large text many times over, its head start is worth little or
nothing. ``--base english`` and ``--base none`` choose; under ``--preset auto`` without either,
the corpus decides: how much of its text the base's characters spell, and how many bits per
character the base needs for a sample of it (its "zero-shot" bpc, measured here in about a
second), by the rule in ``prefers_base``, whose limits come from ``bench/base.py``'s panel.
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


def prefers_base(fit: Fit) -> bool:
    """Auto's rule: start from the base where it already reads the text well."""
    return fit.coverage >= MIN_COVERAGE and fit.bpc <= MAX_ZERO_SHOT_BPC


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


def corpus_sample(paths: list[str], keep_gutenberg: bool, limit: int = SAMPLE_CHARS) -> str:
    """The first ``limit`` characters of the corpus as training reads it."""
    from charrnn.data import corpus

    sources = corpus.open_sources(paths)
    try:
        pieces, size = [], 0
        for text, _ in corpus.iter_corpus(sources, keep_gutenberg):
            pieces.append(text[: limit - size])
            size += len(pieces[-1])
            if size >= limit:
                break
        return "".join(pieces)
    finally:
        corpus.release(sources)


def choose_start(
    base: str | None, auto: bool, paths: list[str], keep_gutenberg: bool, log: Callable[[str], None]
) -> dict[str, Any] | None:
    """The base model's checkpoint where this run starts from it, else None (random weights).

    ``base`` is the ``--base`` flag (None: not given; its value checked by ``train_run``); without
    it only ``--preset auto`` may choose the base, and says why in one line.
    """
    from charrnn.model import checkpoint

    if base == NONE or (base is None and not auto):
        return None
    found = checkpoint.bundled_base()
    if not found.is_file():
        if base == ENGLISH:
            raise CharrnnError(f"--base english: this installation lacks the bundled base model ({found})")
        return None
    ckpt = checkpoint.load(found)
    if base == ENGLISH:
        return ckpt
    fit = fit_of(ckpt, corpus_sample(paths, keep_gutenberg))
    chosen = prefers_base(fit)
    cfg = ckpt["model_config"]
    verdict = (
        f"from the English base ({cfg['model'].upper()} {cfg['layers']}x{cfg['hidden']})"
        if chosen
        else "from random weights"
    )
    log(
        f"auto: {verdict}: the base reads this text at {fit.bpc:.2f} bpc before training and spells "
        f"{100 * fit.coverage:.1f}% of its characters (first {fit.chars:,}; it starts runs at <= "
        f"{MAX_ZERO_SHOT_BPC:g} bpc and >= {100 * MIN_COVERAGE:g}%; --base english|none overrides)"
    )
    return ckpt if chosen else None
