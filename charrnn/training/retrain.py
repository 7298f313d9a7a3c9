"""The second run after an early stop: when a run stopped early with budget to spare, train a
fresh model whose learning rate decays over the passes the first could use, and keep the better.

An early-stopped run's best model was trained at a still-high learning rate. Decaying the
learning rate from that model does not help (it goes on memorising the text); a run whose
whole cosine decay spans the passes the model could use does, and more so with the dropout
that memorising called for (measurements in CHANGELOG.md and docs/benchmarks.md).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from charrnn.model import checkpoint

if TYPE_CHECKING:
    from charrnn.training.trainer import Trainer

FIRST_RUN = "first"  # where fit_retraining moves an early-stopped first run's files


def retrain_steps(result: dict[str, Any], longer: float = 1.0) -> tuple[int, bool] | None:
    """Steps for a fresh run whose learning rate decays over the passes an early-stopped run
    could use, and whether that run fits in what is left of the budget (else it is a suggestion).

    None when val bpc did not stop improving. The first run's own length times ``longer`` (a
    second run with more dropout may learn the text more slowly: ``retrain_length``), or as much
    of it as the budget has room for (steps cost about the same in both runs). Never under 1.15x
    the first run's best step: on the demo screenplay, with the best at step 168 of 288
    (validation flat from there to 264), a 190-step run reached 2.680 against 2.554 for 288
    (docs/benchmarks.md, "Early stop"). A suggestion is the whole length the run would have had
    with room.
    """
    if not result["overfit"] or not result["best_step"]:
        return None
    first, used = result["steps"], result["budget_used"]
    longest = round(first * longer)
    room = first * (1 - used) / used if used > 0 else first
    steps = min(longest, int(room))
    if steps < 1.15 * result["best_step"]:
        return longest, False
    return steps, True


def fit_retraining(trainer: Trainer, retrain: bool = True) -> dict[str, Any]:
    """Fit; if the run stopped early with budget to spare, train again from scratch for
    ``retrain_steps`` with ``retrain_dropout``, and keep whichever best model is better in best.pt.

    The first run's files move to RUN_DIR/first. A resumed first
    run goes on to its second run as an uninterrupted one would; with ``retrain`` False, the
    second run is only suggested.
    """
    first = trainer.fit()
    cfg = trainer.cfg
    if cfg.first_run is not None:  # a resumed second run
        return _keep_better(trainer, cfg.first_run, first)
    dropout = cfg.dropout if cfg.retrain_dropout is None else cfg.retrain_dropout
    plan = retrain_steps(first, cfg.retrain_length if dropout > cfg.dropout else 1.0)
    if plan is None:
        return first
    steps, fits = plan
    if not fits or not retrain:
        if not trainer.quiet:
            trainer.log(
                f"a new run of --steps {steps} --dropout {dropout:g}, with the learning rate decaying "
                "over them, may reach a lower val bpc"
            )
        return first
    if not trainer.quiet:
        trainer.log(
            f"training again from scratch for {steps:,} steps with dropout {dropout:g}, the learning rate "
            f"decaying over them (this run's files are in {trainer.out / FIRST_RUN})"
        )
    aside = trainer.out / FIRST_RUN
    if trainer.world.main:
        aside.mkdir(exist_ok=True)
        for name in (*checkpoint.RUN_FILES, "metrics.jsonl", "tensorboard"):
            if (aside / name).is_dir():  # an earlier run's, in the same RUN_DIR
                shutil.rmtree(aside / name)
            if (trainer.out / name).exists():
                os.replace(trainer.out / name, aside / name)
    # A time budget also bounds the second run: with more dropout its steps cost a little more.
    left = cfg.time - first["elapsed"] if cfg.time else None
    summary = {k: first[k] for k in ("steps", "elapsed", "best_val_bpc", "best_step")}
    again = type(trainer)(
        replace(cfg, steps=steps, epochs=None, time=left, dropout=dropout, first_run=summary),
        trainer.data,
        trainer.out,
        quiet=trainer.quiet,
        log=trainer.log,
        init_from=trainer.init_from,
        world=trainer.world,
        device=trainer.device,
    )
    return _keep_better(again, summary, again.fit())


def _keep_better(trainer: Trainer, first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """The second run's result, with best.pt the first run's model where that was better."""
    kept = trainer.out / FIRST_RUN / "best.pt"
    if (second["best_val_bpc"] is None or second["best_val_bpc"] > first["best_val_bpc"]) and kept.is_file():
        if trainer.world.main:
            checkpoint.copy(kept, trainer.out / "best.pt")
        if not trainer.quiet:
            trainer.log(f"the first run's model was better ({first['best_val_bpc']:.4f}); best.pt is a copy of it")
        second.update(best_val_bpc=first["best_val_bpc"], best_step=first["best_step"], best_in_first_run=True)
    second["first_run"] = first
    return second
