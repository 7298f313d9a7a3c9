"""The training loop: truncated BPTT over parallel streams, AdamW, warm-up + cosine, checkpoints.

The ``Trainer`` builds a run (model, optimiser, batches) and repeats its schedule; the pieces it
repeats have rooms of their own: ``update`` (one update, the optimiser, the loss and the
skipped-step rules), ``metrics`` (the log line, metrics.jsonl, TensorBoard), ``validation`` (val
bpc, best.pt, the early stop), ``position`` (where the run stands), ``resume`` (what its
checkpoints hold, read back for a bit-identical resume or a fine-tune) and ``retrain`` (what
follows an early stop).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from charrnn.data.batches import Batches
from charrnn.data.prepare import Prepared
from charrnn.errors import CharrnnError, Interrupted
from charrnn.evaluation.bpc import tokens_read
from charrnn.model.network import (
    GATES,
    CharRNN,
    ModelConfig,
    State,
    check_cell,
    count_parameters,
    size_in_parameters,
)
from charrnn.runtime import distributed, precision
from charrnn.runtime.device import pick_device
from charrnn.runtime.distributed import World
from charrnn.training.config import TrainConfig
from charrnn.training.metrics import Metrics
from charrnn.training.position import RunState
from charrnn.training.resume import RunCheckpoint
from charrnn.training.update import TrainStep, make_optimizer, token_loss
from charrnn.training.validation import Validation, default_eval_every


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over ``cfg.warmup`` steps, then cosine from ``lr`` to ``final_lr``.

    ``progress`` (0..1) is the fraction of the run done, by steps or by the time budget, so a
    ``--time`` run decays its learning rate to the end of its budget.
    """
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = min(1.0, max(0.0, progress))
    return cfg.final_lr + 0.5 * (cfg.lr - cfg.final_lr) * (1 + math.cos(math.pi * p))


@dataclass
class Trainer:
    """One training run: its model, optimiser and batches, the schedule it repeats (``fit``), and
    its checkpoints (``save``; ``resume`` or ``init_from`` a checkpoint read back at the start)."""

    cfg: TrainConfig
    data: Prepared
    out: Path
    quiet: bool = False
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)
    resume: dict[str, Any] | None = None
    init_from: dict[str, Any] | None = None
    world: World = field(default_factory=World)
    device: torch.device | None = None

    def __post_init__(self) -> None:
        cfg, world = self.cfg, self.world
        if not world.main:
            self.quiet = True
            self.log = lambda msg: None
        # The device given, else the config's: resolved here, once.
        self.device = device = self.device or pick_device(cfg.device)
        torch.manual_seed(cfg.seed)
        self._fit_batch_size()
        if len(self.data.val) < 2 and cfg.val_frac > 0:
            raise CharrnnError("validation split is empty; give more text or a larger --val-frac")
        self.batches = Batches(self.data.train, cfg.batch_size, cfg.seq_len)
        self.rows = world.rows(cfg.batch_size)
        self.val = self.data.val[: cfg.val_tokens] if cfg.val_tokens else self.data.val
        self.eval_every = cfg.eval_every or default_eval_every(
            self.batches.windows, cfg.batch_size * cfg.seq_len, tokens_read(self.val)
        )
        self.model_cfg = ModelConfig(
            vocab_size=self.data.vocab.size,
            model=cfg.model,
            layers=cfg.layers,
            hidden=cfg.hidden,
            embed=cfg.embed,
            dropout=cfg.dropout,
            weight_drop=cfg.weight_drop,
            tie=cfg.tie,
        )
        _check_fits_memory(self.model_cfg, cfg)
        self.model = CharRNN(self.model_cfg).to(device)
        if self.init_from is None and self.resume is None:  # else the loaded weights replace it
            self._init_head_bias()
        self.net = self._parallel(self.model, device)
        self.opt = make_optimizer(self.model, cfg.lr, cfg.weight_decay)
        self.precision = precision.resolve(cfg.precision, device, cfg.model)
        self.scaler = self.precision.scaler()
        self.validation = Validation(
            self.model,
            self.val,
            self.data.vocab.count_chars(self.val[1:]),
            device,
            world,
            self.precision,
            cfg.patience,
        )
        self.checkpoints = RunCheckpoint(
            cfg, self.data, self.model_cfg, self.model, self.opt, world, self.batch_size, self.rows, device
        )
        # Where the run stands, and the hidden state carried from one window to the next.
        self.position = RunState()
        self.hidden: State | None = None
        if self.init_from is not None:
            self.checkpoints.start_from(self.init_from, None if self.quiet or cfg.first_run else self.log)
        if self.resume is not None:
            self.position, self.hidden = self.checkpoints.resume(self.resume, self.scaler)
        self._stop_signal: int | None = None

    def _fit_batch_size(self) -> None:
        """As many streams as the corpus has room for, divided evenly over the torchrun ranks."""
        cfg, world = self.cfg, self.world
        try:
            self.batch_size = Batches.fit_batch_size(len(self.data.train), cfg.batch_size, cfg.seq_len)
        except CharrnnError as e:
            raise CharrnnError(f"{', '.join(self.data.names[:3])}: {e}") from None
        if world.active:
            if self.batch_size < world.size:
                raise CharrnnError(
                    f"--batch-size {self.batch_size} is smaller than the {world.size} ranks; each needs a stream"
                )
            if cfg.batch_size % world.size:
                raise CharrnnError(f"--batch-size {cfg.batch_size} must divide evenly over {world.size} ranks")
            self.batch_size -= self.batch_size % world.size
        if self.batch_size < cfg.batch_size:
            self.log(f"warning: corpus is short; using --batch-size {self.batch_size} instead of {cfg.batch_size}")
            cfg.batch_size = self.batch_size

    def _parallel(self, model: CharRNN, device: torch.device) -> torch.nn.Module:
        if not self.world.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def _init_head_bias(self) -> None:
        """Start the output layer at the training text's token frequencies (log unigram prior)."""
        counts = np.zeros(self.data.vocab.size, np.float64)
        # In slices: bincount widens ids to 8 bytes, and the memory-mapped text may be gigabytes.
        for a in range(0, len(self.data.train), 1 << 24):
            counts += np.bincount(self.data.train[a : a + (1 << 24)], minlength=len(counts))
        prior = np.log((counts + 0.1) / (counts.sum() + 0.1 * len(counts)))
        with torch.no_grad():
            self.model.head.bias.copy_(torch.from_numpy(prior))

    def save(self, name: str, with_resume: bool = True) -> Path:
        """RUN_DIR/``name`` as the run stands; with resume state every rank must call it (it gathers)."""
        return self.checkpoints.save(self.out / name, self.position, self.hidden, self.scaler, with_resume)

    # -- the loop ----------------------------------------------------------------------------
    def _progress(self, elapsed: float) -> float:
        cfg, r = self.cfg, self.position
        p = 0.0
        if cfg.steps:
            p = max(p, r.step / cfg.steps)
        if cfg.epochs:
            p = max(p, (r.epoch + r.window / self.batches.windows) / cfg.epochs)
        if cfg.time:
            p = max(p, elapsed / cfg.time)
        return p

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.position
        if r.window >= self.batches.windows:
            r.window = 0
            r.epoch += 1
            self.hidden = None
        x, y = self.batches.window(r.window)
        x, y = x[self.rows], y[self.rows]

        def to(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a).astype(np.int64)).to(self.device)

        return to(x), to(y)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_signal is not None:
            os._exit(128 + signum)
        self._stop_signal = signum
        self.log(f"\n{signal.Signals(signum).name}: saving last.pt after this step (again to quit at once)")

    @property
    def chars_per_step(self) -> float:
        return self.batch_size * self.cfg.seq_len * self.data.chars_per_token

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        if cfg.steps is None and cfg.epochs is None and cfg.time is None:
            raise CharrnnError("give a stopping point: --steps, --epochs or --time")
        self.out.mkdir(parents=True, exist_ok=True)
        if not os.access(self.out, os.W_OK):
            raise CharrnnError(f"--out {self.out}: directory is not writable")
        assert self.device is not None  # __post_init__ resolved it
        metrics = Metrics(
            self.out, self.world, self.position, self.device, self.chars_per_step, self.data.chars_per_token
        )
        metrics.open(cfg.tensorboard, self.resume is not None)
        step = TrainStep(
            self.net,
            self.opt,
            self.scaler,
            self.precision,
            cfg.grad_clip,
            self.world,
            token_loss,
            self.log,
            self.out / "best.pt",
        )
        # Signals reach only the main thread (a notebook or a server may train in another).
        signals = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
        old = {s: signal.signal(s, self._on_signal) for s in signals}
        try:
            with torch.enable_grad():
                return self._loop(step, metrics)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            metrics.close()

    def _announce(self) -> None:
        cfg = self.cfg
        part = f" on the first {len(self.val):,} (--val-tokens 0 for all)" if len(self.val) < len(self.data.val) else ""
        validating = f"; validating every {self.eval_every:,} steps{part}" if cfg.val_frac > 0 else ""
        self.log(
            f"training {cfg.model} {cfg.layers}x{cfg.hidden} ({count_parameters(self.model) / 1e6:.2f}M parameters, "
            f"dropout {cfg.dropout:g}) on "
            f"{len(self.data.train):,} train / {len(self.data.val):,} val tokens, vocab {self.data.vocab.size}, "
            f"batch {self.batch_size} x seq {cfg.seq_len}, device {self.device}, "
            f"{self.precision.describe()}{validating}"
        )

    def _loop(self, step: TrainStep, metrics: Metrics) -> dict[str, Any]:
        from charrnn.runtime.progress import TrainProgress

        cfg, r, world = self.cfg, self.position, self.world
        self.model.train()
        start = time.monotonic() - r.elapsed
        metrics.restart_clock()
        if not self.quiet:
            self._announce()
        progress = TrainProgress(enabled=not self.quiet, total_steps=cfg.steps)
        stopped_early = False
        with progress:
            while True:
                elapsed = time.monotonic() - start
                # Under torchrun the ranks agree on the schedule position and on stopping.
                p, stopping = distributed.max_all(world, self._progress(elapsed), self._stop_signal is not None)
                if p >= 1.0:
                    break
                if stopping:
                    r.elapsed = elapsed
                    metrics.keep_sum()
                    path = self.save("last.pt")
                    progress.stop()
                    raise Interrupted(self._stop_signal or signal.SIGTERM, path)
                lr = lr_at(cfg, r.step, p) * r.lr_scale
                for g in self.opt.param_groups:
                    g["lr"] = lr
                x, y = self._batch()
                loss, self.hidden = step(r, x, y, self.hidden)
                r.window += 1
                if loss is None:
                    continue
                r.step += 1
                metrics.add(loss)
                done = distributed.max_all(world, self._progress(time.monotonic() - start))[0] >= 1.0
                is_log = r.step % cfg.log_every == 0 or done
                is_eval = cfg.val_frac > 0 and (r.step % self.eval_every == 0 or done)
                if not (is_log or is_eval):
                    progress.update(r.step, p, None, r.last_val, None)
                elif self._log_point(metrics, progress, lr, p, start, is_eval):
                    # Every rank holds the same whole-split val bpc, so all stop at this step.
                    stopped_early = not done
                    if not self.quiet and stopped_early:
                        self.log(self.validation.stop_message(r))
                    break
        return self._finish(metrics, start, stopped_early)

    def _log_point(self, metrics: Metrics, progress: Any, lr: float, p: float, start: float, is_eval: bool) -> bool:
        """A metrics line, and at a validation step val bpc and the checkpoints; whether the
        run's patience is spent."""
        r = self.position
        line = metrics.line(lr, r.epoch + r.window / self.batches.windows, start)
        val = self.validation.score(r) if is_eval else None
        if val is not None:
            line["val_bpc"] = round(val, 5)
        metrics.write(line)
        progress.update(r.step, p, line["train_bpc"], r.last_val, line["chars_per_s"])
        r.elapsed = time.monotonic() - start
        r.loss_sum = 0.0
        if val is not None:
            self.validation.keep_best(r, val, self.save)
        metrics.restart_clock()
        return self.validation.patience_spent(r)

    def _finish(self, metrics: Metrics, start: float, stopped_early: bool) -> dict[str, Any]:
        cfg, r = self.cfg, self.position
        r.elapsed = time.monotonic() - start
        metrics.keep_sum()
        last = self.save("last.pt")
        if cfg.val_frac == 0 or r.best_val is None:
            self.save("best.pt", with_resume=False)
        return {
            "steps": r.step,
            "epochs": r.epoch + r.window / self.batches.windows,
            "elapsed": r.elapsed,
            "best_val_bpc": r.best_val,
            "best_step": r.best_step,
            # val bpc stopped improving (for --patience validations), at the budget's end or before it
            "overfit": self.validation.patience_spent(r),
            "stopped_early": stopped_early,
            # The share of the budget (steps, epochs or time) spent; every rank agrees on it.
            "budget_used": distributed.max_all(self.world, self._progress(r.elapsed))[0],
            "last_val_bpc": r.last_val,
            "train_bpc": r.history[-1]["train_bpc"] if r.history else None,
            "chars_per_s": r.step * self.chars_per_step / max(1e-9, r.elapsed),
            "best": str(self.out / "best.pt"),
            "last": str(last),
            "parameters": count_parameters(self.model),
        }


def _check_fits_memory(model_cfg: ModelConfig, cfg: TrainConfig) -> None:
    """Refuse a model whose weights, gradients and Adam moments cannot fit in this machine's RAM.

    Better one clear line now than the kernel's OOM killer minutes later.
    """
    h, v, n = model_cfg.hidden, model_cfg.vocab_size, model_cfg.layers
    gates = GATES[check_cell(model_cfg.model)]
    params = size_in_parameters(v, n, h, model_cfg.embed, model_cfg.model)
    activations = cfg.batch_size * cfg.seq_len * (n * gates * h * 3 + v * 2)
    need = 4 * (4 * params + activations)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > total:
        raise CharrnnError(
            f"model too large: about {need / 2**30:.1f} GiB needed for {params / 1e6:.0f}M parameters and "
            f"activations, this machine has {total / 2**30:.1f} GiB; "
            "lower --hidden, --layers, --batch-size or --seq-len"
        )
