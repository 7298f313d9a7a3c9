"""The prepared corpus on disk: token ids, vocabulary and metadata in one folder per cache key.

A cache is one unit: built in a temp folder (``.KEY.tmpPID``), every file and the folder
fsynced, then renamed to ``KEY`` as a whole and the rename made durable. A crash or power cut at
any instant leaves the previous state, the complete new cache, or a temp folder that the next
run sweeps (``files.sweep``): never a mix of two builds that loads. The ids' size is checked
against the metadata as well. Caches in the flat layout of charrnn 2.0.0 and earlier (files
``KEY.ids``, ``KEY.json``, ``KEY.vocab`` side by side) are never read and are removed
(``sweep_flat``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from charrnn.data.vocab import Vocab, from_state, id_dtype
from charrnn.errors import CharrnnError
from charrnn.runtime.files import fsync_dir, temp_path, write_error

IDS, META, VOCAB = "ids", "meta.json", "vocab"
# A cache's files in the flat layout of 2.0.0 and earlier (0.1 kept its ids in KEY.npy). The copy
# index's KEY.text and KEY.suffixes.npy are flat too, and current: the pattern does not match them.
FLAT = re.compile(r"[0-9a-f]{24}-[a-z]+(?:-[0-9a-f]{12})?-v[0-9]+\.(?:ids|npy|json|vocab)")


def folder(cache_dir: Path, key: str) -> Path:
    return cache_dir / key


def start(cache_dir: Path, key: str) -> Path:
    """A fresh temp folder to build the cache under ``key`` in; ``commit`` renames it into place."""
    building = temp_path(folder(cache_dir, key))
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        discard(building)  # this process's own, from a build that failed earlier
        building.mkdir()
    except OSError as e:
        raise write_error(e, building, "the corpus cache", "no partial cache is left") from None
    return building


def commit(cache_dir: Path, key: str, building: Path, meta: dict[str, Any]) -> None:
    """Add the vocabulary and metadata to the built ids, make them durable, rename the folder."""
    final = folder(cache_dir, key)
    try:
        state = dict(meta["vocab"])
        if "model" in state:
            _write_synced(building / VOCAB, state.pop("model"))
            state["model_file"] = VOCAB
        _write_synced(building / META, json.dumps({**meta, "vocab": state}).encode())
        fsync_dir(building)
        discard(final)  # a cache under this key that did not load (else it would not be rebuilt)
        os.replace(building, final)
        fsync_dir(cache_dir)
    except BaseException as e:
        discard(building)
        if isinstance(e, OSError):
            raise write_error(e, final, "the corpus cache", "no partial cache is left") from None
        raise


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def load(cache_dir: Path, key: str) -> tuple[Vocab, np.ndarray, int, dict[str, Any]] | None:
    """The vocabulary, all ids (memory-mapped: training ids first), the training ids' count and the
    metadata of the cache under ``key``; None if it is missing, incomplete or unreadable."""
    where = folder(cache_dir, key)
    try:
        meta = json.loads((where / META).read_text())
        state = dict(meta["vocab"])
        if "model_file" in state:
            state.pop("model_file")
            state["model"] = (where / VOCAB).read_bytes()
        vocab = from_state(state)
        n_train, n_val = int(meta["train_tokens"]), int(meta["val_tokens"])
        dtype = id_dtype(vocab.size)
        if (where / IDS).stat().st_size != (n_train + n_val) * dtype.itemsize:
            return None
        if n_train + n_val == 0:
            ids: np.ndarray = np.zeros(0, dtype)
        else:
            ids = np.memmap(where / IDS, dtype=dtype, mode="r", shape=(n_train + n_val,))
        return vocab, ids, n_train, meta
    except (OSError, ValueError, KeyError, TypeError, CharrnnError):
        return None


def sweep_flat(cache_dir: Path) -> list[Path]:
    """Remove the files of caches in the flat layout: no version since reads them (a run rebuilds
    its cache as a folder), so they would otherwise take the corpus's size on disk for good. Their
    temp files carry a process id and are left to ``files.sweep``, which keeps a live one's."""
    try:
        found = [p for p in cache_dir.iterdir() if FLAT.fullmatch(p.name) and p.is_file() and not p.is_symlink()]
    except OSError:  # no cache folder yet
        return []
    removed = []
    for path in found:
        try:
            path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


def remove_if_empty(cache_dir: Path) -> None:
    """Remove ``cache_dir`` if nothing is in it: a preparation stopped by a signal or an error
    would otherwise leave the empty folder it created behind."""
    try:
        cache_dir.rmdir()
    except OSError:  # not empty, already gone, or not ours to remove
        pass


def discard(path: Path) -> None:
    """Remove a cache folder (or file), if it is there."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass
