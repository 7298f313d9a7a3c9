"""Where and on what charrnn computes: the device a run asks for, and the processor's name."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from charrnn.errors import CharrnnError


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


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text(errors="replace").splitlines() if info.is_file() else []
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    return name or platform.processor() or platform.machine() or "unknown"
