"""The training loop: truncated BPTT over parallel streams, AdamW, warm-up + cosine, checkpoints.

Everything that decides the next update (weights, optimiser, schedule position, RNG, data
position, carried hidden state, loss accumulators) is saved in ``last.pt``, so a resumed run
continues exactly where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from charrnn import checkpoint, distributed, precision
from charrnn.config import TrainConfig
from charrnn.data import Batches, Prepared
from charrnn.distributed import World
from charrnn.errors import CharrnnError
from charrnn.evaluate import evaluate
from charrnn.extend import extend_checkpoint
from charrnn.model import CharRNN, ModelConfig, count_parameters, detach_state

LN2 = math.log(2)
MAX_BAD_STEPS = 5
# Model settings that leave the weights' shapes alone: a resumed or fine-tuned run may change them.
REGULARISATION = ("dropout", "weight_drop")
# metrics.jsonl fields mirrored to TensorBoard with --tensorboard, and their tags there.
TENSORBOARD_TAGS = {"train_bpc": "bpc/train", "val_bpc": "bpc/val", "lr": "lr", "chars_per_s": "chars_per_s"}


class Interrupted(Exception):
    """Training stopped by a signal after saving ``last.pt``; carries the exit code."""

    def __init__(self, signum: int, path: Path) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}; saved {path}")
        self.exit_code = 128 + signum
        self.path = path


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CharrnnError("--device cuda: no CUDA GPU is available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise CharrnnError("--device mps: Apple MPS is not available")
    if name not in ("cpu", "cuda", "mps"):
        raise CharrnnError(f"unknown device {name!r}; choose auto, cpu, cuda or mps")
    return torch.device(name)


def lr_at(cfg: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over ``cfg.warmup`` steps, then cosine from ``lr`` to ``final_lr``.

    ``progress`` (0..1) is the fraction of the run done, by steps or by the time budget, so a
    ``--time`` run decays its learning rate to the end of its budget.
    """
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = min(1.0, max(0.0, progress))
    return cfg.final_lr + 0.5 * (cfg.lr - cfg.final_lr) * (1 + math.cos(math.pi * p))


def _make_optimizer(model: CharRNN, cfg: TrainConfig) -> torch.optim.Optimizer:
    unique = {id(p): p for p in model.parameters()}.values()
    decay = [p for p in unique if p.dim() >= 2]
    no_decay = [p for p in unique if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # One fused kernel per step where PyTorch has it (CPU, CUDA): the update of a small model is
    # otherwise dozens of elementwise passes, a visible share of a 2x128 step.
    fused = all(p.device.type in ("cpu", "cuda") for p in unique)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), fused=fused, foreach=not fused)


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
    history: list[dict] = field(default_factory=list)


@dataclass
class Trainer:
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
        self.device = self.device or pick_device(cfg.device)
        torch.manual_seed(cfg.seed)
        try:
            self.batch_size = Batches.fit_batch_size(len(self.data.train), cfg.batch_size, cfg.seq_len)
        except CharrnnError as e:
            raise CharrnnError(f"{', '.join(self.data.names[:3])}: {e}") from None
        if world.active:
            if self.batch_size < world.size:
                raise CharrnnError(f"--batch-size {self.batch_size} is smaller than the {world.size} ranks; each needs a stream")
            if cfg.batch_size % world.size:
                raise CharrnnError(f"--batch-size {cfg.batch_size} must divide evenly over {world.size} ranks")
            self.batch_size -= self.batch_size % world.size
        if self.batch_size < cfg.batch_size:
            self.log(
                f"warning: corpus is short; using --batch-size {self.batch_size} instead of {cfg.batch_size}"
            )
            cfg.batch_size = self.batch_size
        if len(self.data.val) < 2 and cfg.val_frac > 0:
            raise CharrnnError("validation split is empty; give more text or a larger --val-frac")
        self.batches = Batches(self.data.train, cfg.batch_size, cfg.seq_len)
        self.eval_every = cfg.eval_every or min(200, self.batches.windows)
        self.rows = world.rows(cfg.batch_size)
        self.val = self.data.val[: cfg.val_tokens] if cfg.val_tokens else self.data.val
        # Characters the validation predictions cover, so val is in bits per character.
        self.val_chars = self.data.vocab.count_chars(self.val[1:])
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
        self.model = CharRNN(self.model_cfg).to(self.device)
        if self.init_from is None and self.resume is None:  # else the loaded weights replace it
            self._init_head_bias()
        self.net = self.model
        if world.active:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.opt = _make_optimizer(self.model, cfg)
        self.precision = precision.resolve(cfg.precision, self.device, cfg.model)
        self.scaler = self.precision.scaler()
        self.run = RunState()
        self.state = None
        if self.init_from is not None:
            self._load_init(self.init_from)
        if self.resume is not None:
            self._load_resume(self.resume)
        self._stop_signal: int | None = None

    def _init_head_bias(self) -> None:
        """Start the output layer at the training text's token frequencies (log unigram prior)."""
        counts = np.zeros(self.data.vocab.size, np.float64)
        # In slices: bincount widens ids to 8 bytes, and the memory-mapped text may be gigabytes.
        for a in range(0, len(self.data.train), 1 << 24):
            counts += np.bincount(self.data.train[a : a + (1 << 24)], minlength=len(counts))
        prior = np.log((counts + 0.1) / (counts.sum() + 0.1 * len(counts)))
        with torch.no_grad():
            self.model.head.bias.copy_(torch.from_numpy(prior))

    # -- checkpoints -------------------------------------------------------------------------
    def _payload(self, with_resume: bool) -> dict[str, Any]:
        """The checkpoint's contents; with resume state, every rank must call it (it gathers)."""
        r = self.run
        obj: dict[str, Any] = {
            "model_config": self.model_cfg.to_dict(),
            "vocab": self.data.vocab.to_state(),
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "train_config": self.cfg.to_dict(),
            # files: the first names, to show; paths: as given, for --resume to read again
            "corpus": {"key": self.data.key, "files": self.data.names[:100], "paths": self.data.paths,
                       "vocab_given": self.data.vocab_given},
            "step": r.step,
            "val_bpc": r.last_val,
            "best_val_bpc": r.best_val,
            "elapsed": r.elapsed,
        }
        if with_resume:
            state = self.state
            if state is not None:
                state = list(state) if isinstance(state, tuple) else [state]
                state = [s.detach().cpu() for s in distributed.gather_rows(self.world, state)]
            rng = distributed.gather_rng(self.world)
            obj["resume"] = {
                "optimizer": self.opt.state_dict(),
                "run": {k: v for k, v in r.__dict__.items() if k != "history"},
                "history": r.history,
                "rng_cpu": rng[0],
                "rng_ranks": rng,
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "hidden": state,
                "batch_size": self.batch_size,
                "scaler": self.scaler.state_dict(),
            }
        return obj

    def save(self, name: str, with_resume: bool = True) -> Path:
        path = self.out / name
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise CharrnnError(f"refusing to save non-finite weights to {path}")
        payload = self._payload(with_resume)
        if self.world.main:
            checkpoint.save(payload, path)
        return path

    def _check_same(self, ckpt: dict[str, Any], what: str) -> None:
        """The checkpoint's weights must fit this model; its regularisation may change (e.g. more
        dropout for fine-tuning on a small corpus), as the learning rate or time budget may."""
        mine = self.model_cfg.to_dict()
        # Read through ModelConfig so a field added since the checkpoint was saved takes its default.
        theirs = ModelConfig.from_dict(ckpt["model_config"]).to_dict()
        diffs = [f"{k} {theirs[k]!r} -> {v!r}" for k, v in mine.items() if k not in REGULARISATION and theirs[k] != v]
        if diffs:
            raise CharrnnError(f"cannot {what}: model differs from the checkpoint ({'; '.join(diffs)})")
        if ckpt["vocab"] != self.data.vocab.to_state():
            raise CharrnnError(f"cannot {what}: the corpus vocabulary differs from the checkpoint's")

    def _load_resume(self, ckpt: dict[str, Any]) -> None:
        if "resume" not in ckpt:
            raise CharrnnError(f"{ckpt['path']}: holds no resume state (use --init-from to start from its weights)")
        self._check_same(ckpt, "resume")
        if ckpt["corpus"]["key"] != self.data.key:
            raise CharrnnError("cannot resume: the corpus differs from the one this run was trained on")
        res = ckpt["resume"]
        if res["batch_size"] != self.batch_size:
            raise CharrnnError(f"cannot resume: --batch-size {self.batch_size} differs from the run's {res['batch_size']}")
        saved_seq = ckpt["train_config"].get("seq_len")
        if saved_seq != self.cfg.seq_len:
            raise CharrnnError(f"cannot resume: --seq-len {self.cfg.seq_len} differs from the run's {saved_seq}")
        self.model.load_state_dict(ckpt["state_dict"])
        kernels = [(g["fused"], g["foreach"]) for g in self.opt.param_groups]
        self.opt.load_state_dict(res["optimizer"])
        # The saved run may have stepped with another kernel (or on another device): use ours.
        for g, (fused, foreach) in zip(self.opt.param_groups, kernels):
            g["fused"], g["foreach"] = fused, foreach
        if self.scaler.is_enabled() and res.get("scaler"):
            self.scaler.load_state_dict(res["scaler"])
        self.run = RunState(**res["run"], history=list(res["history"]))
        ranks = res.get("rng_ranks") or []
        torch.set_rng_state(ranks[self.world.rank] if len(ranks) == self.world.size else res["rng_cpu"])
        if res["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(res["rng_cuda"])
        hidden = res["hidden"]
        if hidden is not None:
            # Saved for the whole global batch: this rank takes its own streams.
            hidden = [h[:, self.rows].to(self.device) for h in hidden]
            self.state = tuple(hidden) if len(hidden) == 2 else hidden[0]

    def _load_init(self, ckpt: dict[str, Any]) -> None:
        """Fine-tuning: the corpus was encoded with the checkpoint's vocabulary (see ``prepare``),
        grown by the corpus's new characters, which the weights grow to fit."""
        ckpt = extend_checkpoint(ckpt, self.data.vocab, self.data.train, None if self.quiet or self.cfg.first_run else self.log)
        self._check_same(ckpt, "--init-from")
        self.model.load_state_dict(ckpt["state_dict"])

    # -- the loop ----------------------------------------------------------------------------
    def _patience_spent(self) -> bool:
        return bool(self.cfg.patience) and self.run.since_best >= self.cfg.patience

    def _progress(self, elapsed: float) -> float:
        cfg, r = self.cfg, self.run
        p = 0.0
        if cfg.steps:
            p = max(p, r.step / cfg.steps)
        if cfg.epochs:
            p = max(p, (r.epoch + r.window / self.batches.windows) / cfg.epochs)
        if cfg.time:
            p = max(p, elapsed / cfg.time)
        return p

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.run
        if r.window >= self.batches.windows:
            r.window = 0
            r.epoch += 1
            self.state = None
        x, y = self.batches.window(r.window)
        x, y = x[self.rows], y[self.rows]
        to = lambda a: torch.from_numpy(np.ascontiguousarray(a).astype(np.int64)).to(self.device)
        return to(x), to(y)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_signal is not None:
            os._exit(128 + signum)
        self._stop_signal = signum
        self.log(f"\n{signal.Signals(signum).name}: saving last.pt after this step (again to quit at once)")

    def fit(self) -> dict[str, Any]:
        cfg = self.cfg
        if cfg.steps is None and cfg.epochs is None and cfg.time is None:
            raise CharrnnError("give a stopping point: --steps, --epochs or --time")
        self.out.mkdir(parents=True, exist_ok=True)
        if not os.access(self.out, os.W_OK):
            raise CharrnnError(f"--out {self.out}: directory is not writable")
        metrics = self.out / "metrics.jsonl"
        self._write_history(metrics)
        board = self._open_tensorboard() if cfg.tensorboard and self.world.main else None
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with torch.enable_grad():
                return self._loop(metrics, board)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if board is not None:
                board.close()

    def _open_tensorboard(self):
        """A SummaryWriter in RUN_DIR/tensorboard. A resumed run drops the events logged after
        its checkpoint (they will be logged again); a fresh run starts the directory over."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CharrnnError("--tensorboard needs the tensorboard package: pip install 'charrnn[tensorboard]'") from None
        log_dir = self.out / "tensorboard"
        if self.resume is None and log_dir.is_dir():
            for old in log_dir.glob("events.out.tfevents.*"):
                old.unlink()
        return SummaryWriter(str(log_dir), purge_step=self.run.step + 1 if self.resume is not None else None)

    def _write_history(self, metrics: Path) -> None:
        if not self.world.main:
            return
        tmp = metrics.with_name(f".{metrics.name}.tmp")
        tmp.write_text("".join(json.dumps(line) + "\n" for line in self.run.history))
        os.replace(tmp, metrics)

    def _loop(self, metrics: Path, board: Any = None) -> dict[str, Any]:
        from charrnn.progress import TrainProgress

        cfg, r, model, world = self.cfg, self.run, self.model, self.world
        model.train()
        chars_per_step = self.batch_size * cfg.seq_len * self.data.chars_per_token
        start = time.monotonic() - r.elapsed
        last_log_time, last_log_step = time.monotonic(), r.step
        loss_sum = torch.tensor(r.loss_sum, dtype=torch.float64, device=self.device)
        params = [p for p in model.parameters()]
        if not self.quiet:
            part = f" (validating on the first {len(self.val):,}; --val-tokens 0 for all)" if len(self.val) < len(self.data.val) else ""
            self.log(
                f"training {cfg.model} {cfg.layers}x{cfg.hidden} ({count_parameters(model) / 1e6:.2f}M parameters, "
                f"dropout {cfg.dropout:g}) on "
                f"{len(self.data.train):,} train / {len(self.data.val):,} val tokens{part}, vocab {self.data.vocab.size}, "
                f"batch {self.batch_size} x seq {cfg.seq_len}, device {self.device}, {self.precision.describe()}"
            )
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
                    r.loss_sum = float(loss_sum)
                    path = self.save("last.pt")
                    progress.stop()
                    raise Interrupted(self._stop_signal or signal.SIGTERM, path)
                lr = lr_at(cfg, r.step, p) * r.lr_scale
                for g in self.opt.param_groups:
                    g["lr"] = lr
                x, y = self._batch()
                with self.precision.autocast():
                    logits, state = self.net(x, self.state)
                loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
                self.opt.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.opt)
                gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                r.window += 1
                bad = (~torch.isfinite(torch.stack([loss.detach(), gnorm.float()]))).tolist()  # one host sync
                bad_loss, bad_grads = distributed.max_all(world, *map(float, bad))
                if bad_grads and not bad_loss and self.scaler.is_enabled() and self.scaler.get_scale() > 1:
                    # The scaled float16 gradients overflowed: the scaler lowers its scale and the
                    # step is skipped. This is how loss scaling finds its level, not divergence
                    # (unless the scale is already down to 1: then it is the gradients themselves).
                    self.scaler.update()
                    self.state = detach_state(state)
                    continue
                if bad_loss or bad_grads:
                    self.scaler.update()
                    r.bad_steps += 1
                    r.lr_scale *= 0.5
                    self.state = None
                    self.log(f"warning: step {r.step}: non-finite loss or gradient; skipped, learning rate halved")
                    if r.bad_steps >= MAX_BAD_STEPS:
                        best = self.out / "best.pt"
                        hint = f"; last good checkpoint: {best}" if best.exists() else ""
                        raise CharrnnError(f"training diverged: {r.bad_steps} non-finite steps in a row{hint}")
                    continue
                r.bad_steps = 0
                self.scaler.step(self.opt)
                self.scaler.update()
                self.state = detach_state(state)
                r.step += 1
                loss_sum += loss.detach().double()
                r.loss_count += 1
                done = distributed.max_all(world, self._progress(time.monotonic() - start))[0] >= 1.0
                is_log = r.step % cfg.log_every == 0 or done
                is_eval = cfg.val_frac > 0 and (r.step % self.eval_every == 0 or done)
                if is_log or is_eval:
                    now = time.monotonic()
                    mean_loss = float(distributed.sum_values(world, loss_sum)) / world.size / r.loss_count
                    train_bpc = mean_loss / LN2 / self.data.chars_per_token
                    cps = (r.step - last_log_step) * chars_per_step / max(1e-9, now - last_log_time)
                    line: dict[str, Any] = {
                        "step": r.step,
                        "epoch": round(r.epoch + r.window / self.batches.windows, 4),
                        "train_bpc": round(train_bpc, 5),
                        "val_bpc": None,
                        "lr": lr,
                        "chars_per_s": round(cps, 1),
                        "elapsed": round(now - start, 2),
                    }
                    loss_sum.zero_()
                    r.loss_count = 0
                    if is_eval:
                        with self.precision.validation_autocast():
                            score = evaluate(model, self.val, self.device, chars=self.val_chars, world=world)
                        r.last_val = score.bpc
                        line["val_bpc"] = round(score.bpc, 5)
                    r.history.append(line)
                    if world.main:
                        with open(metrics, "a") as f:
                            f.write(json.dumps(line) + "\n")
                    if board is not None:
                        for key, tag in TENSORBOARD_TAGS.items():
                            if line[key] is not None:
                                board.add_scalar(tag, line[key], r.step)
                        board.flush()
                    progress.update(r.step, p, train_bpc, r.last_val, cps)
                    r.elapsed = time.monotonic() - start
                    r.loss_sum = 0.0
                    if is_eval:
                        if r.best_val is None or r.last_val < r.best_val:
                            r.best_val, r.best_step, r.since_best = r.last_val, r.step, 0
                            self.save("best.pt", with_resume=False)
                        else:
                            r.since_best += 1
                        self.save("last.pt")
                    last_log_time, last_log_step = time.monotonic(), r.step
                    if self._patience_spent():
                        # Every rank holds the same whole-split val bpc, so all stop at this step.
                        stopped_early = not done
                        if not self.quiet and stopped_early:
                            self.log(
                                f"stopping early at step {r.step:,}: val bpc has not improved in {r.since_best} validations "
                                f"(best {r.best_val:.4f} at step {r.best_step:,}, kept in best.pt; --patience 0 trains on)"
                            )
                        break
                else:
                    progress.update(r.step, p, None, r.last_val, None)
        r.elapsed = time.monotonic() - start
        r.loss_sum = float(loss_sum)
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
            "overfit": self._patience_spent(),
            "stopped_early": stopped_early,
            # The share of the budget (steps, epochs or time) spent; every rank agrees on it.
            "budget_used": distributed.max_all(world, self._progress(r.elapsed))[0],
            "last_val_bpc": r.last_val,
            "train_bpc": r.history[-1]["train_bpc"] if r.history else None,
            "chars_per_s": r.step * chars_per_step / max(1e-9, r.elapsed),
            "best": str(self.out / "best.pt"),
            "last": str(last),
            "parameters": count_parameters(model),
        }


FIRST_RUN = "first"  # where fit_retraining moves an early-stopped first run's files


def retrain_steps(result: dict[str, Any], longer: float = 1.0) -> tuple[int, bool] | None:
    """Steps for a fresh run whose learning rate decays over the passes an early-stopped run
    could use, and whether that run fits in what is left of the budget (else it is a suggestion).

    None when val bpc did not stop improving. The first run's own length times ``longer`` (a
    second run with more dropout may learn the text more slowly: ``retrain_length``), or as much
    of it as the budget has room for (steps cost about the same in both runs). Never under 1.15x
    the first run's best step: on the demo screenplay, with the best at step 168 of 288
    (validation flat from there to 264), a 190-step run reached 2.680 against 2.554 for 288
    (README "Early stop"). A suggestion is the whole length the run would have had with room.
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

    An early-stopped run's best model was trained at a still-high learning rate. Decaying the
    learning rate from that model does not help (it goes on memorising the text); a run whose
    whole cosine decay spans the passes the model could use does, and more so with the dropout
    that memorising called for. The first run's files move to RUN_DIR/first. A resumed first
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
            trainer.log(f"a new run of --steps {steps} --dropout {dropout:g}, with the learning rate decaying over them, "
                        "may reach a lower val bpc")
        return first
    if not trainer.quiet:
        trainer.log(f"training again from scratch for {steps:,} steps with dropout {dropout:g}, the learning rate "
                    f"decaying over them (this run's files are in {trainer.out / FIRST_RUN})")
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
    again = Trainer(replace(cfg, steps=steps, epochs=None, time=left, dropout=dropout, first_run=summary),
                    trainer.data, trainer.out, quiet=trainer.quiet, log=trainer.log, init_from=trainer.init_from,
                    world=trainer.world, device=trainer.device)
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


def _check_fits_memory(model_cfg: ModelConfig, cfg: TrainConfig) -> None:
    """Refuse a model whose weights, gradients and Adam moments cannot fit in this machine's RAM.

    Better one clear line now than the kernel's OOM killer minutes later.
    """
    h, e, v, n = model_cfg.hidden, model_cfg.embed, model_cfg.vocab_size, model_cfg.layers
    gates = {"lstm": 4, "peephole": 4, "cifg": 3, "gru": 3}.get(model_cfg.model, 1)
    params = v * e + gates * h * (e + h) + (n - 1) * gates * h * 2 * h + h * v
    activations = cfg.batch_size * cfg.seq_len * (n * gates * h * 3 + v * 2)
    need = 4 * (4 * params + activations)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > total:
        raise CharrnnError(
            f"model too large: about {need / 2**30:.1f} GiB needed for {params / 1e6:.0f}M parameters and "
            f"activations, this machine has {total / 2**30:.1f} GiB; lower --hidden, --layers, --batch-size or --seq-len"
        )
