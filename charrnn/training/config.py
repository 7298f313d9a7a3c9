"""Run settings: presets, the training configuration, ``charrnn train``'s options, and durations
like ``10m``.

Each option's flag, range and help is declared here once (on ``TrainConfig``'s fields, and in
``_RUN_OPTIONS`` for the rest); the command line builds ``charrnn train`` from ``TRAIN_OPTIONS``
and the Python API's ``charrnn.train`` checks its keywords with it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from charrnn.errors import CharrnnError
from charrnn.options import Option, command_options, option, options_of, shown

# Sizes measured on a 2-core CPU (docs/benchmarks.md, "How the presets were chosen"): each preset
# is the model that reached the lowest validation bpc on tinyshakespeare within its time budget.
# Large was measured on an H100: dropout 0.5 and weight decay 0.1 reached 2.099 where 0.2 and 0.01
# reached 2.128. Dropout: on a CPU with AMX (bfloat16, ~2.5x the text per minute) ten minutes of
# small are ten passes over tinyshakespeare, and dropout 0 / 0.2 / 0.3 reached 2.093 (early stop)
# / 2.004 / 1.999; on an AVX2 CPU in float32 (three passes) 0.1 had been within noise of 0 (2.142
# / 2.146 in 1,000 steps), so small takes 0.2. Medium with dropout 0.3 reached the same 2.073 as
# 0.1 over its 2,876 float32 steps on that CPU, and reads its text 2.5x as often with AMX: it
# takes 0.3. retrain_dropout and retrain_length are for the second run after an early stop, which
# only comes once a run has memorised its text (docs/benchmarks.md, "The early stop and the second
# run"). Measured on the demo screenplay, small: dropout 0 / 0.3 over the first run's 288 steps
# reached 2.554 / 2.579, 0.3 over 432 (1.5x) / 576 / 820 steps 2.514 / 2.513 / 2.542; tiny, after
# a first run of 684 steps: dropout 0.1 over 684 / 1,368 / 2,052 steps reached 2.528 / 2.569 /
# 2.559 (and 0.3 over 650, 2.583). On Earnest (play only), small, 0.3 over 1x / 1.5x the first
# run's 480 steps: 2.003 / 2.007, dropout 0 over 1x: 2.069 (those first runs had dropout 0).
# Medium, with dropout 0.1 then: on Earnest its first run reached 2.105 (stopped at step 832), the
# second, 0.3 over 1.5x, 2.053 (stopped at 832 too). Its first run now has 0.3 itself, so its
# second is as long as the first (retrain_length applies only to a second run with more dropout).
PRESETS: dict[str, dict] = {
    "tiny": dict(
        model="lstm",
        layers=2,
        hidden=256,
        embed=128,
        dropout=0.0,
        retrain_dropout=0.1,
        seq_len=64,
        batch_size=32,
        lr=1e-2,
        time="2m",
    ),
    "small": dict(
        model="lstm",
        layers=2,
        hidden=512,
        embed=128,
        dropout=0.2,
        retrain_dropout=0.3,
        retrain_length=1.5,
        seq_len=100,
        batch_size=32,
        lr=1e-2,
        weight_decay=0.1,
        time="10m",
    ),
    "medium": dict(
        model="lstm",
        layers=3,
        hidden=640,
        embed=128,
        dropout=0.3,
        retrain_dropout=0.3,
        seq_len=100,
        batch_size=32,
        lr=6e-3,
        weight_decay=0.1,
        time="60m",
    ),
    "large": dict(
        model="lstm",
        layers=3,
        hidden=1024,
        embed=256,
        dropout=0.5,
        seq_len=200,
        batch_size=128,
        lr=4e-3,
        weight_decay=0.1,
        time="60m",
    ),
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
    model: str = option(
        "lstm",
        "Recurrent cell: lstm | gru | rnn | peephole (peephole LSTM) | cifg (coupled input-forget gate LSTM).",
        choices=("lstm", "gru", "rnn", "peephole", "cifg"),
    )
    layers: int = option(2, "Stacked recurrent layers.", min=1, max=16)
    hidden: int = option(512, "Hidden units per layer.", min=1, max=16384)
    embed: int = option(128, "Embedding size.", min=1, max=16384)
    dropout: float = option(0.1, "Dropout between layers and before the head.", min=0.0, max=0.95)
    # Dropout of the fresh run that follows an early stop (None: the same as ``dropout``), and
    # that run's length as a multiple of the first run's when its dropout is higher.
    retrain_dropout: float | None = None
    retrain_length: float = 1.0
    weight_drop: float = option(
        0.0, "DropConnect on the recurrent (hidden-to-hidden) weights, a mask per step.", min=0.0, max=0.95
    )
    tie: bool = option(
        False, "Tie embedding and output weights (needs --embed == --hidden).", flags=("--tie/--no-tie",)
    )
    seq_len: int = option(100, "Truncated BPTT window length.", min=1, max=100000)
    batch_size: int = option(64, "Parallel streams per step.", min=1, max=65536)
    lr: float = option(3e-3, "Peak learning rate.", min=0.0, max=10.0, min_open=True)
    min_lr: float | None = option(None, "Final learning rate of the cosine decay (default lr/100).", min=0.0, max=10.0)
    warmup: int = option(50, "Linear warm-up steps.", min=1, max=10**9)
    weight_decay: float = option(0.01, "AdamW weight decay on matrices.", min=0.0, max=10.0)
    grad_clip: float = option(1.0, "Global gradient-norm clip.", min=0.0, max=1e6, min_open=True)
    steps: int | None = option(None, "Stop after this many steps.", min=1, max=10**12)
    epochs: float | None = option(None, "Stop after this many passes over the data.", min=0.0, max=1e6, min_open=True)
    time: float | None = None  # seconds; the flag is --time's text (see TRAIN_OPTIONS)
    # None: every 200 steps, less often where a validation is large beside a step, and at least
    # once per pass over the training text (validation.default_eval_every).
    eval_every: int | None = option(
        None,
        "Validate every N steps (default 200, spaced out so validation stays under ~4% of the run, and at "
        "least once per pass over the text).",
        min=1,
        max=10**12,
    )
    # Validations in a row without a new best before the run stops (0: never). On a GPU a
    # 1 MB corpus is learnt in under a minute and then only overfits (docs/distributed.md, "On a GPU").
    patience: int = option(
        5,
        "Stop once this many validations in a row have not beaten the best val bpc, after the first pass over "
        "the text (default 5; 0: never stop early).",
        min=0,
        max=10**9,
    )
    log_every: int = option(20, "Write a metrics line every N steps.", min=1, max=10**12)
    val_frac: float = option(0.1, "Last fraction of the text held out for validation.", min=0.0, max=0.5)
    # Validation reads at most this many tokens from the start of the split (0: all of it). On a
    # 10 MB corpus the whole split (1M tokens) took ~100 s of a 2-core CPU per validation, more
    # than the 200 steps between validations; 131,072 covers tinyshakespeare's whole split.
    val_tokens: int = option(
        131_072,
        "Validate on at most the first N tokens of the validation split (default 131072, about a 1.3 MB "
        "corpus's whole split; 0: all of it).",
        min=0,
        max=10**15,
    )
    seed: int = option(1337, "Random seed.", min=0, max=2**63 - 1)
    device: str = option("auto", "auto | cpu | cuda | mps.", choices=("auto", "cpu", "cuda", "mps"))
    precision: str = option(
        "auto",
        "auto (default: bfloat16 for the LSTM on a CPU with AMX, float32 elsewhere) | float32 | bfloat16 | "
        "float16: the forward pass under autocast (weights stay float32).",
        choices=("auto", "float32", "bfloat16", "float16"),
    )
    vocab: str = option(
        "char",
        "Tokens: char (default) | bpe | unigram (SentencePiece subwords, trained on the training split).",
        choices=("char", "bpe", "unigram"),
    )
    vocab_size: int | None = option(
        None, "Subword vocabulary size for --vocab bpe|unigram (default 1024).", min=1, max=1_000_000
    )
    keep_gutenberg: bool = option(
        False,
        "Train on a Project Gutenberg e-book's header and licence too (by default only its text between the "
        "START and END lines).",
        flags=("--keep-gutenberg",),
    )
    tensorboard: bool = option(
        False,
        "Also log the metrics for TensorBoard in RUN_DIR/tensorboard (needs: pip install 'charrnn[tensorboard]').",
        flags=("--tensorboard/--no-tensorboard",),
    )
    # Set for the second run after an early stop: the first run's steps, elapsed, best val bpc
    # and best step. Saved with the run, so a resumed second run still ends by keeping the
    # better of the two models, and never starts a third.
    first_run: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def check(self) -> None:
        """Values a flag range cannot express (strictly positive, cross-field)."""
        for o in TRAIN_OPTIONS.values():
            value = getattr(self, o.name) if o.min_open else None
            if value is not None and o.min is not None and not value > o.min:
                raise CharrnnError(f"{o.flag} must be > {shown(o.min)} (got {value})")
        if self.val_tokens == 1:
            raise CharrnnError(
                "--val-tokens must be 0 (the whole split) or at least 2 (one prediction needs two tokens)"
            )
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


# ``charrnn train``'s options that are no field of TrainConfig: what to train on and where, the
# preset, the time limit as text (the config holds seconds), how to start, and what to show.
_RUN_OPTIONS = {
    "corpus": Option(
        "Text files or directories, or - for stdin. Default: the bundled demo screenplays (run dir checkpoints/demo).",
        type=list[str],
        argument=True,
    ),
    "preset": Option(
        "auto (default: the size for this corpus, budget and machine) | tiny | small | medium | large; "
        "explicit flags override it.",
        type=str,
        choices=tuple(PRESETS),
    ),
    "time": Option("Stop after this long, e.g. 90s, 10m, 1h30m.", type=str),
    "out": Option("Run directory (default checkpoints/<corpus-name>).", type=Path),
    "resume": Option(
        "Continue the run in --out (or the RUN_DIR given as corpus) from its last.pt.",
        type=bool,
        default=False,
        flags=("--resume",),
    ),
    "init_from": Option("Start from this checkpoint's weights (fine-tuning); a fresh run otherwise.", type=Path),
    "base": Option(
        "english: start from the bundled English base model (LSTM 2x512) | none: from random weights. Default: "
        "--preset auto decides from how well the base reads the corpus, its size and --time; other presets start "
        "from random weights.",
        type=str,
        choices=("english", "none"),
    ),
    "quiet": Option("No progress bar or summary.", type=bool, default=False, flags=("--quiet", "-q")),
}
# Every option of ``charrnn train``, in the order its --help lists them. Their defaults are None
# (not given): the preset's values, or TrainConfig's, apply.
TRAIN_OPTIONS = command_options(
    (
        "corpus",
        "preset",
        "model",
        "layers",
        "hidden",
        "embed",
        "dropout",
        "weight_drop",
        "tie",
        "seq_len",
        "batch_size",
        "lr",
        "min_lr",
        "warmup",
        "weight_decay",
        "grad_clip",
        "steps",
        "epochs",
        "time",
        "eval_every",
        "patience",
        "log_every",
        "val_frac",
        "val_tokens",
        "vocab",
        "vocab_size",
        "keep_gutenberg",
        "seed",
        "device",
        "precision",
        "out",
        "resume",
        "init_from",
        "base",
        "tensorboard",
        "quiet",
    ),
    options_of(TrainConfig, defaults=False),
    _RUN_OPTIONS,
)

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
