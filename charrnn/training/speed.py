"""How fast this machine trains a model of a given size: a few real training steps, timed, and
remembered per machine and settings so a later run (or a short budget) need not time them again.

``--preset auto`` needs it because the tokens a run reads in its budget, not the budget itself,
decide which size learns most: the same ten minutes are 5.5M characters of the default model on
a 2-core AVX2 CPU in float32, 11M on one with AMX in bfloat16, and hundreds of millions on a GPU.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from charrnn.model.network import CharRNN, ModelConfig
from charrnn.runtime import measured
from charrnn.runtime.precision import Precision
from charrnn.training.update import make_optimizer, token_loss

if TYPE_CHECKING:
    from charrnn.training.sizes import Size

# A timing ends after this many seconds of timed steps (and at least MIN_STEPS of them): on a
# 2-core CPU the default model's step takes ~0.2-0.5 s, so a size is timed in about a second.
TIMED_SECONDS = 0.4
MIN_STEPS = 2
MAX_STEPS = 50


def cache_path() -> Path:
    """``$XDG_CACHE_HOME/charrnn/speeds.json`` (``~/.cache`` by default)."""
    return measured.cache_path("speeds")


# A timed model's cell, layers, hidden, embed, seq_len, rows (of a rank's batch) and vocabulary.
Shape = tuple[str, int, int, int, int, int, int]


def _key(device: torch.device, precision: Precision, shape: Shape) -> str:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    text = f"{measured.machine()}|{where}|{precision.name}|{shape}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Speeds:
    """Tokens per second of one training step for each model shape, timed on first use.

    ``measured`` says how many shapes were timed in this process (the rest came from the cache)
    and ``seconds`` how long the timing took, which the run's time budget pays for.
    """

    def __init__(
        self,
        device: torch.device,
        precision: Precision,
        vocab: int,
        ranks: int = 1,
        model: str = "lstm",
        cache: Path | None = None,
    ) -> None:
        self.device, self.precision, self.vocab, self.ranks, self.model = device, precision, vocab, ranks, model
        self.cache = cache or cache_path()
        self.measured = 0
        self.seconds = 0.0
        self._known = _read(self.cache)

    def __call__(self, size: Size) -> float:
        """Tokens per second of all ranks together (each steps its share of the batch)."""
        rows = max(1, size.batch_size // self.ranks)
        # The vocabulary to the next power of two: the head's cost moves with it, a few characters don't.
        shape: Shape = (
            self.model,
            size.layers,
            size.hidden,
            size.embed,
            size.seq_len,
            rows,
            1 << max(0, self.vocab - 1).bit_length(),
        )
        key = _key(self.device, self.precision, shape)
        if key not in self._known:
            start = time.monotonic()
            self._known[key] = time_steps(shape, self.device, self.precision)
            self.seconds += time.monotonic() - start
            self.measured += 1
            self._save()
        return self._known[key] * self.ranks

    def _save(self) -> None:
        # Another run may have timed other sizes since this one read the file: keep theirs too.
        self._known = {**_read(self.cache), **self._known}
        measured.remember(self.cache, dict(self._known))


def _read(cache: Path) -> dict[str, float]:
    return {k: v for k, v in measured.read(cache).items() if isinstance(v, (int, float))}


def time_steps(shape: Shape, device: torch.device, precision: Precision) -> float:
    """Tokens per second of a training step (forward, the trainer's loss, backward, its AdamW) of a
    model of ``shape`` on random tokens, after one untimed step (oneDNN and cuDNN set up their
    kernels on the first)."""
    kind, layers, hidden, embed, seq_len, rows, vocab = shape
    torch.manual_seed(0)
    model = CharRNN(
        ModelConfig(vocab_size=vocab, model=kind, layers=layers, hidden=hidden, embed=embed, dropout=0.0)
    ).to(device)
    # TrainConfig's default rates (the trainer sets the learning rate every step): they change
    # what a step computes, not what it costs.
    opt = make_optimizer(model, lr=3e-3, weight_decay=0.01)
    x = torch.randint(vocab, (rows, seq_len + 1), device=device)

    def step() -> None:
        with precision.autocast():
            logits, _ = model(x[:, :-1])
        loss = token_loss(logits, x[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    try:
        step()
        _sync(device)
        start, steps = time.monotonic(), 0
        while steps < MIN_STEPS or (time.monotonic() - start < TIMED_SECONDS and steps < MAX_STEPS):
            step()
            steps += 1
            if steps % MIN_STEPS == 0:  # a GPU queues steps as training does; wait only now and then
                _sync(device)
        _sync(device)
    except torch.OutOfMemoryError:  # a size that does not fit cannot be trained: it reads nothing
        return 0.0
    return steps * rows * seq_len / (time.monotonic() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
