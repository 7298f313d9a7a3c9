"""From corpus files to token ids on disk, and from ids to TBPTT batches.

The ids are cached under a hash of the corpus bytes and vocabulary settings, next to the run,
so a second run on the same text skips reading and encoding, and changed text is never served
stale ids. Batches are views into the (memory-mappable) id array: nothing is copied per epoch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charrnn import corpus
from charrnn.errors import CharrnnError
from charrnn.vocab import CharVocab, Vocab, from_state

CACHE_VERSION = 1


@dataclass
class Prepared:
    """A corpus ready for training: its vocabulary and the train/validation id arrays."""

    vocab: Vocab
    train: np.ndarray
    val: np.ndarray
    key: str
    names: list[str]


def _split_point(n: int, val_frac: float) -> int:
    return n - int(round(n * val_frac))


def prepare(paths: list[str], cache_dir: Path | None, val_frac: float) -> Prepared:
    """Read, validate, encode and split a corpus, re-using a cached encoding when the bytes match."""
    sources = corpus.read_sources(paths)
    names = [s.name for s in sources]
    key = corpus.fingerprint(sources)[:24] + f"-char-v{CACHE_VERSION}"
    if cache_dir is not None:
        cached = _load_cache(cache_dir, key)
        if cached is not None:
            vocab, ids = cached
            return _split(vocab, ids, key, names, val_frac)
    text = corpus.read_text(sources)
    vocab = CharVocab.build(text)
    ids = vocab.encode(text)
    del text
    if cache_dir is not None:
        _save_cache(cache_dir, key, vocab, ids)
    return _split(vocab, ids, key, names, val_frac)


def _split(vocab: Vocab, ids: np.ndarray, key: str, names: list[str], val_frac: float) -> Prepared:
    cut = _split_point(len(ids), val_frac)
    return Prepared(vocab=vocab, train=ids[:cut], val=ids[cut:], key=key, names=names)


def _load_cache(cache_dir: Path, key: str) -> tuple[Vocab, np.ndarray] | None:
    meta_path, ids_path = cache_dir / f"{key}.json", cache_dir / f"{key}.npy"
    try:
        meta = json.loads(meta_path.read_text())
        ids = np.load(ids_path, mmap_mode="r")
        vocab = from_state(meta["vocab"])
    except (OSError, ValueError, KeyError, CharrnnError):
        return None
    if meta.get("tokens") != len(ids):
        return None
    return vocab, ids


def _save_cache(cache_dir: Path, key: str, vocab: Vocab, ids: np.ndarray) -> None:
    """Write the ids then the metadata, each atomically; the metadata marks the pair complete."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f".{key}.npy.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            np.save(f, ids)
        os.replace(tmp, cache_dir / f"{key}.npy")
        meta = {"vocab": vocab.to_state(), "tokens": int(len(ids))}
        tmp = cache_dir / f".{key}.json.tmp{os.getpid()}"
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, cache_dir / f"{key}.json")
    except OSError as e:
        raise CharrnnError(f"cannot write the corpus cache in {cache_dir} ({e.strerror})") from None


class Batches:
    """The training ids cut into ``batch_size`` parallel streams, read ``seq_len`` at a time.

    Window k of an epoch is columns ``[k*seq_len, (k+1)*seq_len)`` of every stream, so window
    k+1 continues exactly where window k stopped in each row: the hidden state carried from
    one window to the next is the state of the text that really came before.
    """

    def __init__(self, ids: np.ndarray, batch_size: int, seq_len: int) -> None:
        per_stream = (len(ids) - 1) // batch_size
        if per_stream < seq_len:
            raise CharrnnError(
                f"training text too short: {len(ids)} tokens for {batch_size} streams of "
                f"{seq_len} (+1); use a smaller --batch-size or --seq-len"
            )
        used = batch_size * per_stream
        self.inputs = ids[:used].reshape(batch_size, per_stream)
        self.targets = ids[1 : used + 1].reshape(batch_size, per_stream)
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.windows = per_stream // seq_len

    @staticmethod
    def fit_batch_size(n_tokens: int, batch_size: int, seq_len: int) -> int:
        """The largest batch size up to ``batch_size`` that leaves at least one full window."""
        if n_tokens - 1 < seq_len:
            raise CharrnnError(
                f"training text too short: {n_tokens} tokens, one training window needs "
                f"{seq_len + 1}; give more text or a smaller --seq-len"
            )
        return max(1, min(batch_size, (n_tokens - 1) // seq_len))

    def window(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = k * self.seq_len, (k + 1) * self.seq_len
        return self.inputs[:, a:b], self.targets[:, a:b]


def val_streams(ids: np.ndarray, streams: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split every prediction of a text over ``streams`` contiguous rows plus a tail.

    Returns (inputs, targets) of shape (streams, L) and the leftover (tail_inputs, tail_targets)
    that continue the last row, so together they cover all ``len(ids) - 1`` predictions once.
    """
    n = len(ids) - 1
    streams = max(1, min(streams, n))
    per = n // streams
    used = streams * per
    inputs = ids[:used].reshape(streams, per)
    targets = ids[1 : used + 1].reshape(streams, per)
    return inputs, targets, ids[used:n], ids[used + 1 : n + 1]
