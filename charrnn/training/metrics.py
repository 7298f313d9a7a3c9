"""The log line of a run: train bpc, learning rate and speed every ``--log-every`` steps, written
to RUN_DIR/metrics.jsonl (what ``charrnn plot`` reads) and, with ``--tensorboard``, to
RUN_DIR/tensorboard.

The train loss is summed on the device between lines, so logging costs one host sync per line
rather than one per step.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from charrnn.errors import CharrnnError
from charrnn.runtime import distributed
from charrnn.runtime.distributed import World
from charrnn.runtime.files import write_atomic, write_error
from charrnn.training.position import RunState

LN2 = math.log(2)
# metrics.jsonl fields mirrored to TensorBoard with --tensorboard, and their tags there.
TENSORBOARD_TAGS = {"train_bpc": "bpc/train", "val_bpc": "bpc/val", "lr": "lr", "chars_per_s": "chars_per_s"}


class Metrics:
    """metrics.jsonl, its TensorBoard mirror, and the train loss gathered between lines."""

    def __init__(
        self,
        out: Path,
        world: World,
        position: RunState,
        device: torch.device,
        chars_per_step: float,
        chars_per_token: float,
    ) -> None:
        self.path = out / "metrics.jsonl"
        self.out = out
        self.world = world
        self.position = position
        self.chars_per_step = chars_per_step
        self.chars_per_token = chars_per_token
        self.loss_sum = torch.tensor(position.loss_sum, dtype=torch.float64, device=device)
        self.board: Any = None
        self.last_time, self.last_step = time.monotonic(), position.step

    def open(self, tensorboard: bool, resumed: bool) -> None:
        """Write the run's history so far (a resumed run's lines up to its checkpoint)."""
        if self.world.main:
            text = "".join(json.dumps(line) + "\n" for line in self.position.history)
            write_atomic(self.path, text.encode(), "metrics")
        if tensorboard and self.world.main:
            self.board = _open_tensorboard(self.out / "tensorboard", resumed, self.position.step)

    def close(self) -> None:
        if self.board is not None:
            self.board.close()

    def restart_clock(self) -> None:
        """Speed is measured from here (the first step, then each line)."""
        self.last_time, self.last_step = time.monotonic(), self.position.step

    def add(self, loss: torch.Tensor) -> None:
        self.loss_sum += loss.detach().double()
        self.position.loss_count += 1

    def keep_sum(self) -> None:
        """Store the loss gathered since the last line in the run, for ``last.pt``."""
        self.position.loss_sum = float(self.loss_sum)

    def line(self, lr: float, epoch: float, start: float) -> dict[str, Any]:
        """The next metrics line, without its val bpc; starts the next line's loss sum."""
        r, world = self.position, self.world
        now = time.monotonic()
        mean_loss = float(distributed.sum_values(world, self.loss_sum)) / world.size / r.loss_count
        cps = (r.step - self.last_step) * self.chars_per_step / max(1e-9, now - self.last_time)
        line: dict[str, Any] = {
            "step": r.step,
            "epoch": round(epoch, 4),
            "train_bpc": round(mean_loss / LN2 / self.chars_per_token, 5),
            "val_bpc": None,
            "lr": lr,
            "chars_per_s": round(cps, 1),
            "elapsed": round(now - start, 2),
        }
        self.loss_sum.zero_()
        r.loss_count = 0
        return line

    def write(self, line: dict[str, Any]) -> None:
        self.position.history.append(line)
        if self.world.main:
            _append(self.path, json.dumps(line) + "\n")
        if self.board is not None:
            for key, tag in TENSORBOARD_TAGS.items():
                if line[key] is not None:
                    self.board.add_scalar(tag, line[key], self.position.step)
            self.board.flush()


def _append(path: Path, text: str) -> None:
    """Add one line to metrics.jsonl; a full disk cuts the half-written line back off, so the
    file stays whole lines (``charrnn plot`` reads it while the run trains)."""
    data = text.encode()
    with open(path, "ab", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            done = 0
            while done < len(data):  # a disk that fills mid-line takes part of it, then refuses
                done += f.write(data[done:])
        except OSError as e:
            f.truncate(size)
            raise write_error(e, path, "metrics", "its earlier lines are intact") from None


def _open_tensorboard(log_dir: Path, resumed: bool, step: int) -> Any:
    """A SummaryWriter in RUN_DIR/tensorboard. A resumed run drops the events logged after
    its checkpoint (they will be logged again); a fresh run starts the directory over."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise CharrnnError("--tensorboard needs the tensorboard package: pip install 'charrnn[tensorboard]'") from None
    if not resumed and log_dir.is_dir():
        for old in log_dir.glob("events.out.tfevents.*"):
            old.unlink()
    return SummaryWriter(str(log_dir), purge_step=step + 1 if resumed else None)
