"""Where a training run stands: its step, pass and window, its clock, its best validation, its
loss sums and history, which ``last.pt`` saves for a bit-identical resume."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunState:
    """The position of a run: everything beyond weights and optimiser needed to continue it."""

    step: int = 0
    epoch: int = 0
    window: int = 0
    elapsed: float = 0.0
    best_val: float | None = None
    best_step: int = 0
    since_best: int = 0
    last_val: float | None = None
    bad_steps: int = 0
    lr_scale: float = 1.0
    loss_sum: float = 0.0
    loss_count: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
