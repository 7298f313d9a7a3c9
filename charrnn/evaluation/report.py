"""What ``charrnn eval`` reports: a checkpoint's score of some text files, static and, with a
dynamic-evaluation rule, dynamic too. The CLI prints it; the API's ``Model.score`` scores a string."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from charrnn.data import corpus
from charrnn.evaluation.bpc import score_text, text_ids
from charrnn.evaluation.dynamic import Rule, compare, stats_ids
from charrnn.model import checkpoint


def score_files(
    checkpoint_path: Path,
    paths: list[str],
    skip_unknown: bool = False,
    keep_gutenberg: bool | None = None,
    rule: Rule | None = None,
    stats_text: str | None = None,
    note_skipped: Callable[[list[str]], None] = lambda files: None,
) -> dict[str, Any]:
    """Bits per character, per token and perplexity of the files' text (and the dynamic ones).

    ``keep_gutenberg`` None reads a Project Gutenberg book as the model was trained: a model
    from before the Gutenberg rule was trained on whole files.
    """
    ckpt = checkpoint.load(checkpoint_path)
    model, vocab = checkpoint.build_model(ckpt)
    if keep_gutenberg is None:
        keep_gutenberg = bool(ckpt.get("train_config", {}).get("keep_gutenberg", "train_config" in ckpt))
    skipped: list[str] = []
    sources = corpus.open_sources(paths, skipped=skipped)
    note_skipped(skipped)
    try:
        body = corpus.read_text(sources, keep_gutenberg)
    finally:
        corpus.release(sources)
    if rule is None:
        (score, dropped), extra = score_text(model, vocab, body, skip_unknown), {}
    else:
        ids, dropped = text_ids(vocab, body, skip_unknown)
        stats = stats_ids(ckpt, vocab, stats_text) if rule.needs_stats else None
        both = compare(model, ids, rule, stats, vocab.count_chars(ids[1:]))
        score, extra = both.static, both.as_dict()
    return {
        "bpc": round(score.bpc, 5),
        "bits_per_token": round(score.bits_per_token, 5),
        "perplexity": round(score.perplexity, 4),
        "chars": score.chars,
        "tokens": score.tokens,
        "skipped_chars": dropped,
        **extra,
    }
