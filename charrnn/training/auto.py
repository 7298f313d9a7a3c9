"""``--preset auto``: the model for this corpus, this budget and this machine.

The tokens a run reads in its budget decide which size learns most. A model needs to read a
number of tokens in proportion to its parameters before it beats a smaller one (below that it is
still undertrained when the budget ends), so auto takes the largest size of a ladder that reads
at least TOKENS_PER_PARAM tokens per parameter, where the reading rate of each size is timed on
this machine (``charrnn.training.speed``). How often the run will read its text then sets the dropout:
a model that sees its text many times memorises it, the more so the more parameters it has per
token of text. The constants come from the sweeps in docs/auto.md (``bench/auto.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from charrnn.training.config import TrainConfig
from charrnn.training.sizes import LADDER, Size

if TYPE_CHECKING:
    import torch

    from charrnn.runtime.distributed import World


TOKENS_PER_PARAM = 2.5
# ...and has at most this many parameters per token of training text: past it a larger model
# only memorises a short text sooner, whatever its dropout (docs/auto.md: on the 80 kB and 137 kB
# texts 2x256 at 9-12 parameters per token beat 2x512 at 33-44 with dropout 0.2 and 0.5).
MAX_PARAMS_PER_TOKEN = 15.0
# Dropout by parameters per training token, for a run that reads its text at least
# MEMORISING_PASSES times (below that it barely sees a token twice and needs none).
MEMORISING_PASSES = 2.0
DROPOUT_BY_PARAMS_PER_TOKEN = ((1.5, 0.0), (5.0, 0.2), (float("inf"), 0.3))
# The fresh second run after an early stop (charrnn.training.retrain) has this much more dropout.
RETRAIN_EXTRA_DROPOUT = 0.1

SIZE_FLAGS = ("model", "layers", "hidden", "embed")


@dataclass(frozen=True)
class Budget:
    """What stops the run: a time in seconds, a number of steps, or passes over the text."""

    seconds: float | None = None
    steps: int | None = None
    epochs: float | None = None

    def tokens(self, size: Size, corpus_tokens: int, speed: Callable[[Size], float]) -> float:
        """Tokens a run of ``size`` reads in this budget (the run stops at the first limit)."""
        limits = []
        if self.steps is not None:
            limits.append(float(self.steps * size.batch_size * size.seq_len))
        if self.epochs is not None:
            limits.append(self.epochs * corpus_tokens)
        if self.seconds is not None:
            limits.append(speed(size) * self.seconds)
        return min(limits) if limits else 0.0

    @property
    def timed(self) -> bool:
        return self.seconds is not None

    def describe(self) -> str:
        if self.steps is not None:
            return f"{self.steps:,} steps"
        if self.epochs is not None:
            return f"{self.epochs:g} passes"
        s = self.seconds or 0.0
        return f"{s / 3600:.3g} h" if s >= 3600 else f"{s / 60:.3g} min" if s >= 60 else f"{s:.3g} s"


@dataclass(frozen=True)
class Choice:
    """What auto chose, and the figures its line reports."""

    size: Size
    dropout: float
    retrain_dropout: float
    passes: float  # over the training text in the budget (nan: not needed, not timed)
    speed: float | None  # tokens per second, for a time budget


def dropout_for(params: int, corpus_tokens: int, passes: float) -> float:
    """More dropout the more parameters a model has per token of a text it will read often."""
    if passes < MEMORISING_PASSES:
        return 0.0
    ratio = params / max(1, corpus_tokens)
    return next(d for limit, d in DROPOUT_BY_PARAMS_PER_TOKEN if ratio < limit)


def choose(
    corpus_tokens: int,
    vocab: int,
    budget: Budget,
    speed: Callable[[Size], float],
    ladder: tuple[Size, ...] | None = None,
) -> Choice:
    """The largest rung that reads TOKENS_PER_PARAM tokens per parameter in the budget and has
    at most MAX_PARAMS_PER_TOKEN parameters per token of text (the smallest rung if none does).
    ``speed`` is called from the smallest rung up, and not for a rung that could not qualify even
    at the speed of the rung below it, so a slow machine never times a size it could not train."""
    ladder = ladder or LADDER
    chosen, read = ladder[0], budget.tokens(ladder[0], corpus_tokens, speed)
    for size in ladder[1:]:
        p = size.params(vocab)
        if p > MAX_PARAMS_PER_TOKEN * corpus_tokens:
            break
        # A larger size is never faster: at the last one's speed it reads at most this much.
        if budget.tokens(size, corpus_tokens, _at_speed_of(speed, chosen)) < TOKENS_PER_PARAM * p:
            break
        tokens = budget.tokens(size, corpus_tokens, speed)
        if tokens < TOKENS_PER_PARAM * p:
            break
        chosen, read = size, tokens
    passes = read / max(1, corpus_tokens)
    dropout = dropout_for(chosen.params(vocab), corpus_tokens, passes)
    retrain = min(0.5, dropout + RETRAIN_EXTRA_DROPOUT)
    rate = speed(chosen) if budget.timed else None
    return Choice(chosen, dropout, retrain, passes, rate)


def _at_speed_of(speed: Callable[[Size], float], size: Size) -> Callable[[Size], float]:
    """``speed`` as if every size ran at ``size``'s."""
    return lambda _: speed(size)


def apply(cfg: TrainConfig, choice: Choice, given: set[str]) -> TrainConfig:
    """``cfg`` with the choice's settings, except those the user gave as flags."""
    s = choice.size
    values = dict(
        layers=s.layers,
        hidden=s.hidden,
        embed=s.embed,
        seq_len=s.seq_len,
        batch_size=s.batch_size,
        lr=s.lr,
        weight_decay=s.weight_decay,
        dropout=choice.dropout,
        retrain_dropout=choice.retrain_dropout,
        retrain_length=1.5 if s.hidden >= 384 else 1.0,
    )
    if "dropout" in given:
        values.pop("retrain_dropout")  # a dropout the user chose holds for both runs
    for name, value in values.items():
        if name not in given:
            setattr(cfg, name, value)
    return cfg


def describe(
    choice: Choice,
    cfg: TrainConfig,
    corpus_tokens: int,
    unit: str,
    given: set[str],
    timed: str,
    from_checkpoint: bool = False,
) -> str:
    """The one line that says what auto chose and why."""
    budget = Budget(cfg.time, cfg.steps, cfg.epochs).describe()
    speed = f" at ~{float(f'{choice.speed:.3g}'):,.0f} {unit}s/s {timed}" if choice.speed is not None else ""
    passes = f": ~{choice.passes:.3g} passes" if choice.passes == choice.passes and cfg.epochs is None else ""
    kept = sorted(given & {*SIZE_FLAGS, "dropout", "seq_len", "batch_size", "lr", "weight_decay"})
    overrides = f" (given: {', '.join('--' + k.replace('_', '-') for k in kept)})" if kept else ""
    overrides += " (size of the --init-from checkpoint)" if from_checkpoint else ""
    return (
        f"auto: {cfg.model.upper()} {cfg.layers}x{cfg.hidden}, dropout {cfg.dropout:g}, "
        f"batch {cfg.batch_size} x seq {cfg.seq_len} — {_count(corpus_tokens)} {unit}s, "
        f"{budget}{speed}{passes}{overrides}"
    )


def _count(n: float) -> str:
    return f"{n / 1e6:.3g}M" if n >= 1e6 else f"{n / 1e3:.3g}k" if n >= 1e3 else f"{n:.0f}"


def resolve(
    cfg: TrainConfig,
    given: set[str],
    corpus_tokens: int,
    vocab: int,
    unit: str,
    device: torch.device,
    world: World,
    init: dict[str, Any] | None,
    log: Callable[[str], None],
) -> TrainConfig:
    """Fill ``cfg`` (the auto preset's) with what auto chooses for this corpus, budget and machine.

    Sizes given as flags, or fixed by the checkpoint a fine-tune starts from, are kept; auto then
    sets the rest (dropout, window, batch, learning rate) for that size. A window or batch given
    is the one every size is timed and counted with. The timing's seconds come out of a time
    budget. Under torchrun every rank takes the largest rung and dropout any rank chose, so all
    train the same model.
    """
    from dataclasses import replace

    from charrnn.model.network import check_cell
    from charrnn.runtime import distributed, precision
    from charrnn.training.speed import Speeds

    kept, fixed = _keep_given_sizes(cfg, given, init)
    shape = {k: getattr(cfg, k) for k in ("seq_len", "batch_size") if k in kept}
    ladder = tuple(
        replace(s, cell=check_cell(cfg.model), **shape) for s in LADDER if device.type == "cuda" or not s.gpu_only
    )
    speeds = Speeds(device, precision.resolve(cfg.precision, device, cfg.model), vocab, world.size, cfg.model)
    budget = Budget(cfg.time, cfg.steps, cfg.epochs)
    sized = bool(kept & {"layers", "hidden", "embed"})
    if sized:
        choice = _for_size(cfg, kept, corpus_tokens, vocab, budget, speeds, ladder)
    else:
        choice = choose(corpus_tokens, vocab, budget, speeds, ladder)
    # Under torchrun every rank takes the largest rung and dropout any rank chose.
    rung, dropout, retrain = distributed.max_all(
        world, -1.0 if sized else float(ladder.index(choice.size)), choice.dropout, choice.retrain_dropout
    )
    if not sized and ladder[int(rung)] != choice.size:
        size = _with_size(cfg, ladder[int(rung)])
        choice = _for_size(size, {"layers", "hidden", "embed"}, corpus_tokens, vocab, budget, speeds, ladder)
    choice = replace(choice, dropout=dropout, retrain_dropout=retrain)
    cfg = apply(cfg, choice, kept)
    cfg.check()
    timed = f"(timed in {speeds.seconds:.1f} s)" if speeds.measured else "(timed earlier on this machine)"
    log(describe(choice, cfg, corpus_tokens, unit, given, timed, bool(fixed.keys() & {"layers", "hidden"})))
    if cfg.time is not None and speeds.seconds:
        cfg.time = max(cfg.time - speeds.seconds, 0.1 * cfg.time)
    return cfg


def _keep_given_sizes(
    cfg: TrainConfig, given: set[str], init: dict[str, Any] | None
) -> tuple[set[str], dict[str, Any]]:
    """The size settings auto must keep: those given as flags, and those of the checkpoint a
    fine-tune starts from (set on ``cfg`` here); and the latter alone."""
    from charrnn.model.network import ModelConfig

    theirs = ModelConfig.from_dict(init["model_config"]).to_dict() if init is not None else {}
    fixed = {k: theirs[k] for k in (*SIZE_FLAGS, "tie") if k in theirs and k not in given}
    for name, value in fixed.items():
        setattr(cfg, name, value)
    return given | set(fixed), fixed


def _with_size(cfg: TrainConfig, size: Size) -> TrainConfig:
    cfg.layers, cfg.hidden, cfg.embed = size.layers, size.hidden, size.embed
    return cfg


def _for_size(
    cfg: TrainConfig,
    kept: set[str],
    corpus_tokens: int,
    vocab: int,
    budget: Budget,
    speed: Callable[[Size], float],
    ladder: tuple[Size, ...],
) -> Choice:
    """The choice for a size fixed by flags or a checkpoint: the settings of the rung nearest
    its width (its depth and embedding as given, else the rung's), its dropout from how often it
    will read the text."""
    from dataclasses import replace

    near = min(ladder, key=lambda s: abs(s.hidden - cfg.hidden))
    size = replace(near, **{k: getattr(cfg, k) for k in ("layers", "hidden", "embed") if k in kept})
    if "dropout" in kept:  # nothing left that needs the size's speed: do not time it
        return Choice(size, cfg.dropout, cfg.dropout, float("nan"), None)
    passes = budget.tokens(size, corpus_tokens, speed) / max(1, corpus_tokens)
    dropout = dropout_for(size.params(vocab), corpus_tokens, passes)
    rate = speed(size) if budget.timed else None
    return Choice(size, dropout, min(0.5, dropout + RETRAIN_EXTRA_DROPOUT), passes, rate)
