"""The prepared corpus on disk: token ids, vocabulary and metadata under one cache key.

The metadata is written last and marks a set complete; a set that is missing a file, or whose ids
do not have the size the metadata says, is not found and is built again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from charrnn.data.vocab import Vocab, from_state, id_dtype
from charrnn.errors import CharrnnError
from charrnn.runtime.files import write_error


def paths(cache_dir: Path, key: str) -> tuple[Path, Path, Path]:
    return cache_dir / f"{key}.ids", cache_dir / f"{key}.json", cache_dir / f"{key}.vocab"


def commit(cache_dir: Path, key: str, ids_tmp: Path, meta: dict[str, Any]) -> None:
    """Rename the ids into place, then write the metadata; the metadata marks the set complete."""
    ids_path, meta_path, vocab_path = paths(cache_dir, key)
    try:
        os.replace(ids_tmp, ids_path)
        state = dict(meta["vocab"])
        if "model" in state:
            tmp = vocab_path.with_name(f".{vocab_path.name}.tmp{os.getpid()}")
            tmp.write_bytes(state.pop("model"))
            os.replace(tmp, vocab_path)
            state["model_file"] = vocab_path.name
        tmp = meta_path.with_name(f".{meta_path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps({**meta, "vocab": state}))
        os.replace(tmp, meta_path)
    except OSError as e:
        for tmp in cache_dir.glob(f".{key}.*.tmp{os.getpid()}"):
            discard(tmp)
        raise write_error(e, cache_dir / key, "the corpus cache", "no partial cache is left") from None


def load(cache_dir: Path, key: str) -> tuple[Vocab, np.ndarray, int, dict[str, Any]] | None:
    """The vocabulary, all ids (memory-mapped: training ids first), the training ids' count and the
    metadata of the cache under ``key``; None if it is missing, incomplete or unreadable."""
    ids_path, meta_path, vocab_path = paths(cache_dir, key)
    try:
        meta = json.loads(meta_path.read_text())
        state = dict(meta["vocab"])
        if "model_file" in state:
            state.pop("model_file")
            state["model"] = vocab_path.read_bytes()
        vocab = from_state(state)
        n_train, n_val = int(meta["train_tokens"]), int(meta["val_tokens"])
        dtype = id_dtype(vocab.size)
        if ids_path.stat().st_size != (n_train + n_val) * dtype.itemsize:
            return None
        if n_train + n_val == 0:
            ids: np.ndarray = np.zeros(0, dtype)
        else:
            ids = np.memmap(ids_path, dtype=dtype, mode="r", shape=(n_train + n_val,))
        return vocab, ids, n_train, meta
    except (OSError, ValueError, KeyError, TypeError, CharrnnError):
        return None


def discard(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
