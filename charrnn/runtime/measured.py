"""What charrnn measured about this machine, remembered between runs: one small JSON file per
kind of measurement under ``$XDG_CACHE_HOME/charrnn`` (``~/.cache`` by default).

Defaults chosen for speed are chosen by timing them here (a 2-core Xeon with AMX sampled slower
in bfloat16 than in float32 at batch 1, against what its flags promise), and a timing is only
worth taking once per machine, torch and thread count: the key of everything kept here starts
with ``machine()``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from charrnn.errors import CharrnnError
from charrnn.runtime.device import cpu_model


def cache_path(name: str) -> Path:
    """``$XDG_CACHE_HOME/charrnn/NAME.json`` (``~/.cache`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path(os.path.expanduser("~")) / ".cache"
    return Path(base) / "charrnn" / f"{name}.json"


def machine() -> str:
    """What a speed depends on besides the model: the processor (and whether oneDNN may use its
    AMX tiles), torch and its threads."""
    from charrnn.runtime.precision import cpu_has_amx

    amx = " amx" if cpu_has_amx() else ""
    return f"{cpu_model()}{amx}|torch {torch.__version__}|threads {torch.get_num_threads()}"


def read(path: Path) -> dict[str, object]:
    """The measurements kept at ``path``; none where it is missing or unreadable (then they are
    only measured again)."""
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def remember(path: Path, found: dict[str, object]) -> None:
    """Keep ``found`` at ``path`` beside what other runs kept there since this one read it,
    written atomically; a read-only or full home only costs the next run the measuring again."""
    from charrnn.runtime.files import write_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({**read(path), **found}, indent=0).encode(), "measurement cache")
    except (OSError, CharrnnError):
        pass
