"""Mixed precision for training: which dtype the forward pass runs in, and loss scaling.

Weights, optimiser state, the carried hidden state and validation stay float32; only the
forward pass of a training step runs under ``torch.autocast``. On CUDA, autocast runs cuDNN's
LSTM/GRU in float16 whatever dtype it was given (PyTorch's cuDNN RNN autocast wrapper casts to
half), so every CUDA autocast run scales its loss with a ``GradScaler`` against gradient
underflow; on CPU only float16 needs one (bfloat16 has float32's exponent range).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from charrnn.errors import CharrnnError

DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Precision:
    device_type: str
    dtype: torch.dtype | None

    @property
    def name(self) -> str:
        return next(k for k, v in DTYPES.items() if v == self.dtype)

    @property
    def scales_loss(self) -> bool:
        return self.dtype is not None and (self.device_type == "cuda" or self.dtype == torch.float16)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler:
        """A pass-through when the loss needs no scaling (its step, unscale and update do nothing more)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.scales_loss)


def cpu_computes(dtype: torch.dtype) -> bool:
    """Whether this CPU has the instructions oneDNN needs for its LSTM/GRU in ``dtype``.

    Without them the fused RNN kernel cannot be built at all (measured on an AVX2 CPU: oneDNN
    "could not create a primitive descriptor" for bfloat16 and float16 alike).
    """
    checks = {
        torch.bfloat16: ("_is_avx512_bf16_supported", "_is_amx_tile_supported"),
        torch.float16: ("_is_amx_fp16_supported",),
    }[dtype]
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def dtype_of(name: str) -> torch.dtype | None:
    """The autocast dtype a ``--precision`` name stands for (None: float32 throughout)."""
    if name not in DTYPES:
        raise CharrnnError(f"unknown precision {name!r}; choose {', '.join(DTYPES)}")
    return DTYPES[name]


def resolve(name: str, device: torch.device) -> Precision:
    """``--precision``: float32 unless asked; refuse a dtype the device cannot compute in."""
    dtype = dtype_of(name)
    if dtype is not None:
        if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise CharrnnError("--precision bfloat16: this GPU has no bfloat16 support; use float16")
        if device.type == "cpu" and not cpu_computes(dtype):
            need = "AVX-512-BF16 or AMX" if dtype == torch.bfloat16 else "AMX-FP16"
            raise CharrnnError(f"--precision {name}: this CPU lacks {need}, which the fused LSTM needs for it; use float32")
        if not torch.amp.is_autocast_available(device.type):
            raise CharrnnError(f"--precision {name}: autocast is not available on {device.type}")
    return Precision(device.type, dtype)
