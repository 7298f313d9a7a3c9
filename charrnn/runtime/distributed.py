"""Data-parallel training across processes launched by ``torchrun`` (PyTorch's own engine).

Each rank owns a contiguous block of the TBPTT streams (the global batch is split, not
duplicated); DistributedDataParallel averages the gradients, so every rank takes the same
update. Rank 0 alone prepares the corpus, writes checkpoints, metrics and the progress bar.
Outside ``torchrun`` everything here is a no-op for a world of one process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from charrnn.errors import CharrnnError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def rows(self, batch_size: int) -> slice:
        """This rank's block of the global batch's streams."""
        per = batch_size // self.size
        return slice(self.rank * per, (self.rank + 1) * per)


def launched() -> World:
    """The world ``torchrun`` describes in the environment (a world of one without it)."""
    env = os.environ
    try:
        size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", "0"))
        local_size = int(env.get("LOCAL_WORLD_SIZE", str(size)))
    except ValueError:
        raise CharrnnError("WORLD_SIZE/RANK/LOCAL_RANK must be integers (set by torchrun)") from None
    return World(rank, size, local_rank, local_size)


def rank_device(world: World, device: torch.device) -> torch.device:
    """Each torchrun rank on a machine takes its own GPU, ``cuda:LOCAL_RANK``.

    With more ranks than GPUs the extra ranks would die in ``set_device`` with a traceback while
    the others wait for them; every rank sees the same counts, so all refuse together instead.
    """
    if not world.active or device.type != "cuda":
        return device
    gpus = torch.cuda.device_count()
    if world.local_size > gpus:
        raise CharrnnError(
            f"torchrun started {world.local_size} processes on this machine but it has {gpus} GPU(s); "
            f"use --nproc-per-node {gpus}, or --device cpu"
        )
    return torch.device("cuda", world.local_rank)


def start(world: World, device: torch.device) -> None:
    """Join the process group: NCCL on GPUs, gloo on CPU; split the CPU cores between ranks."""
    if not world.active or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
        # Several ranks on one machine each using every core would oversubscribe it many times.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world.local_size))
    dist.init_process_group(backend, timeout=timedelta(minutes=30))


def _device() -> torch.device:
    """Where collective tensors must live: the GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def exit_finished(world: World) -> None:
    """End a torchrun rank whose run is finished, written and out of the group.

    A normal interpreter exit aborted a rank in gloo's teardown ("terminate called without an
    active exception", exit -6) in ~1 of 10 two-rank runs, failing a finished run; flush and end
    the process directly instead. A single process returns and exits normally.
    """
    if world.active:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def main_first(world: World, fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 first (it fills a shared cache), then on the others.

    A failure on rank 0 is told to every rank, so no one waits forever at the barrier.
    """
    if not world.active:
        return fn()
    if not world.main:
        if not _all_succeeded(True):
            raise CharrnnError(f"rank {world.rank}: stopping, rank 0 failed (see its error)")
        return fn()
    try:
        result = fn()
    except CharrnnError:
        _all_succeeded(False)
        raise
    _all_succeeded(True)
    return result


def _all_succeeded(ok: bool) -> bool:
    """Whether every rank says ``ok`` (each rank must call it once)."""
    flag = torch.tensor([1 if ok else 0], device=_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag)


def max_all(world: World, *values: float) -> list[float]:
    """Each value's maximum over all ranks, so every rank takes the same branch and schedule."""
    if not world.active:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def sum_values(world: World, values: torch.Tensor) -> torch.Tensor:
    """Element-wise sum over ranks (float64 on CPU, for loss totals)."""
    if not world.active:
        return values
    t = values.detach().to(_device(), torch.float64).clone()
    dist.all_reduce(t)
    return t.cpu()


def gather_rows(world: World, state: list[torch.Tensor]) -> list[torch.Tensor]:
    """The full-batch hidden state from every rank's rows (dimension 1), for checkpoints."""
    if not world.active:
        return state
    gathered = []
    for s in state:
        s = s.detach().to(_device()).contiguous()
        parts = [torch.empty_like(s) for _ in range(world.size)]
        dist.all_gather(parts, s)
        gathered.append(torch.cat(parts, 1).cpu())
    return gathered


def gather_rng(world: World) -> list[torch.Tensor]:
    """Every rank's CPU random state (dropout masks differ per rank)."""
    state = torch.get_rng_state()
    if not world.active:
        return [state]
    state = state.to(_device())
    parts = [torch.empty_like(state) for _ in range(world.size)]
    dist.all_gather(parts, state)
    return [p.cpu() for p in parts]
