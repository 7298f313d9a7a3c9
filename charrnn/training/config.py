"""Run settings: presets, the training configuration, and durations like ``10m``."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields

from charrnn.errors import CharrnnError

# Sizes measured on a 2-core CPU (see README "Presets"): each preset is the model that reached
# the lowest validation bpc on tinyshakespeare within its time budget. Large was measured on an
# H100: dropout 0.5 and weight decay 0.1 reached 2.099 where 0.2 and 0.01 reached 2.128.
# Dropout: on a CPU with AMX (bfloat16, ~2.5x the text per minute) ten minutes of small are ten
# passes over tinyshakespeare, and dropout 0 / 0.2 / 0.3 reached 2.093 (early stop) / 2.004 /
# 1.999; on an AVX2 CPU in float32 (three passes) 0.1 had been within noise of 0 (2.142 / 2.146
# in 1,000 steps), so small takes 0.2. Medium with dropout 0.3 reached the same 2.073 as 0.1 over
# its 2,876 float32 steps on that CPU, and reads its text 2.5x as often with AMX: it takes 0.3.
# retrain_dropout and retrain_length are for the second run after an early stop, which only comes
# once a run has memorised its text (README "Early stop"). Measured on the demo screenplay, small:
# dropout 0 / 0.3 over the first run's 288 steps reached 2.554 / 2.579, 0.3 over 432 (1.5x) /
# 576 / 820 steps 2.514 / 2.513 / 2.542; tiny, after a first run of 684 steps: dropout 0.1 over
# 684 / 1,368 / 2,052 steps reached 2.528 / 2.569 / 2.559 (and 0.3 over 650, 2.583). On Earnest
# (play only), small, 0.3 over 1x / 1.5x the first run's 480 steps: 2.003 / 2.007, dropout 0
# over 1x: 2.069 (those first runs had dropout 0). Medium, with dropout 0.1 then: on Earnest its
# first run reached 2.105 (stopped at step 832), the second, 0.3 over 1.5x, 2.053 (stopped at 832
# too). Its first run now has 0.3 itself, so its second is as long as the first (retrain_length
# applies only to a second run with more dropout).
PRESETS: dict[str, dict] = {
    "tiny": dict(model="lstm", layers=2, hidden=256, embed=128, dropout=0.0, retrain_dropout=0.1, seq_len=64,
                 batch_size=32, lr=1e-2, time="2m"),
    "small": dict(model="lstm", layers=2, hidden=512, embed=128, dropout=0.2, retrain_dropout=0.3, retrain_length=1.5,
                  seq_len=100, batch_size=32, lr=1e-2, weight_decay=0.1, time="10m"),
    "medium": dict(model="lstm", layers=3, hidden=640, embed=128, dropout=0.3, retrain_dropout=0.3,
                   seq_len=100, batch_size=32, lr=6e-3, weight_decay=0.1, time="60m"),
    "large": dict(model="lstm", layers=3, hidden=1024, embed=256, dropout=0.5, seq_len=200, batch_size=128,
                  lr=4e-3, weight_decay=0.1, time="60m"),
}
# ``auto`` starts from small's values; charrnn.training.auto replaces them once the corpus is read and
# this machine's speed is known (see docs/auto.md).
PRESETS["auto"] = dict(PRESETS["small"])
DEFAULT_PRESET = "auto"
# Presets sized for a GPU: on a 2-core CPU the large preset's step takes ~25 s, so a smaller
# preset learns more in the same time (the CLI says so before training).
GPU_PRESETS = ("large",)


@dataclass
class TrainConfig:
    model: str = "lstm"
    layers: int = 2
    hidden: int = 512
    embed: int = 128
    dropout: float = 0.1
    # Dropout of the fresh run that follows an early stop (None: the same as ``dropout``), and
    # that run's length as a multiple of the first run's when its dropout is higher.
    retrain_dropout: float | None = None
    retrain_length: float = 1.0
    weight_drop: float = 0.0
    tie: bool = False
    seq_len: int = 100
    batch_size: int = 64
    lr: float = 3e-3
    min_lr: float | None = None
    warmup: int = 50
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    steps: int | None = None
    epochs: float | None = None
    time: float | None = None
    # None: every 200 steps, less often where a validation is large beside a step, and at least
    # once per pass over the training text (validation.default_eval_every).
    eval_every: int | None = None
    # Validations in a row without a new best before the run stops (0: never). On a GPU a
    # 1 MB corpus is learnt in under a minute and then only overfits (see README "On a GPU").
    patience: int = 5
    log_every: int = 20
    val_frac: float = 0.1
    # Validation reads at most this many tokens from the start of the split (0: all of it). On a
    # 10 MB corpus the whole split (1M tokens) took ~100 s of a 2-core CPU per validation, more
    # than the 200 steps between validations; 131,072 covers tinyshakespeare's whole split.
    val_tokens: int = 131_072
    seed: int = 1337
    device: str = "auto"
    precision: str = "auto"
    vocab: str = "char"
    vocab_size: int | None = None
    # Train on a Project Gutenberg e-book's header and licence too (left out by default).
    keep_gutenberg: bool = False
    tensorboard: bool = False
    # Set for the second run after an early stop: the first run's steps, elapsed, best val bpc
    # and best step. Saved with the run, so a resumed second run still ends by keeping the
    # better of the two models, and never starts a third.
    first_run: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self) -> None:
        """Values a flag range cannot express (strictly positive, cross-field)."""
        for name in ("lr", "grad_clip", "epochs"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise CharrnnError(f"--{name.replace('_', '-')} must be > 0 (got {value})")
        if self.val_tokens == 1:
            raise CharrnnError("--val-tokens must be 0 (the whole split) or at least 2 (one prediction needs two tokens)")
        if self.min_lr is not None and self.min_lr > self.lr:
            raise CharrnnError(f"--min-lr {self.min_lr} is above --lr {self.lr}")
        from charrnn.data.prepare import VocabSpec
        from charrnn.runtime.precision import dtype_of

        VocabSpec(self.vocab, self.vocab_size)
        if self.precision != "auto":
            dtype_of(self.precision)
        if self.tie and self.embed != self.hidden:
            raise CharrnnError(f"--tie needs --embed equal to --hidden (got {self.embed} and {self.hidden})")

    @property
    def final_lr(self) -> float:
        return self.min_lr if self.min_lr is not None else self.lr / 100


def make_config(preset: str | None, overrides: dict) -> TrainConfig:
    """A preset's values, then every explicitly given flag on top of it."""
    name = preset or DEFAULT_PRESET
    if name not in PRESETS:
        raise CharrnnError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    values = dict(PRESETS[name])
    given = {k: v for k, v in overrides.items() if v is not None}
    stops = ("steps", "epochs", "time")
    if any(given.get(k) is not None for k in stops):
        values.pop("time")
    if "dropout" in given:
        values.pop("retrain_dropout", None)  # a dropout the user chose holds for both runs
    values.update(given)
    if isinstance(values.get("time"), str):
        values["time"] = parse_duration(values["time"])
    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in values.items() if k in known})
    cfg.check()
    return cfg


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``10m``, ``1.5h`` or ``1h30m``."""
    s = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        seconds = float(s)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", s)
        if not parts or "".join(n + u for n, u in parts) != s:
            raise CharrnnError(f"cannot read duration {text!r}; use e.g. 90s, 10m, 1h30m")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0 or seconds > 365 * 86400:
        raise CharrnnError(f"duration {text!r} out of range (more than 0, at most a year)")
    return seconds
