"""Dynamic evaluation (Krause et al. 2018): a copy of the model goes on learning from the text
it reads.

The text is read as one stream in segments. Each segment is scored with the weights as they
stand, and only then does a gradient step on that segment's loss move the weights, so every
prediction is still made before its character is seen. The model picks up the text's own
names, spelling and style within a few segments, which a static model cannot.

Two update rules. ``rms`` is Krause et al.'s: each gradient is divided by its root-mean-square
over segments of the training text (so a step moves every weight by about the learning rate,
whatever the scale of its gradients), and every weight is pulled back toward its trained value
at a rate proportional to that same RMS (the weights training moves most may drift most and
return fastest; weights it never moves stay put). ``sgd`` is a plain step with a uniform decay.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from charrnn.data.vocab import Vocab
from charrnn.errors import CharrnnError
from charrnn.evaluation.bpc import Score, _ids
from charrnn.model.network import CharRNN, State, detach_state

METHODS = ("rms", "sgd")
# Defaults measured on models of earnest and warpeace, never on the tinyshakespeare model the
# docs report (docs/adapt.md "How the defaults were chosen").
SEGMENT = 50
DEFAULT_LR = {"rms": 3e-4, "sgd": 0.3}
DEFAULT_DECAY = {"rms": 0.003, "sgd": 0.003}
# The RMS gradients come from this many tokens at the start of the training text: enough for
# every weight's scale, a few seconds of a 2-core CPU for the default model.
STATS_TOKENS = 10_000
# Added to each weight's RMS before dividing, relative to the mean RMS, so that a weight whose
# gradient was ~0 on the training text (a rare character's embedding) cannot take a huge step.
EPS_REL = 0.1
# Dynamic evaluation runs on the CPU.
_CPU = torch.device("cpu")


@dataclass(frozen=True)
class Rule:
    """How the weights move after each segment; ``None`` takes the method's measured default."""

    method: str = "rms"
    lr: float | None = None
    decay: float | None = None
    segment: int = SEGMENT

    def resolved(self) -> Rule:
        """The rule with its defaults filled in, refusing values that make no sense."""
        if self.method not in METHODS:
            raise CharrnnError(f"--dynamic-method must be one of {', '.join(METHODS)} (got {self.method!r})")
        lr, decay = self.rates()
        if not (math.isfinite(lr) and lr >= 0):
            raise CharrnnError(f"--dynamic-lr must be >= 0 (got {self.lr})")
        if not (math.isfinite(decay) and 0 <= decay <= 1):
            raise CharrnnError(f"--dynamic-decay must be in [0, 1] (got {self.decay})")
        if self.segment < 1:
            raise CharrnnError(f"--segment must be >= 1 (got {self.segment})")
        return replace(self, lr=lr, decay=decay)

    def rates(self) -> tuple[float, float]:
        """The learning rate and the decay, the method's defaults where None."""
        lr = DEFAULT_LR[self.method] if self.lr is None else float(self.lr)
        decay = DEFAULT_DECAY[self.method] if self.decay is None else float(self.decay)
        return lr, decay

    @property
    def needs_stats(self) -> bool:
        """Whether the update divides by the training text's RMS gradients (a zero step never does)."""
        return self.method == "rms" and bool(self.lr)


def _segments(n: int, segment: int) -> range:
    """Where each segment of ``n`` predictions starts."""
    return range(0, n, segment)


def _pair(ids: np.ndarray, a: int, segment: int) -> tuple[np.ndarray, np.ndarray]:
    """The inputs and targets of the segment at ``a``: the last input is the one before the last token."""
    b = min(a + segment, len(ids) - 1)
    return ids[a:b], ids[a + 1 : b + 1]


def gradient_stats(
    model: CharRNN, ids: np.ndarray, segment: int, tick: Callable[[], None] = lambda: None
) -> list[torch.Tensor]:
    """Mean squared gradient of every weight over the segments of ``ids`` (the training text),
    read as one stream like dynamic evaluation reads, with the trained weights throughout."""
    if len(ids) < 2:
        raise CharrnnError("the text for the gradient statistics is too short (needs at least 2 tokens)")
    was_training = model.training
    model.eval()
    params = list(model.parameters())
    sums = [torch.zeros_like(p) for p in params]
    state = None
    count = 0
    for a in _segments(len(ids) - 1, segment):
        x, y = (_ids(part, _CPU) for part in _pair(ids, a, segment))
        x = x[None]
        logits, state = model(x, state)
        grads = torch.autograd.grad(F.cross_entropy(logits[0].float(), y), params)
        for total, grad in zip(sums, grads):
            total.addcmul_(grad, grad)
        state = detach_state(state)
        count += 1
        tick()
    model.train(was_training)
    return [s / count for s in sums]


class Adapter:
    """A copy of a model, its trained weights kept aside, and the rule that moves it."""

    def __init__(self, model: CharRNN, rule: Rule, stats: list[torch.Tensor] | None = None) -> None:
        import copy

        self.rule = rule.resolved()
        self.model = copy.deepcopy(model).float().eval()
        self.params = list(self.model.parameters())
        self.origin = [p.detach().clone() for p in self.params]
        self.steps = 0
        lr, decay = self.rule.rates()
        self.lr = lr
        if self.rule.needs_stats:
            if stats is None or len(stats) != len(self.params):
                raise CharrnnError("the rms update needs the gradient statistics of the training text")
            rms = [s.float().sqrt() for s in stats]
            mean = float(sum(r.sum() for r in rms)) / sum(r.numel() for r in rms)
            eps = EPS_REL * mean if mean > 0 else 1.0
            self.scale: list[torch.Tensor] | float = [lr / (r + eps) for r in rms]
            # Krause et al. clip the decay so that no weight overshoots its trained value.
            self.pull: list[torch.Tensor] | float = (
                [(decay * r / mean).clamp_(max=1.0) for r in rms] if mean > 0 else decay
            )
        else:
            self.scale, self.pull = lr, decay

    def _update(self, grads: tuple[torch.Tensor, ...]) -> None:
        """Each weight pulled toward its trained value and stepped against its gradient.

        Weight by weight: torch's ``_foreach_`` list calls, used here before, run these same
        per-tensor kernels on a CPU (where dynamic evaluation runs) and saved 40 us of a 25 ms
        segment of a 2x128 LSTM, nothing measurable for a 2x512 (2-core Zen 3 EPYC)."""
        with torch.no_grad():
            for i, (param, origin, grad) in enumerate(zip(self.params, self.origin, grads)):
                pull = origin - param  # toward the trained weights
                pull.mul_(self.pull[i] if isinstance(self.pull, list) else self.pull)
                if isinstance(self.scale, list):
                    pull.addcmul_(grad, self.scale[i], value=-1.0)
                else:
                    pull.add_(grad, alpha=-self.scale)
                param.add_(pull)
        self.steps += 1

    def read(self, x: np.ndarray, y: np.ndarray, state: State | None, learn: bool = True) -> tuple[float, State]:
        """Score one segment (nats) with the weights as they stand, then step on its loss."""
        inputs, targets = _ids(x, _CPU)[None], _ids(y, _CPU)
        moving = learn and self.lr > 0  # with no step the weights never leave their trained values
        with torch.set_grad_enabled(moving):
            logits, state = self.model(inputs, state)
            loss = F.cross_entropy(logits[0].float(), targets, reduction="sum")
        if moving:
            self._update(torch.autograd.grad(loss / len(targets), self.params))
        return float(loss.detach()), detach_state(state)

    def pass_over(
        self, ids: np.ndarray, tick: Callable[[], None] = lambda: None, max_steps: int | None = None
    ) -> float:
        """Read ``ids`` from a zero state, a step after every segment; the nats of its predictions."""
        seg = self.rule.segment
        total, state = 0.0, None
        for a in _segments(len(ids) - 1, seg):
            learn = max_steps is None or self.steps < max_steps
            nats, state = self.read(*_pair(ids, a, seg), state, learn)
            total += nats
            tick()
        return total


@dataclass(frozen=True)
class Comparison:
    static: Score
    dynamic: Score
    static_seconds: float
    dynamic_seconds: float
    rule: Rule

    def as_dict(self) -> dict[str, Any]:
        """The fields ``charrnn eval --dynamic`` adds to the static report."""
        return {
            "dynamic_bpc": round(self.dynamic.bpc, 5),
            "dynamic_bits_per_token": round(self.dynamic.bits_per_token, 5),
            "gain_bpc": round(self.static.bpc - self.dynamic.bpc, 5),
            "dynamic_method": self.rule.method,
            "dynamic_lr": self.rule.lr,
            "dynamic_decay": self.rule.decay,
            "segment": self.rule.segment,
            "static_seconds": round(self.static_seconds, 2),
            "dynamic_seconds": round(self.dynamic_seconds, 2),
        }


def compare(
    model: CharRNN,
    ids: np.ndarray,
    rule: Rule,
    stats_ids: np.ndarray | None,
    chars: int,
    show_progress: bool = True,
) -> Comparison:
    """Static and dynamic scores of ``ids``, each timed; the model itself is never changed.

    Static scoring runs the text as many parallel rows (``charrnn.evaluation.bpc``); dynamic scoring
    cannot, since every segment needs the weights the segments before it produced.
    """
    from charrnn.evaluation.bpc import evaluate
    from charrnn.runtime.progress import LateBar

    rule = rule.resolved()
    t0 = time.monotonic()
    static = evaluate(model, ids, torch.device("cpu"), chars=chars)
    t1 = time.monotonic()
    segments = len(_segments(len(ids) - 1, rule.segment))
    # Without the text an rms rule needs, Adapter says so.
    stats_text = stats_ids if rule.needs_stats else None
    stats_segments = len(_segments(len(stats_text) - 1, rule.segment)) if stats_text is not None else 0
    with LateBar("dynamic evaluation", segments + stats_segments, enabled=show_progress) as bar:
        stats = gradient_stats(model, stats_text, rule.segment, bar.advance) if stats_text is not None else None
        adapter = Adapter(model, rule, stats)
        nats = adapter.pass_over(ids, bar.advance)
    t2 = time.monotonic()
    dynamic = Score(nats=nats, tokens=len(ids) - 1, chars=chars)
    return Comparison(static, dynamic, t1 - t0, t2 - t1, rule)


def training_sample(ckpt: dict[str, Any], vocab: Vocab, tokens: int = STATS_TOKENS) -> np.ndarray | None:
    """The first ``tokens`` of the text the checkpoint was trained on, read again from its files
    (within the training split); None when they are no longer where the run found them."""
    from charrnn.data import corpus
    from charrnn.data.prepare import encode_text, split_point

    paths = list(ckpt.get("corpus", {}).get("paths") or [])
    if not paths or corpus.STDIN in paths:
        return None
    train_cfg = ckpt.get("train_config", {})
    limit = tokens * (1 if vocab.kind == "char" else 8)
    try:
        sources = corpus.open_sources(paths)
        parts, n = [], 0
        chunks = corpus.iter_corpus(sources, bool(train_cfg.get("keep_gutenberg", False)))
        for text, _ in chunks:
            parts.append(text)
            n += len(text)
            if n > 2 * limit:  # far enough in that the validation split cannot start here
                break
        else:
            n = split_point(n, float(train_cfg.get("val_frac", 0.1)))
    except CharrnnError:
        return None
    text = "".join(parts)[: min(n, limit)]
    gone = set(vocab.missing(text))
    if gone:  # the files changed since training: leave out what the vocabulary cannot read
        text = "".join(c for c in text if c not in gone)
    ids = encode_text(vocab, text)[:tokens]
    return ids if len(ids) >= 2 else None


def stats_ids(ckpt: dict[str, Any], vocab: Vocab, path: str | None = None) -> np.ndarray:
    """The text the rms update's gradient statistics come from: ``path`` if given, else the
    start of the checkpoint's own training text."""
    if path is not None:
        from charrnn.data import corpus
        from charrnn.data.prepare import encode_text

        sources = corpus.open_sources([path])
        try:
            text = corpus.read_text(sources)
        finally:
            corpus.release(sources)
        gone = set(vocab.missing(text))
        ids = encode_text(vocab, "".join(c for c in text if c not in gone) if gone else text)[:STATS_TOKENS]
        if len(ids) < 2:
            raise CharrnnError(f"{path}: too short for the gradient statistics (needs at least 2 tokens)")
        return ids
    sample = training_sample(ckpt, vocab)
    if sample is None:
        where = ", ".join(ckpt.get("corpus", {}).get("files", [])[:3]) or "unknown"
        raise CharrnnError(
            f"the rms update needs a sample of the training text and the checkpoint's corpus ({where}) "
            "cannot be read here; give one with --stats-text FILE, or use --dynamic-method sgd"
        )
    return sample


def rule_from_flags(
    dynamic: bool,
    method: str | None,
    lr: float | None,
    decay: float | None,
    segment: int | None,
    flag: str = "--dynamic",
) -> Rule | None:
    """The rule the command line asks for, or None without ``flag``; its options alone are an error."""
    given = [
        name
        for name, v in (
            ("--dynamic-method", method),
            ("--dynamic-lr", lr),
            ("--dynamic-decay", decay),
            ("--segment", segment),
        )
        if v is not None
    ]
    if not dynamic:
        if given:
            raise CharrnnError(f"{given[0]} applies only with {flag}")
        return None
    return Rule(method or "rms", lr, decay, SEGMENT if segment is None else segment).resolved()
