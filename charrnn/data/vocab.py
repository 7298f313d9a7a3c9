"""Vocabularies: the map between text and token ids, stored inside every checkpoint.

A vocabulary is anything with ``kind``, ``size``, ``encode``, ``decode``, ``missing``,
``token_bytes``, ``count_chars`` and ``to_state``; ``from_state`` rebuilds the right kind from a
checkpoint. Two kinds exist: one id per character, and SentencePiece subwords (BPE or unigram).
Every token knows its UTF-8 bytes, so generated text can be streamed and characters counted
(for bits per character) the same way for both.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from charrnn.errors import CharrnnError


class Vocab(Protocol):
    kind: str

    @property
    def size(self) -> int: ...

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def missing(self, text: str) -> list[str]: ...

    def token_bytes(self) -> list[bytes]: ...

    def count_chars(self, ids: np.ndarray) -> int: ...

    def to_state(self) -> dict[str, Any]: ...


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
    """One id per distinct character, ids in code-point order so the same text always maps alike
    (a fine-tune onto new characters appends them after, keeping the old ids: charrnn.training.finetune)."""

    kind = "char"

    def __init__(self, chars: str) -> None:
        self.chars = chars
        self._points = _codepoints(chars)
        if len(self._points) == 0 or len(np.unique(self._points)) != len(self._points):
            raise CharrnnError("character vocabulary must be non-empty and without repeats")
        self._table: np.ndarray | None = None

    @classmethod
    def build(cls, text: str) -> CharVocab:
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
        if self._table is None:
            # One gather per character through a code-point table beats a binary search by ~5x,
            # which is most of the time of preparing a large corpus.
            self._table = np.full(int(self._points.max()) + 1, -1, dtype=np.int32)
            self._table[self._points] = np.arange(len(self._points), dtype=np.int32)
        points = _codepoints(text)
        if len(points) and int(points.max()) >= len(self._table):
            ids = np.full(len(points), -1, dtype=np.int32)
        else:
            ids = self._table[points]
        if len(ids) and int(ids.min()) < 0:
            raise CharrnnError(f"text has characters outside the vocabulary: {describe_chars(self.missing(text))}")
        return ids.astype(id_dtype(self.size))

    def decode(self, ids: Sequence[int]) -> str:
        points = self._points[np.asarray(ids, dtype=np.int64)]
        return points.astype("<u4").tobytes().decode("utf-32-le", "surrogatepass")

    def token_bytes(self) -> list[bytes]:
        return [c.encode("utf-8", "surrogatepass") for c in self.chars]

    def count_chars(self, ids: np.ndarray) -> int:
        return len(ids)

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "chars": self.chars}


def describe_chars(chars: Sequence[str], limit: int = 20) -> str:
    """Characters shown unambiguously (repr, so a tab or NBSP is visible) in one line."""
    shown = " ".join(repr(c) for c in chars[:limit])
    more = f" and {len(chars) - limit} more" if len(chars) > limit else ""
    return shown + more


SUBWORD_KINDS = ("bpe", "unigram")
# SentencePiece writes a space as U+2581 inside pieces, so that character cannot round-trip.
SPACE_MARK = "\u2581"


def _chars_in(piece: bytes) -> int:
    """Characters a piece contributes: its bytes that start a UTF-8 sequence."""
    return sum(1 for b in piece if b & 0xC0 != 0x80)


class SubwordVocab:
    """A SentencePiece model (BPE or unigram) trained so that every text round-trips exactly.

    Identity normalisation, no dummy prefix and kept whitespace preserve indentation and blank
    lines; a newline is a piece of its own; byte fallback represents any character the pieces
    lack. The serialised model travels in the checkpoint, so a checkpoint is self-contained.
    """

    def __init__(self, kind: str, model: bytes) -> None:
        import sentencepiece as spm

        if kind not in SUBWORD_KINDS:
            raise CharrnnError(f"unknown subword vocabulary kind {kind!r}")
        self.kind = kind
        self.model = bytes(model)
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=self.model)
        except Exception as e:  # noqa: BLE001 - sentencepiece raises bare RuntimeError/OSError on bad protos
            raise CharrnnError(f"the checkpoint's SentencePiece model is corrupt ({e})") from None
        self._bytes = [self._piece_bytes(i) for i in range(self._sp.get_piece_size())]
        self._chars = np.array([_chars_in(b) for b in self._bytes], dtype=np.int64)

    def _piece_bytes(self, i: int) -> bytes:
        sp = self._sp
        if sp.is_byte(i):
            return bytes([int(sp.id_to_piece(i)[3:5], 16)])
        if sp.is_control(i):
            return b""
        if sp.is_unknown(i):
            return "\ufffd".encode()
        return sp.id_to_piece(i).replace(SPACE_MARK, " ").encode("utf-8")

    @classmethod
    def train(cls, kind: str, size: int, lines: Iterator[str], distinct_chars: int) -> SubwordVocab:
        """Train on ``lines`` (the training split only); SentencePiece samples at most 1M of them.

        Full character coverage when the vocabulary has room for every character beside the 256
        byte pieces; otherwise the rarest characters fall back to bytes.
        """
        import sentencepiece as spm

        if size <= 260:
            raise CharrnnError(
                f"--vocab-size {size} is too small for a subword vocabulary (256 byte pieces come first); "
                "use at least 300"
            )
        buffer = io.BytesIO()
        coverage = 1.0 if distinct_chars + 260 < size else 0.9995
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=lines,
                model_writer=buffer,
                model_type=kind,
                vocab_size=size,
                character_coverage=coverage,
                byte_fallback=True,
                normalization_rule_name="identity",
                add_dummy_prefix=False,
                remove_extra_whitespaces=False,
                allow_whitespace_only_pieces=True,
                user_defined_symbols=["\n"],
                bos_id=-1,
                eos_id=-1,
                input_sentence_size=1_000_000,
                shuffle_input_sentence=True,
                max_sentence_length=1 << 16,
                num_threads=max(1, os.cpu_count() or 1),
                minloglevel=2,
            )
        except RuntimeError as e:
            # SentencePiece prefixes its messages with the C++ source location; keep the sentence.
            message = (str(e).strip().splitlines() or [type(e).__name__])[-1].split("] ")[-1]
            if "Vocabulary size" in message:
                raise CharrnnError(f"--vocab-size {size} does not suit this corpus: {message}") from None
            raise CharrnnError(f"SentencePiece training failed: {message}") from None
        return cls(kind, buffer.getvalue())

    @property
    def size(self) -> int:
        return len(self._bytes)

    def missing(self, text: str) -> list[str]:
        """Byte fallback makes every character representable except SentencePiece's space mark."""
        return [SPACE_MARK] if SPACE_MARK in text else []

    def encode(self, text: str) -> np.ndarray:
        if SPACE_MARK in text:
            raise CharrnnError(f"text holds {SPACE_MARK!r} (U+2581), which SentencePiece reserves for spaces")
        return np.array(self._sp.encode(text), dtype=id_dtype(self.size))

    def decode(self, ids: Sequence[int]) -> str:
        return b"".join(self._bytes[i] for i in np.asarray(ids, dtype=np.int64).tolist()).decode("utf-8", "replace")

    def token_bytes(self) -> list[bytes]:
        return list(self._bytes)

    def count_chars(self, ids: np.ndarray) -> int:
        total = 0
        for a in range(0, len(ids), 1 << 22):
            total += int(self._chars[np.asarray(ids[a : a + (1 << 22)], dtype=np.int64)].sum())
        return total

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model}


def from_state(state: dict[str, Any]) -> Vocab:
    """Rebuild the vocabulary saved in a checkpoint."""
    kind = state.get("kind") if isinstance(state, dict) else None
    if kind == "char" and isinstance(state.get("chars"), str):
        return CharVocab(state["chars"])
    if kind in SUBWORD_KINDS and isinstance(state.get("model"), bytes):
        return SubwordVocab(kind, state["model"])
    raise CharrnnError(f"unknown vocabulary kind {kind!r} in checkpoint")


def encode_prime(vocab: Vocab, prime: str, unknown: str = "error", what: str = "prime text") -> list[int]:
    """Prime text (or any ``what`` a user gives) as ids; characters outside the vocabulary are
    an error or skipped."""
    missing = vocab.missing(prime)
    if missing:
        if unknown != "skip":
            raise CharrnnError(
                f"{what} has characters the vocabulary lacks: {describe_chars(missing)} "
                "(use --unknown skip to drop them)"
            )
        absent = set(missing)  # once: a set per character made a 30,000-character prompt take 30 s
        prime = "".join(c for c in prime if c not in absent)
    ids: list[int] = vocab.encode(prime).tolist()
    return ids


def extended_vocab(vocab: Vocab, chunks: Iterable[str]) -> Vocab:
    """``vocab`` with the characters of ``chunks`` it lacks appended in code-point order."""
    if not isinstance(vocab, CharVocab):
        return vocab
    seen: set[str] = set()
    for text in chunks:
        seen.update(vocab.missing(text))
    if not seen:
        return vocab
    return CharVocab(vocab.chars + "".join(sorted(seen)))


def added_chars(old: dict[str, Any], new: Vocab) -> str | None:
    """The characters ``new`` appends to the vocabulary saved as ``old``; None if it is not
    that vocabulary grown (then the checkpoint simply does not fit)."""
    if old.get("kind") != "char" or not isinstance(new, CharVocab):
        return None
    chars = old.get("chars", "")
    if len(new.chars) <= len(chars) or not new.chars.startswith(chars):
        return None
    return new.chars[len(chars) :]
