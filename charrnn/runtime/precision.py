"""Mixed precision for training (which dtype the forward pass runs in, and loss scaling) and the
sampler's weights (``step_dtype``, at the end).

``auto`` (the default) picks bfloat16 where it was measured to train faster at the same quality
and float32 everywhere else (see ``auto_dtype``). Weights, optimiser state and the carried
hidden state stay float32; only the forward pass of a training step (and, for bfloat16 on a CPU,
validation) runs under ``torch.autocast``. On CUDA, autocast runs cuDNN's LSTM/GRU in float16
whatever dtype it was given (PyTorch's cuDNN RNN autocast wrapper casts to half), so every CUDA
autocast run scales its loss with a ``GradScaler`` against gradient underflow; on CPU only
float16 needs one (bfloat16 has float32's exponent range).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from charrnn.errors import CharrnnError
from charrnn.runtime import kernels

DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
CHOICES = ("auto", *DTYPES)


@dataclass(frozen=True)
class Precision:
    device_type: str
    dtype: torch.dtype | None
    chosen_by_auto: bool = False

    @property
    def name(self) -> str:
        return next(k for k, v in DTYPES.items() if v == self.dtype)

    def describe(self) -> str:
        return f"{self.name} (--precision auto)" if self.chosen_by_auto else self.name

    @property
    def scales_loss(self) -> bool:
        return self.dtype is not None and (self.device_type == "cuda" or self.dtype == torch.float16)

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def validation_autocast(self) -> contextlib.AbstractContextManager[None]:
        """Validation in the training dtype only where ``auto`` picked bfloat16 (oneDNN's LSTM on
        an AMX CPU): there it scored tinyshakespeare's validation split 5x faster (0.92 s against
        4.8 s for the default preset) and within 0.00001 bpc of float32. Elsewhere validation
        stays float32 (unmeasured for other cells, slower without AMX; on CUDA autocast would
        run cuDNN's RNN in float16)."""
        if self.chosen_by_auto and self.device_type == "cpu" and self.dtype == torch.bfloat16:
            return self.autocast()
        return contextlib.nullcontext()

    def scaler(self) -> torch.amp.GradScaler:
        """A pass-through when the loss needs no scaling (its step, unscale and update do nothing more)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.scales_loss)


def cpu_computes(dtype: torch.dtype) -> bool:
    """Whether this CPU has the instructions oneDNN needs for its LSTM/GRU in ``dtype``.

    Without them the fused RNN kernel cannot be built at all (measured on an AVX2 CPU: oneDNN
    "could not create a primitive descriptor" for bfloat16 and float16 alike).
    """
    features = {torch.bfloat16: ("avx512_bf16", "amx_tile"), torch.float16: ("amx_fp16",)}[dtype]
    return any(kernels.cpu_supports(feature) for feature in features)


def cpu_has_amx() -> bool:
    """AMX tiles, and oneDNN allowed to use them: unlike AVX-512-BF16 alone, they make bfloat16
    pay. ``ONEDNN_MAX_CPU_ISA`` (or the older ``DNNL_MAX_CPU_ISA``) set below AMX, as used to
    measure the AVX-512-BF16-only speed, counts as no AMX."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    if cap not in ("ALL", "DEFAULT") and "AMX" not in cap:
        return False
    return torch.backends.mkldnn.is_available() and kernels.cpu_supports("amx_tile")


def auto_dtype(device: torch.device, model: str) -> torch.dtype | None:
    """``--precision auto``: bfloat16 for the fused LSTM on a CPU with AMX, float32 otherwise.

    Measured on a 2-core Xeon with AMX (train step, oneDNN's LSTM): bfloat16 ran 2.2-2.8x the
    float32 speed for 2x512 and 1.3-1.4x for 2x128, and 300 steps of the default preset on
    tinyshakespeare reached the same val bpc (2.187 against 2.192). The same CPU limited to
    AVX-512-BF16 (no AMX) ran it at 0.66x; the GRU's layers ran at 0.8-0.94x (hidden 128) to
    1.43x (512), its bfloat16 quality unmeasured; on an H100 autocast ran 0.62-1.05x cuDNN's
    float32. Those stay float32 unless asked.
    """
    if device.type == "cpu" and model == "lstm" and cpu_has_amx():
        return torch.bfloat16
    return None


def dtype_of(name: str) -> torch.dtype | None:
    """The autocast dtype a ``--precision`` name stands for (None: float32 throughout)."""
    if name not in DTYPES:
        raise CharrnnError(f"unknown precision {name!r}; choose {', '.join(CHOICES)}")
    return DTYPES[name]


def resolve(name: str, device: torch.device, model: str = "lstm") -> Precision:
    """``--precision``: what ``auto`` picks for this device and cell, or the dtype asked for,
    refused when the device cannot compute in it."""
    if name == "auto":
        return Precision(device.type, auto_dtype(device, model), chosen_by_auto=True)
    dtype = dtype_of(name)
    if dtype is not None:
        if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise CharrnnError("--precision bfloat16: this GPU has no bfloat16 support; use float16")
        if device.type == "cpu" and not cpu_computes(dtype):
            need = "AVX-512-BF16 or AMX" if dtype == torch.bfloat16 else "AMX-FP16"
            raise CharrnnError(
                f"--precision {name}: this CPU lacks {need}, which the fused LSTM needs for it; use float32"
            )
        if not torch.amp.is_autocast_available(device.type):
            raise CharrnnError(f"--precision {name}: autocast is not available on {device.type}")
    return Precision(device.type, dtype)


# Sampling: the dtype of the weights the sampler's step reads (its state and gate arithmetic
# stay float32). At batch 1 a step reads every weight once per token, so fewer bytes per weight
# is what can speed it up, where the CPU multiplies them at full speed: ``auto`` times the
# candidates on this machine (charrnn.sampling.precision) instead of guessing from its flags.
STEP_PRECISIONS = ("auto", "float32", "bfloat16", "int8")
STEP_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.int8}
# The cells whose step multiplies by plain matrices; peephole and cifg run their layers' own
# step functions, in float32.
_REDUCED_CELLS = ("lstm", "gru", "rnn")


def step_unavailable(name: str, model: str, device: torch.device | None = None) -> str | None:
    """Why the sampler cannot step a ``model`` cell in ``name`` (float32, bfloat16, int8) here,
    or None where it can: what ``--precision`` refuses and ``auto`` leaves out."""
    if name not in STEP_DTYPES:
        return f"--precision must be one of {', '.join(STEP_PRECISIONS)} (got {name!r})"
    if name == "float32":
        return None
    if model not in _REDUCED_CELLS:
        return f"--precision {name} samples lstm, gru and rnn models; a {model} model samples in float32"
    if device is not None and device.type != "cpu":
        return f"--precision {name} samples on a CPU; on {device.type} the sampler steps in float32"
    if name == "bfloat16" and not (kernels.has_packed_bfloat16() and cpu_computes(torch.bfloat16)):
        return "--precision bfloat16: sampling in it needs a CPU with AVX-512-BF16 or AMX and PyTorch with oneDNN"
    if name == "int8" and not kernels.has_int8_product():
        return "--precision int8: this PyTorch has no fbgemm (x86) quantized engine"
    return None


def step_dtype(name: str, model: str) -> torch.dtype:
    """The dtype of the sampler's matrices for ``--precision name`` (not ``auto``, which
    ``charrnn.sampling.precision`` resolves by measurement first), refused where unavailable."""
    why = step_unavailable(name, model)
    if why is not None:
        raise CharrnnError(f"{why}; use float32" if name in STEP_DTYPES else why)
    return STEP_DTYPES[name]
