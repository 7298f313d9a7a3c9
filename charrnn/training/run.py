"""A training run assembled from what the user asked for: the settings (a preset and flags, or a
resumed run's own settings), the corpus (the bundled demo screenplays by default), the lock on
RUN_DIR, the prepared text, and the trainer with its second run after an early stop.

``charrnn train`` and the Python API's ``charrnn.train`` both call ``train_run``.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from charrnn.errors import CharrnnError
from charrnn.training.config import TrainConfig

DEMO_RUN_DIR = Path("checkpoints") / "demo"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _quiet(message: str) -> None:
    """A log that says nothing (--quiet, and ranks other than 0)."""


@dataclass
class Finished:
    """What a finished run left: its summary (as the CLI's table shows it), where, and how."""

    result: dict[str, Any]
    out: Path
    cfg: TrainConfig
    main: bool  # this process is rank 0 (or the only one): it wrote the files and reports


def demo_corpus() -> list[str]:
    """The bundled screenplays: every .fountain file in the package's demo folder, by name."""
    folder = Path(str(files("charrnn").joinpath("demo")))
    found = sorted(str(p) for p in folder.glob("*.fountain")) if folder.is_dir() else []
    if not found:
        raise CharrnnError(f"no corpus given and the bundled demo corpus is missing ({folder})")
    return found


def settings(
    paths: list[str], preset: str | None, out: Path | None, resume: bool, time: str | None, flags: dict[str, Any]
) -> tuple[list[str], TrainConfig, Path | None, dict[str, Any] | None]:
    """The corpus paths, the configuration, the run directory (None: the default) and, for
    ``resume``, the run's last.pt. A resumed run keeps its own settings under any flag given now."""
    from charrnn.data.corpus import STDIN
    from charrnn.model import checkpoint
    from charrnn.training.config import make_config, parse_duration

    if not resume:
        return paths, make_config(preset, {**flags, "time": time}), out, None
    run_dir = out
    if run_dir is None and len(paths) == 1 and Path(paths[0]).is_dir() and (Path(paths[0]) / "last.pt").is_file():
        run_dir = Path(paths.pop())
    if run_dir is None:
        raise CharrnnError("--resume needs the run directory: charrnn train --resume RUN_DIR (or --out RUN_DIR)")
    resume_ckpt = checkpoint.load(Path(run_dir) / "last.pt")
    saved = resume_ckpt.get("train_config", {})
    saved_corpus = resume_ckpt.get("corpus", {})
    if not paths:
        paths = list(saved_corpus.get("paths") or saved_corpus.get("files", []))
        if not paths or "<stdin>" in paths or STDIN in paths:
            raise CharrnnError("cannot resume: give the corpus again (the run was trained from stdin)")
        if "paths" not in saved_corpus and len(paths) >= 100:
            raise CharrnnError("cannot resume: give the corpus again (this run saved only its first 100 file names)")
    base = dict(saved)
    base.setdefault("keep_gutenberg", True)  # a run from before the header was left out read it
    base.setdefault("val_tokens", 0)  # and one from before --val-tokens validated on the whole split
    base.setdefault("precision", "float32")  # and one from before --precision trained in float32
    given = {k: v for k, v in flags.items() if v is not None}
    if time is not None:
        given["time"] = parse_duration(time)
    cfg = make_config(None, {})
    for k, v in {**base, **given}.items():
        setattr(cfg, k, v)
    return paths, cfg, Path(run_dir), resume_ckpt


def train_run(
    corpus: Sequence[str] | None = None,
    *,
    preset: str | None = None,
    out: Path | None = None,
    resume: bool = False,
    init_from: Path | None = None,
    base: str | None = None,
    time: str | None = None,
    quiet: bool = False,
    log: Callable[[str], None] = _stderr,
    **flags: Any,
) -> Finished:
    """Train as ``charrnn train`` does; ``flags`` are its options by their Python names.

    Raises ``CharrnnError`` for bad input and ``train.Interrupted`` when a signal stopped the run
    after saving last.pt.
    """
    from charrnn.data import corpus as corpora
    from charrnn.runtime import distributed
    from charrnn.training.lock import RunLock

    paths, cfg, out, resume_ckpt = settings(list(corpus or []), preset, out, resume, time, flags)
    if not paths:
        paths, out = demo_corpus(), out or DEMO_RUN_DIR
    corpora.check_paths(paths)
    world = distributed.launched()
    out = Path(out or Path("checkpoints") / corpora.corpus_name(paths))
    if out.exists() and not out.is_dir():
        raise CharrnnError(f"--out {out}: exists and is not a directory")
    given = {k for k, v in flags.items() if v is not None} | ({"time"} if time is not None else set())
    _check_base(base, resume, init_from, cfg, given)
    with RunLock(out, log) if world.main else contextlib.nullcontext():
        result = _train(paths, cfg, out, preset, resume_ckpt, init_from, base, quiet, log, world, given)
    return Finished(result, out, cfg, world.main)


def _check_base(base: str | None, resume: bool, init_from: Path | None, cfg: TrainConfig, given: set[str]) -> None:
    """--base fits a new character-level run of the base's own size; refused otherwise."""
    from charrnn.training.start import CHOICES, NONE

    if base is not None and base not in CHOICES:
        raise CharrnnError(f"--base must be {' or '.join(CHOICES)} (got {base!r})")
    if base is None or base == NONE:
        return
    if resume:
        raise CharrnnError("--base applies to a new run; a resumed run goes on from its own weights")
    if init_from is not None:
        raise CharrnnError("give --base or --init-from, not both")
    if cfg.vocab != "char":
        raise CharrnnError(f"--base {base} is a character model: not with --vocab {cfg.vocab}")


def _train(paths, cfg, out, preset, resume_ckpt, init_from, base, quiet, log, world, given) -> dict[str, Any]:
    from charrnn.data.corpus import STDIN
    from charrnn.runtime import distributed, precision
    from charrnn.runtime.device import pick_device
    from charrnn.training import auto
    from charrnn.training.config import DEFAULT_PRESET, GPU_PRESETS
    from charrnn.training.retrain import fit_retraining
    from charrnn.training.start import FINE_TUNE_LR
    from charrnn.training.trainer import Trainer

    device = pick_device(cfg.device)
    precision.resolve(cfg.precision, device, cfg.model)  # before preparing the corpus, which can take minutes
    if preset in GPU_PRESETS and device.type == "cpu" and world.main:
        log(
            f"warning: --preset {preset} is sized for a GPU; on a CPU its steps are slow (~25 s each on 2 cores), "
            "so --preset small or medium will learn more in the same time"
        )
    if world.active:
        if STDIN in paths:
            raise CharrnnError("a corpus from stdin cannot be shared between torchrun ranks; give a file")
        device = distributed.rank_device(world, device)
    if world.main and resume_ckpt is None and (out / "last.pt").exists():
        log(f"note: {out} already holds a run; starting a new one over it (use --resume to continue it)")
    say = log if world.main and not quiet else _quiet
    init = _starting_point(init_from, base, preset, resume_ckpt, cfg, given, paths, say)
    distributed.start(world, device)
    try:
        data = _prepare(paths, cfg, out, init, resume_ckpt, quiet, log, world)
        if resume_ckpt is None and (preset or DEFAULT_PRESET) == "auto":
            unit = "char" if data.vocab.kind == "char" else "token"
            cfg = auto.resolve(
                cfg,
                given,
                len(data.train),
                data.vocab.size,
                unit,
                device,
                world,
                init,
                say,
            )
        if init is not None and "base" in init and "lr" not in given:
            cfg.lr = FINE_TUNE_LR
        trainer = Trainer(
            cfg, data, out, quiet=quiet, log=log, resume=resume_ckpt, init_from=init, world=world, device=device
        )
        # A resumed first run goes on to a second one only if it knows it is a first run (versions
        # before first_run did not say) and has its starting weights (a fine-tune's are not saved).
        retrain = resume_ckpt is None or (
            "first_run" in resume_ckpt.get("train_config", {})
            and (init is not None or not resume_ckpt["corpus"].get("vocab_given"))
        )
        return fit_retraining(trainer, retrain)
    finally:
        distributed.stop()


def _starting_point(
    init_from: Path | None,
    base: str | None,
    preset: str | None,
    resume_ckpt: dict[str, Any] | None,
    cfg: TrainConfig,
    given: set[str],
    paths: list[str],
    log: Callable[[str], None],
) -> dict[str, Any] | None:
    """The checkpoint a new run starts from: --init-from's, the bundled base model (--base, or
    auto's choice), or None for random weights (and for a resumed run, which has its own)."""
    from charrnn.model import checkpoint
    from charrnn.training.config import DEFAULT_PRESET
    from charrnn.training.start import ENGLISH, choose_start

    if init_from is not None:
        return checkpoint.load(init_from)
    if resume_ckpt is not None or cfg.vocab != "char":
        return None
    if given & {"model", "layers", "hidden", "embed"}:
        if base == ENGLISH:
            raise CharrnnError(
                "--base english trains the base's own model: not with --model, --layers, --hidden or --embed"
            )
        return None
    auto = (preset or DEFAULT_PRESET) == "auto"
    timed = cfg.steps is None and cfg.epochs is None  # else the run may end long before --time
    chosen = choose_start(base, auto, paths, cfg.keep_gutenberg, cfg.time if timed else None, log)
    if chosen is not None:  # the run trains the base's own model, whatever the preset's size
        for name in ("model", "layers", "hidden", "embed", "tie"):
            setattr(cfg, name, chosen["model_config"][name])
    return chosen


def _prepare(paths, cfg, out, init, resume_ckpt, quiet, log, world):
    """The encoded corpus, cached in RUN_DIR/.cache, with notes on what was left out of it."""
    from charrnn.data import cache
    from charrnn.data.corpus import describe, skipped_note
    from charrnn.data.prepare import VocabSpec, prepare
    from charrnn.data.vocab import from_state
    from charrnn.runtime import distributed
    from charrnn.runtime.files import sweep
    from charrnn.runtime.signals import interruptible

    if world.main:  # temp files of killed runs (this one holds the lock on RUN_DIR)
        stale = sweep(out) + sweep(out / ".cache")
        if stale and not quiet:
            log(f"note: removed {len(stale)} temp file(s) left in {out} by runs that were killed")
        if (flat := cache.sweep_flat(out / ".cache")) and not quiet:
            log(f"note: removed {len(flat)} corpus cache file(s) of charrnn 2.0.0 or earlier from {out / '.cache'}")
    # A fine-tuned run encodes its corpus with the vocabulary it started from, also when resumed.
    resumed_fine_tune = resume_ckpt and resume_ckpt["corpus"].get("vocab_given")
    given = init if init is not None else resume_ckpt if resumed_fine_tune else None
    fixed = from_state(given["vocab"]) if given is not None else None
    spec = VocabSpec(cfg.vocab, cfg.vocab_size)
    # Rank 0 prepares (and caches) the corpus; the others then read the same cache. A signal
    # meanwhile unwinds, so the temp files are removed, and ends the run as training's would.
    with interruptible():
        data = distributed.main_first(
            world,
            lambda: prepare(
                paths,
                out / ".cache",
                cfg.val_frac,
                spec,
                vocab=fixed,
                show_progress=not quiet and world.main,
                keep_gutenberg=cfg.keep_gutenberg,
            ),
        )
    if world.main and not quiet:
        if data.skipped:
            log(skipped_note(data.skipped))
        if data.left_out:
            names = list(data.left_out)
            books = names[0] if len(names) == 1 else f"{len(names)} books ({describe(names)})"
            log(
                f"note: {books}: training on the text only, without Project Gutenberg's header and licence "
                f"({sum(data.left_out.values()):,} characters; --keep-gutenberg keeps them)"
            )
    return data
