"""One training update: the optimiser, the loss, forward, backward, gradient clip, and when a step
must be skipped. The speed probe (``speed``) times its steps with the same optimiser and loss.

A step whose loss or gradients are not finite never reaches the weights. Two causes look alike
and are told apart here: float16 loss scaling overflowing (normal, the scaler finds its level
that way) and the run itself diverging (the learning rate is halved; five in a row end the run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from charrnn.errors import CharrnnError
from charrnn.model.network import State, detach_state
from charrnn.runtime import distributed
from charrnn.runtime.distributed import World
from charrnn.runtime.precision import Precision
from charrnn.training.position import RunState

MAX_BAD_STEPS = 5


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, the weight decay on the matrices (the embedding too), none on the biases and peepholes."""
    unique = {id(p): p for p in model.parameters()}.values()
    decay = [p for p in unique if p.dim() >= 2]
    no_decay = [p for p in unique if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # One fused kernel per step where PyTorch has it (CPU, CUDA): the update of a small model is
    # otherwise dozens of elementwise passes, a visible share of a 2x128 step.
    fused = all(p.device.type in ("cpu", "cuda") for p in unique)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99), fused=fused, foreach=not fused)


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The objective: mean next-token cross-entropy in nats, in float32 whatever autocast computed."""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


@dataclass
class TrainStep:
    """Applies one batch to the weights; built at the start of ``fit`` from the trainer's parts
    (a caller may have swapped the scaler after building the trainer)."""

    net: torch.nn.Module
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    precision: Precision
    grad_clip: float
    world: World
    # (logits, targets) -> mean loss in nats; the trainer's objective.
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    log: Callable[[str], None]
    # Named in the error when the run diverges: the last model worth keeping.
    best: Path

    def __post_init__(self) -> None:
        self.params = list(self.net.parameters())

    def __call__(
        self, position: RunState, x: torch.Tensor, y: torch.Tensor, state: State | None
    ) -> tuple[torch.Tensor | None, State | None]:
        """The loss of an applied step (None if skipped) and the state to carry into the next."""
        with self.precision.autocast():
            logits, new_state = self.net(x, state)
        loss = self.loss(logits, y)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        gnorm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        bad = (~torch.isfinite(torch.stack([loss.detach(), gnorm.float()]))).tolist()  # one host sync
        bad_loss, bad_grads = distributed.max_all(self.world, *map(float, bad))
        if bad_grads and not bad_loss and self.scaler.is_enabled() and self.scaler.get_scale() > 1:
            # The scaled float16 gradients overflowed: the scaler lowers its scale and the
            # step is skipped. This is how loss scaling finds its level, not divergence
            # (unless the scale is already down to 1: then it is the gradients themselves).
            self.scaler.update()
            return None, detach_state(new_state)
        if bad_loss or bad_grads:
            self._diverging(position)
            return None, None
        position.bad_steps = 0
        self.scaler.step(self.opt)
        self.scaler.update()
        return loss, detach_state(new_state)

    def _diverging(self, position: RunState) -> None:
        """Skip the step, halve the learning rate and drop the carried state; stop after
        ``MAX_BAD_STEPS`` in a row, naming the last good checkpoint."""
        self.scaler.update()
        position.bad_steps += 1
        position.lr_scale *= 0.5
        self.log(f"warning: step {position.step}: non-finite loss or gradient; skipped, learning rate halved")
        if position.bad_steps >= MAX_BAD_STEPS:
            hint = f"; last good checkpoint: {self.best}" if self.best.exists() else ""
            raise CharrnnError(f"training diverged: {position.bad_steps} non-finite steps in a row{hint}")
