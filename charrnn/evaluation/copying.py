"""How much of a sample was copied from the training text: the longest span found there verbatim,
and the share of the sample inside spans of at least ``MIN_SPAN`` characters found there.

A small text gets memorised, and a user cannot tell a quote from new text by reading it. The
training text's suffix array (libdivsufsort, through pydivsufsort) answers "does this string
occur?" in a binary search, so the longest match at every position of a sample costs a few
searches each: a 2,000-character sample against a 10 MB text takes well under a second. The
index is built once per run directory, beside the prepared corpus in ``RUN_DIR/.cache``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from charrnn.data import cache
from charrnn.data.vocab import Vocab
from charrnn.runtime.files import write_atomic

# Spans this long or longer count as copied; a plain sample warns past WARN_SPAN.
MIN_SPAN = 50
WARN_SPAN = 200
# Training texts above this many bytes are not indexed: the index takes 5 bytes on disk per byte of
# text, and memorising is a small text's problem.
MAX_INDEXED_BYTES = 32 << 20
_DECODE_SLICE = 1 << 20


@dataclass(frozen=True)
class Copying:
    """What one sample shares with the training text, in characters."""

    longest: int
    covered: float  # the fraction of the sample's characters inside spans of MIN_SPAN or more

    def as_dict(self) -> dict[str, Any]:
        return {"longest_copied": self.longest, "copied_fraction": round(self.covered, 4)}


class TextIndex:
    """The training text's UTF-8 bytes and their suffix array."""

    def __init__(self, text: bytes, suffixes: np.ndarray) -> None:
        self.text = text
        self.suffixes = suffixes  # writable: libdivsufsort's ctypes binding refuses read-only arrays

    @classmethod
    def build(cls, text: bytes) -> TextIndex:
        from pydivsufsort import divsufsort

        return cls(text, divsufsort(text) if text else np.zeros(0, np.int32))

    def occurs(self, pattern: bytes) -> bool:
        from pydivsufsort import sa_search

        if not len(self.text):
            return False
        count, _ = sa_search(self.text, self.suffixes, pattern)
        return count > 0

    def match_lengths(self, data: bytes, starts: list[int]) -> list[int]:
        """The longest prefix of ``data[s:]`` found in the text, in bytes, for each start s.

        A match at s less its first k bytes is a match at s + k, so each search starts from the
        last length less the step and gallops up, then bisects: a few searches per position.
        """
        lengths, known, last = [], 0, 0
        for s in starts:
            low = max(known - (s - last), 0)  # data[s : s + low] occurs
            step = 1
            high = low + step
            while s + high <= len(data) and self.occurs(data[s : s + high]):
                low, step = high, step * 2
                high = low + step
            high = min(high, len(data) - s + 1)  # data[s : s + high] does not occur, or runs past the end
            while high - low > 1:
                mid = (low + high) // 2
                low, high = (mid, high) if self.occurs(data[s : s + mid]) else (low, mid)
            lengths.append(low)
            known, last = low, s
        return lengths

    def copying(self, sample: str) -> Copying:
        """The longest span of ``sample`` found verbatim, and the share inside spans of MIN_SPAN+."""
        if not sample:
            return Copying(0, 0.0)
        data = sample.encode("utf-8")
        sizes = [len(c.encode("utf-8")) for c in sample]
        bounds = np.concatenate([[0], np.cumsum(sizes)])  # each character's first byte, then the end
        lengths = np.array(self.match_lengths(data, bounds[:-1].tolist()))
        # The characters wholly inside each character's match.
        spans = np.searchsorted(bounds, bounds[:-1] + lengths, side="right") - 1 - np.arange(len(sample))
        edges = np.zeros(len(sample) + 1, np.int64)
        for i in np.flatnonzero(spans >= MIN_SPAN):
            edges[i] += 1
            edges[i + spans[i]] -= 1
        inside = int((np.cumsum(edges)[:-1] > 0).sum())
        return Copying(int(spans.max()), inside / len(sample))


def training_bytes(ids: np.ndarray, vocab: Vocab) -> bytes:
    """The text a run trained on, as UTF-8 bytes, from its token ids (any vocabulary)."""
    pieces = vocab.token_bytes()
    width = max(1, max(len(p) for p in pieces))
    table = np.zeros((len(pieces), width), np.uint8)
    for i, p in enumerate(pieces):
        table[i, : len(p)] = np.frombuffer(p, np.uint8)
    sizes = np.array([len(p) for p in pieces])
    parts = []
    for a in range(0, len(ids), _DECODE_SLICE):
        chunk = np.asarray(ids[a : a + _DECODE_SLICE], dtype=np.int64)
        keep = np.arange(width)[None, :] < sizes[chunk][:, None]
        parts.append(table[chunk][keep])
    return np.concatenate(parts).tobytes() if parts else b""


def run_index(ckpt: dict[str, Any]) -> TextIndex | None:
    """The training text's index for the run a checkpoint belongs to, built on first use and kept
    in its corpus cache; None where the run's prepared corpus is not on disk (the bundled base, a
    checkpoint copied elsewhere) or the text is too large to index."""
    corpus = ckpt.get("corpus") or {}
    key = corpus.get("key")
    if not key:
        return None
    cache_dir = Path(ckpt["path"]).parent / ".cache"
    text_path, index_path = cache_dir / f"{key}.text", cache_dir / f"{key}.suffixes.npy"
    try:
        if text_path.is_file() and index_path.is_file():
            text = text_path.read_bytes()
            suffixes = np.load(index_path, mmap_mode="c")  # copy-on-write: writable, never written back
            if len(suffixes) == len(text):
                return TextIndex(text, suffixes)
        found = cache.load(cache_dir, key)
        if found is None:
            return None
        vocab, ids, n_train, _ = found
        if n_train > MAX_INDEXED_BYTES:  # every token is at least a byte
            return None
        text = training_bytes(ids[:n_train], vocab)
        if len(text) > MAX_INDEXED_BYTES:
            return None
        index = TextIndex.build(text)
        write_atomic(text_path, text, "copy index")
        write_atomic(index_path, lambda f: np.save(f, index.suffixes), "copy index")
        return index
    except OSError:
        return None
