"""Vocabularies: the map between text and token ids, stored inside every checkpoint.

A vocabulary is anything with ``kind``, ``size``, ``encode``, ``decode``, ``missing`` and
``to_state``; ``from_state`` rebuilds the right kind from a checkpoint, so a new kind (subwords)
only has to add a class and a line in ``from_state``.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from charrnn.errors import CharrnnError


class Vocab(Protocol):
    kind: str

    @property
    def size(self) -> int: ...

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def missing(self, text: str) -> list[str]: ...

    def to_state(self) -> dict: ...


def id_dtype(size: int) -> np.dtype:
    """The smallest unsigned type that holds every id, so cached corpora stay compact."""
    if size <= 1 << 8:
        return np.dtype(np.uint8)
    if size <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


class CharVocab:
    """One id per distinct character, ids in code-point order so the same text always maps alike."""

    kind = "char"

    def __init__(self, chars: str) -> None:
        self.chars = chars
        self._points = _codepoints(chars)
        if len(self._points) == 0 or np.any(np.diff(self._points.astype(np.int64)) <= 0):
            raise CharrnnError("character vocabulary must be non-empty, sorted and without repeats")
        self._lookup = {c: i for i, c in enumerate(chars)}

    @classmethod
    def build(cls, text: str) -> "CharVocab":
        points = np.unique(_codepoints(text))
        return cls(points.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass"))

    @property
    def size(self) -> int:
        return len(self.chars)

    def missing(self, text: str) -> list[str]:
        """Characters of ``text`` the vocabulary lacks, sorted."""
        points = np.unique(_codepoints(text))
        absent = points[~np.isin(points, self._points)]
        return [chr(p) for p in absent.tolist()]

    def encode(self, text: str) -> np.ndarray:
        points = _codepoints(text)
        ids = np.searchsorted(self._points, points)
        ids_clipped = np.minimum(ids, len(self._points) - 1)
        if not np.array_equal(self._points[ids_clipped], points):
            raise CharrnnError(f"text has characters outside the vocabulary: {describe_chars(self.missing(text))}")
        return ids.astype(id_dtype(self.size))

    def decode(self, ids: Sequence[int]) -> str:
        points = self._points[np.asarray(ids, dtype=np.int64)]
        return points.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")

    def token_text(self, i: int) -> str:
        return self.chars[i]

    def to_state(self) -> dict:
        return {"kind": self.kind, "chars": self.chars}


def describe_chars(chars: Sequence[str], limit: int = 20) -> str:
    """Characters shown unambiguously (repr, so a tab or NBSP is visible) in one line."""
    shown = " ".join(repr(c) for c in chars[:limit])
    more = f" and {len(chars) - limit} more" if len(chars) > limit else ""
    return shown + more


def from_state(state: dict) -> Vocab:
    """Rebuild the vocabulary saved in a checkpoint."""
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind == "char" and isinstance(state.get("chars"), str):
        return CharVocab(state["chars"])
    raise CharrnnError(f"unknown vocabulary kind {kind!r} in checkpoint")
