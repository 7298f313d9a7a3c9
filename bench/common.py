"""Shared pieces of the benchmarks: where the corpora are, and one JSON line per result."""

from __future__ import annotations

import json
import sys
from pathlib import Path

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def corpus(name: str) -> Path:
    path = CORPORA / name
    if not path.is_file():
        sys.exit(f"error: {path} not found (benchmarks read ../shared/corpora)")
    return path
