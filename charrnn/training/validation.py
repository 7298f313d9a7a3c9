"""Validation during training: val bpc on the held-out split, best.pt kept at the best of it,
and the early stop once it has not improved for ``--patience`` validations in a row.

The early stop means the model has started to memorise its text; ``retrain`` decides what
to do about it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import torch

from charrnn.evaluation.bpc import evaluate
from charrnn.model.network import CharRNN
from charrnn.runtime.distributed import World
from charrnn.runtime.precision import Precision
from charrnn.training.position import RunState

# Steps between validations by default, at most.
EVAL_EVERY = 200
# A validation reads its tokens forward only, which costs about a third of a training step's
# work per token (3.5x on a 2-core AMD EPYC Zen 4 in float32, 5x on a Xeon training in
# bfloat16), so reading three twenty-fifths (12%) as many tokens as the steps between read
# keeps its work under a twenty-fifth (~4%). Fractions, so a boundary cannot round up a step.
VALIDATION_SHARE = Fraction(1, 25)
FORWARD_COST = Fraction(1, 3)


def default_eval_every(windows: int, step_tokens: int, val_read: int) -> int:
    """Steps between validations when ``--eval-every`` is not given.

    Every 200 steps, but no more often than keeps validation under ~4% of the run: a large
    text's 131,072 validation tokens beside 3,200-token steps took 6.5% of the kernel's hour
    at 200 (8% for a 2x256's 2,048-token steps), spaced here to 383 and 598 steps. And at least once
    per pass over the training text (``windows`` steps), so a short text's early stop sees
    every pass: on the 80 kB demo screenplay 200 steps of 32 x 100 are eight passes, long past
    its best. ``--patience`` counts validations, so spacing them lengthens the early stop's
    horizon alike: five validations are 1,915 steps of 32 x 100 on a large text, not 1,000.
    """
    spaced = math.ceil(val_read * FORWARD_COST / (VALIDATION_SHARE * step_tokens))
    return max(1, min(windows, max(EVAL_EVERY, spaced)))


class Validation:
    """Scores the model on (the first ``--val-tokens`` of) the validation split and keeps the best."""

    def __init__(
        self,
        model: CharRNN,
        ids: np.ndarray,
        chars: int,
        device: torch.device,
        world: World,
        precision: Precision,
        patience: int,
    ) -> None:
        self.model = model
        self.ids = ids
        # Characters the validation predictions cover, so val is in bits per character.
        self.chars = chars
        self.device = device
        self.world = world
        self.precision = precision
        self.patience = patience

    def score(self, position: RunState) -> float:
        with self.precision.validation_autocast():
            result = evaluate(self.model, self.ids, self.device, chars=self.chars, world=self.world)
        position.last_val = result.bpc
        return result.bpc

    @staticmethod
    def keep_best(position: RunState, val: float, save: Callable[..., object]) -> None:
        """best.pt when ``val`` (the val bpc ``score`` just gave) beat the best so far, and
        last.pt at every validation."""
        if position.best_val is None or val < position.best_val:
            position.best_val, position.best_step, position.since_best = val, position.step, 0
            save("best.pt", with_resume=False)
        else:
            position.since_best += 1
        save("last.pt")

    def patience_spent(self, position: RunState) -> bool:
        """``patience`` validations without a new best, once the run has read its text through.

        Before the end of the first pass every batch is text the model has not seen, so a val
        bpc that stalls cannot be memorising: on the 64 MB kernel, whose held-out last tenth is
        other subsystems' code, it wandered for 1,000 steps at 0.13-0.38 passes, and stopping
        there (then a second run with more dropout) left an hour's run 0.11 bpc behind a
        ten-minute one.
        """
        return bool(self.patience) and position.epoch >= 1 and position.since_best >= self.patience

    def stop_message(self, position: RunState) -> str:
        return (
            f"stopping early at step {position.step:,}: val bpc has not improved in {position.since_best} "
            f"validations (best {position.best_val:.4f} at step {position.best_step:,}, kept in best.pt; "
            "--patience 0 trains on)"
        )
