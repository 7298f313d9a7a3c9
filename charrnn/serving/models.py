"""The models a server serves and the settings it serves them with."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import torch

from charrnn.data.vocab import Vocab, encode_prime
from charrnn.errors import CharrnnError
from charrnn.model import checkpoint
from charrnn.model.network import CharRNN
from charrnn.serving.engine import Engine, Job


class Connection(Protocol):
    """What admission needs of a stream's connection (``charrnn.serving.guard.Guarded``)."""

    def stalled_for(self) -> float: ...

    def evict(self) -> None: ...


class Stream(NamedTuple):
    """A streaming request that may give up its place: its connection, its rows, and what ends it
    (its rows cancelled, its place freed)."""

    connection: Connection
    rows: int
    release: Callable[[], None]


@dataclass
class Served:
    """One model as the API names it."""

    name: str
    model: CharRNN
    vocab: Vocab
    created: int
    engine: Engine | None = None


@dataclass
class ServerState:
    models: dict[str, Served]
    api_key: str | None = None
    host: str = "127.0.0.1"  # the address bound: what a request's Host must name
    allow_origins: list[str] = field(default_factory=list)
    max_tokens: int = 4096
    max_prompt: int = 32_768
    max_concurrent: int = 64
    max_rows: int = 512
    max_connections: int = 1000
    read_timeout: float = 5.0
    stall_timeout: float = 10.0
    quiet: bool = False
    device: str = "cpu"
    threads: int = field(default_factory=lambda: model_threads())
    active: int = 0
    rows: int = 0  # the rows (choices) of the requests in flight
    # Streams that may give up their place, by their admission slot (charrnn.serving.admission).
    streams: dict[object, Stream] = field(default_factory=dict)
    engines: list[Engine] = field(default_factory=list)


def model_threads() -> int:
    """Torch threads for each model's worker: OMP_NUM_THREADS if set, else every core, since the
    event loop mostly waits (2-core Xeon, `bench/serve.py`, one client: 1,297 chars/s with two
    threads against 1,004 with one)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else len(os.sched_getaffinity(0))


def load_models(paths: list[str]) -> dict[str, Served]:
    """Each checkpoint or run directory, named by its run directory (or its file's stem: the
    bundled base model is ``english``).

    This (the event loop's) thread then computes on one torch thread, before it runs any torch
    operation: once it has run one on an OpenMP team of its own, every step of a worker's team
    took 1.7-2.3x as long (2-core Xeon, one process, same minute)."""
    torch.set_num_threads(1)
    files = [checkpoint.resolve(p) for p in paths]
    served: dict[str, Served] = {}
    for f in files:
        name = f.parent.resolve().name if f.name in checkpoint.RUN_FILES else f.stem
        if name in served:
            raise CharrnnError(f"two models would both be named {name!r}: give run directories with different names")
        model, vocab = checkpoint.build_model(checkpoint.load(f))
        served[name] = Served(name, model, vocab, int(f.stat().st_mtime))
    return served


def injected_fault(vocab: Vocab) -> Callable[[list[Job]], None] | None:
    """The engine's fault hook for tests and ``bench/serve_faults.py``: with ``CHARRNN_FAULT=TEXT``
    in the environment, a tick whose batch holds a request whose prompt starts with TEXT raises,
    as a bug in the tick would. Unset (always, in use), there is no hook."""
    marker = os.environ.get("CHARRNN_FAULT")
    if not marker:
        return None
    ids = encode_prime(vocab, marker, "skip")

    def fault(jobs: list[Job]) -> None:
        if any(job.prompt_ids[: len(ids)] == ids for job in jobs):
            raise RuntimeError("a fault injected by CHARRNN_FAULT")

    return fault
