"""From corpus files to token ids on disk (``batches`` cuts the ids into TBPTT batches).

Preparation streams the corpus in chunks: hash the files, scan them once (characters, their
count, validity), build or train the vocabulary, then encode chunk by chunk into a flat token
file that training memory-maps. Peak memory is a few chunks, whatever the corpus size. The
result is cached under a key of the corpus bytes and the vocabulary settings, so a second run
on the same text starts at once and changed text is never served stale ids.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, overload

import numpy as np

from charrnn.data import cache, corpus
from charrnn.data.vocab import (
    SPACE_MARK,
    SUBWORD_KINDS,
    CharVocab,
    SubwordVocab,
    Vocab,
    describe_chars,
    extended_vocab,
    id_dtype,
)
from charrnn.errors import CharrnnError
from charrnn.runtime.files import write_error

if TYPE_CHECKING:
    from charrnn.runtime.progress import PrepareProgress

CACHE_VERSION = 2
VOCAB_KINDS = ("char", *SUBWORD_KINDS)
DEFAULT_SUBWORD_SIZE = 1024
_CODEPOINTS = 0x110000
# Subword text is encoded in pieces cut after a newline (a piece of its own, so no token spans
# it): encoding piecewise then gives exactly the ids of encoding the whole text.
_PIECE_CHARS = 1 << 20


@dataclass(frozen=True)
class VocabSpec:
    """Which vocabulary to build: ``char``, or a SentencePiece ``bpe``/``unigram`` of ``size`` pieces."""

    kind: str = "char"
    size: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in VOCAB_KINDS:
            raise CharrnnError(f"--vocab must be one of {', '.join(VOCAB_KINDS)} (got {self.kind!r})")
        if self.kind == "char" and self.size is not None:
            raise CharrnnError("--vocab-size applies to --vocab bpe or unigram, not char")

    @property
    def pieces(self) -> int:
        return self.size or DEFAULT_SUBWORD_SIZE


@dataclass
class Prepared:
    """A corpus ready for training: its vocabulary, the train/validation ids and their sizes."""

    vocab: Vocab
    train: np.ndarray
    val: np.ndarray
    key: str
    names: list[str]
    train_chars: int
    val_chars: int
    # Encoded with a vocabulary the caller gave (--init-from) rather than one built from this
    # corpus: resuming the run must give it again to find the same prepared corpus.
    vocab_given: bool = False
    # Characters of Project Gutenberg header and licence left out, by file name.
    left_out: dict[str, int] = field(default_factory=dict)
    # Files inside the corpus directories left out as not text (not cached: found on each read).
    skipped: list[str] = field(default_factory=list)
    # The files and directories as given, which --resume reads again.
    paths: list[str] = field(default_factory=list)

    @property
    def chars_per_token(self) -> float:
        """Converts a loss per token into one per character (1.0 for a character vocabulary)."""
        return self.train_chars / max(1, len(self.train))


def split_point(n: int, val_frac: float) -> int:
    """Characters before the validation split: the last ``val_frac`` of the text is held out."""
    return n - int(round(n * val_frac))


def prepare(
    paths: list[str],
    cache_dir: Path | None,
    val_frac: float,
    spec: VocabSpec = VocabSpec(),
    vocab: Vocab | None = None,
    show_progress: bool = False,
    keep_gutenberg: bool = False,
) -> Prepared:
    """Read, validate, encode and split a corpus, re-using a cached encoding when the bytes match.

    With ``vocab`` given (fine-tuning), the corpus is encoded with it instead of a new one, and
    characters it cannot represent are an error that lists them. Project Gutenberg e-books lose
    their header and licence unless ``keep_gutenberg``.
    """
    from charrnn.runtime.progress import PrepareProgress

    skipped: list[str] = []
    created = cache_dir is not None and not cache_dir.exists()
    sources: list[corpus.Source] = []
    try:
        sources = corpus.open_sources(paths, cache_dir, skipped)
        names = [s.name for s in sources]
        total = sum(s.size for s in sources)
        with PrepareProgress(enabled=show_progress and total > 0) as bar:
            bar.phase("hashing", total)
            digest = corpus.fingerprint(sources, bar.advance)
            if vocab is not None:  # a fine-tune onto new characters grows a character vocabulary
                bar.phase("scanning for new characters", total)
                vocab = extended_vocab(vocab, _Reader(sources, bar, keep_gutenberg).chunks())
            key = _key(digest, spec, val_frac, vocab, keep_gutenberg)
            data = _cached(cache_dir, key, names) if cache_dir is not None else None
            if data is None:
                read = _Reader(sources, bar, keep_gutenberg)
                data = _build(read, names, total, key, cache_dir, val_frac, spec, vocab)
            data.vocab_given = vocab is not None
            data.skipped, data.paths = skipped, list(paths)
            return data
    finally:
        corpus.release(sources)
        if created and cache_dir is not None:  # a preparation stopped early leaves no empty folder
            cache.remove_if_empty(cache_dir)


def _key(digest: str, spec: VocabSpec, val_frac: float, vocab: Vocab | None, keep_gutenberg: bool) -> str:
    """The cache key: the corpus bytes' digest and every setting that changes the ids."""
    # Reading the whole file is what versions before the Gutenberg rule did: the same key,
    # so their runs resume and their caches are found.
    settings = json.dumps(
        [spec.kind, spec.size, val_frac, vocab.to_state() if vocab else None, *([] if keep_gutenberg else ["pg"])],
        default=_bytes_hash,
    )
    return f"{digest[:24]}-{spec.kind}-{hashlib.sha256(settings.encode()).hexdigest()[:12]}-v{CACHE_VERSION}"


def _bytes_hash(value: object) -> str:
    if isinstance(value, bytes):
        return hashlib.sha256(value).hexdigest()
    raise TypeError(type(value).__name__)


@dataclass
class _Reader:
    """The corpus text, read afresh for each pass (scan, vocabulary, encode) with the progress bar
    advanced by the bytes read; the passes agree on what was left out."""

    sources: list[corpus.Source]
    bar: PrepareProgress
    keep_gutenberg: bool
    left_out: dict[str, int] = field(default_factory=dict)

    def chunks(self) -> Iterator[str]:
        for text, used in corpus.iter_corpus(self.sources, self.keep_gutenberg, self.left_out):
            self.bar.advance(used)
            if text:
                yield text


def _scan(read: _Reader) -> tuple[int, np.ndarray]:
    """Characters in the corpus and how often each code point occurs; validates every file."""
    counts = np.zeros(_CODEPOINTS, dtype=np.int64)
    n = 0
    for text in read.chunks():
        n += len(text)
        points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        seen = np.bincount(points)
        counts[: len(seen)] += seen
    if all(chr(int(p)).isspace() for p in np.flatnonzero(counts)):
        raise CharrnnError(f"{corpus.describe(read.sources)}: corpus is empty")
    return n, counts


def _split_stream(chunks: Iterator[str], cut: int) -> Iterator[tuple[int, str]]:
    """(part, text): part 0 for the first ``cut`` characters (training), 1 after (validation)."""
    pos = 0
    for text in chunks:
        end = pos + len(text)
        if end <= cut:
            yield 0, text
        elif pos >= cut:
            yield 1, text
        else:
            yield 0, text[: cut - pos]
            yield 1, text[cut - pos :]
        pos = end


def _line_pieces(texts: Iterator[str]) -> Iterator[str]:
    """The same text re-cut into pieces that end just after a newline (or run very long)."""
    carry = ""
    for text in texts:
        buf = carry + text if carry else text
        cut = buf.rfind("\n")
        if cut == -1 and len(buf) < 16 * _PIECE_CHARS:
            carry = buf
            continue
        end = cut + 1 if cut != -1 else len(buf)
        a = 0
        while a < end:
            b = min(end, a + _PIECE_CHARS)
            if b < end:
                b = _boundary(buf, a, b)
            yield buf[a:b]
            a = b
        carry = buf[end:]
    if carry:
        yield carry


def _boundary(buf: str, a: int, b: int) -> int:
    """Where to end a piece in ``buf[a:b]``: after its last newline, else before a space that
    follows a word (SentencePiece splits there itself), else at ``b`` (one unbroken run)."""
    nl = buf.rfind("\n", a, b)
    if nl >= a:
        return nl + 1
    sp = buf.rfind(" ", a + 1, b)
    while sp > a and buf[sp - 1].isspace():
        sp = buf.rfind(" ", a + 1, sp)
    return sp if sp > a else b


def encode_text(vocab: Vocab, text: str) -> np.ndarray:
    """A text in memory encoded exactly as ``prepare`` encodes a corpus (subwords piece by piece).

    Unigram segmentation can break ties differently on a longer input, so ``eval`` must cut the
    text where preparation does to score the very ids the trainer validated on.
    """
    if isinstance(vocab, CharVocab):
        return vocab.encode(text)
    parts = [vocab.encode(piece) for piece in _line_pieces(iter([text]))]
    return np.concatenate(parts) if parts else np.zeros(0, id_dtype(vocab.size))


def _train_lines(read: _Reader, cut: int) -> Iterator[str]:
    """Lines of the training split only, the sentences SentencePiece learns from."""

    def train_texts() -> Iterator[str]:
        for part, text in _split_stream(read.chunks(), cut):
            if part:
                return
            yield text

    for piece in _line_pieces(train_texts()):
        for line in piece.split("\n"):
            if line:
                yield line


def _build(
    read: _Reader,
    names: list[str],
    total: int,
    key: str,
    cache_dir: Path | None,
    val_frac: float,
    spec: VocabSpec,
    vocab: Vocab | None,
) -> Prepared:
    bar = read.bar
    bar.phase("scanning", total)
    n_chars, counts = _scan(read)
    cut = split_point(n_chars, val_frac)
    present = np.flatnonzero(counts)
    chars = "".join(chr(int(p)) for p in present)
    if vocab is None:
        vocab = _new_vocab(read, spec, chars, cut, total)
    else:
        missing = vocab.missing(chars)
        if missing:  # only a subword vocabulary can get here (extended_vocab grew a character one)
            raise CharrnnError(
                f"--init-from: the corpus has characters the checkpoint's vocabulary lacks: {describe_chars(missing)} "
                "(a subword vocabulary is never extended: byte fallback spells every other character)"
            )
    bar.phase("encoding", total)
    if cache_dir is None:
        train, val = _encode(read, vocab, cut, None)
        return Prepared(vocab, train, val, key, names, cut, n_chars - cut, left_out=read.left_out)
    building = cache.start(cache_dir, key)
    try:
        with open(building / cache.IDS, "wb") as f:
            parts = _encode(read, vocab, cut, f)
    except BaseException as e:  # a full disk, a bad character, a signal: no half-built cache stays
        cache.discard(building)
        if isinstance(e, OSError):
            raise write_error(e, cache.folder(cache_dir, key), "the corpus cache", "no partial cache is left") from None
        raise
    meta = {
        "vocab": vocab.to_state(),
        "train_tokens": parts[0],
        "val_tokens": parts[1],
        "train_chars": cut,
        "val_chars": n_chars - cut,
        # By position in the file list, so a renamed file (or stdin) is noted under today's name.
        "left_out_at": {str(i): read.left_out[n] for i, n in enumerate(names) if n in read.left_out},
    }
    cache.commit(cache_dir, key, building, meta)
    cached = _cached(cache_dir, key, names)
    if cached is None:
        raise CharrnnError(f"the corpus cache just written in {cache_dir} does not read back (disk full?)")
    return cached


def _new_vocab(read: _Reader, spec: VocabSpec, chars: str, cut: int, total: int) -> Vocab:
    """A new run's vocabulary for the corpus's ``chars``: those characters, or SentencePiece's
    pieces trained on the training split's lines."""
    if spec.kind == "char":
        return CharVocab(chars)
    if SPACE_MARK in chars:
        raise CharrnnError(
            f"{corpus.describe(read.sources)}: holds {SPACE_MARK!r} (U+2581), which SentencePiece reserves "
            "for spaces; use --vocab char for this corpus"
        )
    read.bar.phase(f"training {spec.kind} vocabulary", total)
    return SubwordVocab.train(spec.kind, spec.pieces, _train_lines(read, cut), len(chars))


@overload
def _encode(read: _Reader, vocab: Vocab, cut: int, f: None) -> tuple[np.ndarray, np.ndarray]: ...
@overload
def _encode(read: _Reader, vocab: Vocab, cut: int, f: BinaryIO) -> tuple[int, int]: ...
def _encode(
    read: _Reader, vocab: Vocab, cut: int, f: BinaryIO | None
) -> tuple[np.ndarray, np.ndarray] | tuple[int, int]:
    """Encode the training then the validation text; to ``f`` (returns token counts) or in memory."""
    dtype = id_dtype(vocab.size)
    kept: list[list[np.ndarray]] = [[], []]
    counts = [0, 0]

    def emit(part: int, ids: np.ndarray) -> None:
        ids = ids.astype(dtype, copy=False)
        counts[part] += len(ids)
        if f is None:
            kept[part].append(ids)
        else:
            f.write(ids.tobytes())

    stream = _split_stream(read.chunks(), cut)
    if isinstance(vocab, CharVocab):
        for part, text in stream:
            emit(part, vocab.encode(text))
    else:
        for part, group in itertools.groupby(stream, key=lambda item: item[0]):
            for piece in _line_pieces(text for _, text in group):
                emit(part, vocab.encode(piece))
    if f is None:
        joined = [np.concatenate(k) if k else np.zeros(0, dtype) for k in kept]
        return joined[0], joined[1]
    f.flush()
    os.fsync(f.fileno())
    return counts[0], counts[1]


def _cached(cache_dir: Path, key: str, names: list[str]) -> Prepared | None:
    """The prepared corpus a cache holds under ``key``, named as the files are named today."""
    found = cache.load(cache_dir, key)
    if found is None:
        return None
    vocab, ids, n_train, meta = found
    return Prepared(
        vocab,
        ids[:n_train],
        ids[n_train:],
        key,
        names,
        int(meta["train_chars"]),
        int(meta["val_chars"]),
        left_out=_left_out(meta, names),
    )


def _left_out(meta: dict[str, Any], names: list[str]) -> dict[str, int]:
    """The Gutenberg characters left out, by file name (caches written before they were kept by
    position held names, and older ones none)."""
    if "left_out_at" in meta:
        return {names[int(i)]: int(n) for i, n in meta["left_out_at"].items()}
    return dict(meta.get("left_out", {}))
