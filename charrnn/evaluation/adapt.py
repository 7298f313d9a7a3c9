"""``sample --adapt``: a copy of the model adapted to a passage in seconds, then sampled.

The copy reads the passage a few times with the dynamic-evaluation update (``charrnn.evaluation.dynamic``),
so it writes "more like this": the passage's names, spelling and manner. The checkpoint file is
only ever read; ``--save-adapted`` writes the adapted copy as a checkpoint of its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charrnn.data import corpus
from charrnn.data.vocab import Vocab
from charrnn.errors import CharrnnError
from charrnn.evaluation.dynamic import Adapter, Rule, gradient_stats, training_sample
from charrnn.model import checkpoint
from charrnn.model.network import CharRNN

# Passes over the passage and the most update steps in all: measured on passages of earnest and
# warpeace with their own models (docs/adapt.md), where a third pass still helped and a fifth did not.
PASSES = 3
MAX_STEPS = 300
# The tokens of the passage the sample reads before it writes (its context, not its weights).
CONTEXT_TOKENS = 4096


@dataclass
class Adapted:
    model: CharRNN
    context: list[int]  # what the sample reads first: the end of the passage
    last_line: str  # the part of it printed before the sample (the line it continues)
    steps: int
    names: list[str]


def read_passages(files: list[str]) -> tuple[str, list[str]]:
    """The texts given to ``--adapt`` joined in order, each checked on its own (an empty or
    non-text file is named, not silently passed over)."""
    texts, names = [], []
    for name in files:
        sources = corpus.open_sources([name])
        try:
            text = "".join(t for t, _ in corpus.iter_corpus(sources, keep_gutenberg=True))
        finally:
            corpus.release(sources)
        shown = "stdin" if name == corpus.STDIN else name
        if not text.strip():
            raise CharrnnError(f"--adapt {shown}: the text is empty")
        texts.append(text)
        names.append(shown)
    return "".join(texts), names


def split_last_line(text: str) -> tuple[str, str]:
    """(everything before the last line, the last line): the sample continues that line, after
    its newline when the passage ends with one."""
    body = text.rstrip("\n")
    cut = body.rfind("\n") + 1
    return text[:cut], text[cut:]


def adapt(
    ckpt: dict[str, Any],
    model: CharRNN,
    vocab: Vocab,
    files: list[str],
    max_steps: int | None = None,
    unknown: str = "error",
    rule: Rule = Rule(),
    show_progress: bool = True,
    save_to: Path | None = None,
) -> Adapted:
    """A copy of ``model`` adapted to the passages in ``files``; ``model`` is left as it was, and
    with ``save_to`` the copy is also written there as a checkpoint.

    The gradient statistics come from the start of the checkpoint's training text, like
    ``eval --dynamic``; where that text cannot be read any more, from the passage itself.
    """
    from charrnn.data.vocab import encode_prime

    steps = MAX_STEPS if max_steps is None else max_steps
    if steps < 1:
        raise CharrnnError(f"--adapt-steps must be >= 1 (got {steps})")
    if save_to is not None:
        _check_target(ckpt, save_to)
    text, names = read_passages(files)
    before, last = split_last_line(text)
    ids = np.asarray(encode_prime(vocab, text, unknown, what="the --adapt text"), dtype=np.int64)
    if len(ids) < 2:
        raise CharrnnError("the --adapt text is too short (needs at least 2 tokens)")
    adapter = adapt_ids(ckpt, model, vocab, ids, steps, rule, show_progress)
    before_ids = encode_prime(vocab, before, "skip") if before else []
    last_ids = encode_prime(vocab, last, "skip")
    context = (before_ids + last_ids)[-CONTEXT_TOKENS:]
    adapted = Adapted(adapter.model, context, vocab.decode(last_ids), adapter.steps, names)
    if save_to is not None:
        save_adapted(ckpt, adapted, save_to)
    return adapted


def adapt_ids(
    ckpt: dict[str, Any],
    model: CharRNN,
    vocab: Vocab,
    ids: np.ndarray,
    max_steps: int = MAX_STEPS,
    rule: Rule = Rule(),
    show_progress: bool = False,
    passes: int = PASSES,
) -> Adapter:
    """An Adapter whose copy of ``model`` has read ``ids`` up to ``passes`` times, stepping after
    each segment, ``max_steps`` steps in all."""
    from charrnn.runtime.progress import LateBar

    rule = rule.resolved()
    stats_ids = training_sample(ckpt, vocab) if rule.needs_stats else None
    if rule.needs_stats and stats_ids is None:
        stats_ids = ids
    per_pass = -(-(len(ids) - 1) // rule.segment)
    passes = max(1, min(passes, -(-max_steps // per_pass)))
    stats_segments = -(-(len(stats_ids) - 1) // rule.segment) if stats_ids is not None else 0
    with LateBar("adapting", stats_segments + passes * per_pass, enabled=show_progress) as bar:
        stats = gradient_stats(model, stats_ids, rule.segment, bar.advance) if stats_ids is not None else None
        adapter = Adapter(model, rule, stats)
        for _ in range(passes):
            adapter.pass_over(ids, bar.advance, max_steps=max_steps)
    return adapter


def _check_target(ckpt: dict[str, Any], path: Path) -> None:
    """Refuse, before any work, a --save-adapted path that would overwrite the checkpoint."""
    source = Path(ckpt["path"])
    if path.exists() and source.exists() and os.path.samefile(path, source):
        raise CharrnnError(f"--save-adapted {path}: that is the checkpoint being adapted; give another path")
    if path.is_dir():
        raise CharrnnError(f"--save-adapted {path}: is a directory; give a file name such as {path / 'adapted.pt'}")


def save_adapted(ckpt: dict[str, Any], adapted: Adapted, path: Path) -> None:
    """Write the adapted copy as an ordinary checkpoint (sample, eval and info read it; a fine-tune
    may start from it), never over the checkpoint it came from."""
    _check_target(ckpt, path)
    source = Path(ckpt["path"])
    payload = {k: v for k, v in ckpt.items() if k not in ("path", "format", "version", "resume")}
    payload["state_dict"] = {k: v.detach().clone() for k, v in adapted.model.state_dict().items()}
    # The validation scores were the unadapted model's.
    payload.update(
        val_bpc=None,
        best_val_bpc=None,
        adapted={"from": str(source), "texts": adapted.names[:100], "steps": adapted.steps},
    )
    checkpoint.save(payload, path)
