"""What a run's checkpoints hold, and how a resumed or fine-tuned run reads one back.

Everything that decides the next update (weights, optimiser, schedule position, RNG, data
position, carried hidden state, loss accumulators) is saved in ``last.pt``, so resuming is
bit-identical. The trainer owns a ``RunCheckpoint`` built from its fixed parts; what changes as
it trains (the position, the carried state, the loss scaler a caller may swap) it passes in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from charrnn.data.prepare import Prepared
from charrnn.errors import CharrnnError
from charrnn.model import checkpoint
from charrnn.model.network import CharRNN, ModelConfig, State, as_state, state_tensors
from charrnn.runtime import distributed
from charrnn.runtime.distributed import World
from charrnn.training.config import TrainConfig
from charrnn.training.finetune import extend_checkpoint
from charrnn.training.position import RunState

# Model settings that leave the weights' shapes alone: a resumed or fine-tuned run may change them.
REGULARISATION = ("dropout", "weight_drop")


@dataclass
class RunCheckpoint:
    """A training run's parts that its checkpoints save and restore."""

    cfg: TrainConfig
    data: Prepared
    model_cfg: ModelConfig
    model: CharRNN
    opt: torch.optim.Optimizer
    world: World
    batch_size: int
    rows: slice  # this rank's streams of the batch
    device: torch.device

    def save(
        self,
        path: Path,
        position: RunState,
        hidden: State | None,
        scaler: torch.amp.GradScaler,
        with_resume: bool = True,
    ) -> Path:
        """Write the checkpoint (rank 0 only); with resume state every rank must call it (it gathers)."""
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            raise CharrnnError(f"refusing to save non-finite weights to {path}")
        payload = self.payload(position, hidden, scaler, with_resume)
        if self.world.main:
            checkpoint.save(payload, path)
        return path

    def payload(
        self, position: RunState, hidden: State | None, scaler: torch.amp.GradScaler, with_resume: bool
    ) -> dict[str, Any]:
        """The checkpoint's contents: the model, its vocabulary and settings, the corpus, the
        scores, and with ``with_resume`` what a resumed run continues from."""
        data = self.data
        obj: dict[str, Any] = {
            "model_config": self.model_cfg.to_dict(),
            "vocab": data.vocab.to_state(),
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "train_config": self.cfg.to_dict(),
            # files: the first names, to show; paths: as given, for --resume to read again
            "corpus": {
                "key": data.key,
                "files": data.names[:100],
                "paths": data.paths,
                "vocab_given": data.vocab_given,
            },
            "step": position.step,
            "val_bpc": position.last_val,
            "best_val_bpc": position.best_val,
            "elapsed": position.elapsed,
        }
        if with_resume:
            obj["resume"] = self._resume_state(position, hidden, scaler)
        return obj

    def _resume_state(self, position: RunState, hidden: State | None, scaler: torch.amp.GradScaler) -> dict[str, Any]:
        saved = None
        if hidden is not None:
            saved = [s.detach().cpu() for s in distributed.gather_rows(self.world, state_tensors(hidden))]
        rng = distributed.gather_rng(self.world)
        return {
            "optimizer": self.opt.state_dict(),
            "run": {k: v for k, v in position.__dict__.items() if k != "history"},
            "history": position.history,
            "rng_cpu": rng[0],
            "rng_ranks": rng,
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "hidden": saved,
            "batch_size": self.batch_size,
            "scaler": scaler.state_dict(),
        }

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

    def resume(self, ckpt: dict[str, Any], scaler: torch.amp.GradScaler) -> tuple[RunState, State | None]:
        """Put a saved run's weights, optimiser, loss scale and RNG back; its position and
        carried state (this rank's streams), to go on from."""
        self._check_resumable(ckpt)
        res = ckpt["resume"]
        self.model.load_state_dict(ckpt["state_dict"])
        kernels = [(g["fused"], g["foreach"]) for g in self.opt.param_groups]
        self.opt.load_state_dict(res["optimizer"])
        # The saved run may have stepped with another kernel (or on another device): use ours.
        for g, (fused, foreach) in zip(self.opt.param_groups, kernels):
            g["fused"], g["foreach"] = fused, foreach
        if scaler.is_enabled() and res.get("scaler"):
            scaler.load_state_dict(res["scaler"])
        position = RunState(**res["run"], history=list(res["history"]))
        ranks = res.get("rng_ranks") or []
        torch.set_rng_state(ranks[self.world.rank] if len(ranks) == self.world.size else res["rng_cpu"])
        if res["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(res["rng_cuda"])
        hidden = res["hidden"]
        # Saved for the whole global batch: this rank takes its own streams.
        return position, None if hidden is None else as_state([h[:, self.rows].to(self.device) for h in hidden])

    def _check_resumable(self, ckpt: dict[str, Any]) -> None:
        """A resumed run must be this one: the same model, corpus, batch and window."""
        if "resume" not in ckpt:
            raise CharrnnError(f"{ckpt['path']}: holds no resume state (use --init-from to start from its weights)")
        self._check_same(ckpt, "resume")
        if ckpt["corpus"]["key"] != self.data.key:
            raise CharrnnError("cannot resume: the corpus differs from the one this run was trained on")
        saved_batch = ckpt["resume"]["batch_size"]
        if saved_batch != self.batch_size:
            raise CharrnnError(f"cannot resume: --batch-size {self.batch_size} differs from the run's {saved_batch}")
        saved_seq = ckpt["train_config"].get("seq_len")
        if saved_seq != self.cfg.seq_len:
            raise CharrnnError(f"cannot resume: --seq-len {self.cfg.seq_len} differs from the run's {saved_seq}")

    def start_from(self, ckpt: dict[str, Any], log: Callable[[str], None] | None) -> None:
        """Fine-tuning: the checkpoint's weights, grown by the corpus's new characters (the corpus
        was encoded with the checkpoint's vocabulary and those characters appended, see
        ``prepare``); ``log`` (or None) says which characters were added."""
        ckpt = extend_checkpoint(ckpt, self.data.vocab, self.data.train, log)
        self._check_same(ckpt, "--init-from")
        self.model.load_state_dict(ckpt["state_dict"])
