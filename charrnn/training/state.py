"""A run's position and its checkpoint contents: what ``last.pt`` holds so a resumed run
continues exactly where it stopped, and how a resumed or fine-tuned run reads it back.

Everything that decides the next update (weights, optimiser, schedule position, RNG, data
position, carried hidden state, loss accumulators) is saved, so resuming is bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from charrnn.runtime import distributed
from charrnn.errors import CharrnnError
from charrnn.training.finetune import extend_checkpoint
from charrnn.model.network import ModelConfig, as_state, state_tensors

if TYPE_CHECKING:
    from charrnn.training.trainer import Trainer

# Model settings that leave the weights' shapes alone: a resumed or fine-tuned run may change them.
REGULARISATION = ("dropout", "weight_drop")


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


def payload(t: Trainer, with_resume: bool) -> dict[str, Any]:
    """The checkpoint's contents; with resume state, every rank must call it (it gathers)."""
    r = t.run
    obj: dict[str, Any] = {
        "model_config": t.model_cfg.to_dict(),
        "vocab": t.data.vocab.to_state(),
        "state_dict": {k: v.detach().cpu() for k, v in t.model.state_dict().items()},
        "train_config": t.cfg.to_dict(),
        # files: the first names, to show; paths: as given, for --resume to read again
        "corpus": {"key": t.data.key, "files": t.data.names[:100], "paths": t.data.paths,
                   "vocab_given": t.data.vocab_given},
        "step": r.step,
        "val_bpc": r.last_val,
        "best_val_bpc": r.best_val,
        "elapsed": r.elapsed,
    }
    if with_resume:
        obj["resume"] = _resume_state(t)
    return obj


def _resume_state(t: Trainer) -> dict[str, Any]:
    state = t.state
    if state is not None:
        state = [s.detach().cpu() for s in distributed.gather_rows(t.world, state_tensors(state))]
    rng = distributed.gather_rng(t.world)
    return {
        "optimizer": t.opt.state_dict(),
        "run": {k: v for k, v in t.run.__dict__.items() if k != "history"},
        "history": t.run.history,
        "rng_cpu": rng[0],
        "rng_ranks": rng,
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "hidden": state,
        "batch_size": t.batch_size,
        "scaler": t.scaler.state_dict(),
    }


def check_same(t: Trainer, ckpt: dict[str, Any], what: str) -> None:
    """The checkpoint's weights must fit this model; its regularisation may change (e.g. more
    dropout for fine-tuning on a small corpus), as the learning rate or time budget may."""
    mine = t.model_cfg.to_dict()
    # Read through ModelConfig so a field added since the checkpoint was saved takes its default.
    theirs = ModelConfig.from_dict(ckpt["model_config"]).to_dict()
    diffs = [f"{k} {theirs[k]!r} -> {v!r}" for k, v in mine.items() if k not in REGULARISATION and theirs[k] != v]
    if diffs:
        raise CharrnnError(f"cannot {what}: model differs from the checkpoint ({'; '.join(diffs)})")
    if ckpt["vocab"] != t.data.vocab.to_state():
        raise CharrnnError(f"cannot {what}: the corpus vocabulary differs from the checkpoint's")


def load_resume(t: Trainer, ckpt: dict[str, Any]) -> None:
    """Put a saved run's weights, optimiser, position, RNG and carried state into ``t``."""
    if "resume" not in ckpt:
        raise CharrnnError(f"{ckpt['path']}: holds no resume state (use --init-from to start from its weights)")
    check_same(t, ckpt, "resume")
    if ckpt["corpus"]["key"] != t.data.key:
        raise CharrnnError("cannot resume: the corpus differs from the one this run was trained on")
    res = ckpt["resume"]
    if res["batch_size"] != t.batch_size:
        raise CharrnnError(f"cannot resume: --batch-size {t.batch_size} differs from the run's {res['batch_size']}")
    saved_seq = ckpt["train_config"].get("seq_len")
    if saved_seq != t.cfg.seq_len:
        raise CharrnnError(f"cannot resume: --seq-len {t.cfg.seq_len} differs from the run's {saved_seq}")
    t.model.load_state_dict(ckpt["state_dict"])
    kernels = [(g["fused"], g["foreach"]) for g in t.opt.param_groups]
    t.opt.load_state_dict(res["optimizer"])
    # The saved run may have stepped with another kernel (or on another device): use ours.
    for g, (fused, foreach) in zip(t.opt.param_groups, kernels):
        g["fused"], g["foreach"] = fused, foreach
    if t.scaler.is_enabled() and res.get("scaler"):
        t.scaler.load_state_dict(res["scaler"])
    t.run = RunState(**res["run"], history=list(res["history"]))
    ranks = res.get("rng_ranks") or []
    torch.set_rng_state(ranks[t.world.rank] if len(ranks) == t.world.size else res["rng_cpu"])
    if res["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(res["rng_cuda"])
    hidden = res["hidden"]
    if hidden is not None:
        # Saved for the whole global batch: this rank takes its own streams.
        t.state = as_state([h[:, t.rows].to(t.device) for h in hidden])


def load_init(t: Trainer, ckpt: dict[str, Any]) -> None:
    """Fine-tuning: the corpus was encoded with the checkpoint's vocabulary (see ``prepare``),
    grown by the corpus's new characters, which the weights grow to fit."""
    ckpt = extend_checkpoint(ckpt, t.data.vocab, t.data.train, None if t.quiet or t.cfg.first_run else t.log)
    check_same(t, ckpt, "--init-from")
    t.model.load_state_dict(ckpt["state_dict"])
