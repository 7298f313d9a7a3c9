"""Reading a corpus: which files, and how their bytes become one normalised text.

Files are read in chunks and decoded incrementally, so a corpus far larger than memory can be
hashed, scanned and encoded with only a few chunks resident. Every failure names the file and
what is wrong, so a user with a folder of hundreds of files knows which one to fix.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from charrnn.errors import CharrnnError
from charrnn.runtime.files import temp_path

STDIN = "-"
BOM = "\ufeff"
CHUNK_BYTES = 8 << 20
SNIFF_BYTES = 8000  # how much of a file in a directory decides whether it is text
# Project Gutenberg e-books open with a header and end with the licence, around lines like
# "*** START OF THE PROJECT GUTENBERG EBOOK ... ***" and "*** END OF ...". Left in, the licence
# (~18k characters) is the whole validation split of a play-length book, so early stopping
# judges the model on legal text, and the model learns to write it.
_GUTENBERG_LINE = r"^\*\*\* ?{} OF (?:THE|THIS) PROJECT GUTENBERG E(?:BOOK|TEXT)\b[^\n]*"
GUTENBERG_START = re.compile(_GUTENBERG_LINE.format("START"), re.M | re.I)
GUTENBERG_END = re.compile(_GUTENBERG_LINE.format("END"), re.M | re.I)
GUTENBERG_HEADER_CHARS = 64 * 1024  # a START line further in is not a header's


@dataclass(frozen=True)
class Source:
    """One input file: the name shown to the user and where its bytes are (stdin is spooled)."""

    name: str
    path: Path

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def resolve(paths: list[str], skipped: list[str] | None = None) -> list[str]:
    """Expand directories into their regular text files (recursively, sorted, hidden ones skipped).

    A file found inside a directory that is not UTF-8 text (a ``__pycache__`` .pyc, an image) is
    left out and its name appended to ``skipped``: a source tree is a corpus as it stands. A file
    named on its own is always read, so a binary one is still an error.
    """
    check_paths(paths)
    files: list[str] = []
    for p in paths:
        if p == STDIN:
            files.append(STDIN)
            continue
        path = Path(p)
        if path.is_dir():
            inside = sorted(
                f
                for f in path.rglob("*")
                if f.is_file() and not any(part.startswith(".") for part in f.relative_to(path).parts)
            )
            binary = {f for f in inside if looks_binary(f)}
            text = [f for f in inside if f not in binary]
            if skipped is not None:
                skipped.extend(str(f) for f in inside if f in binary)
            if not text:
                what = "no files" if not inside else f"no text files ({len(binary)} not UTF-8 text)"
                raise CharrnnError(f"{p}: directory holds {what}")
            files.extend(str(f) for f in text)
        elif path.is_file():
            files.append(p)
        elif path.exists():
            raise CharrnnError(f"{p}: not a regular file or directory")
        else:
            raise CharrnnError(f"{p}: no such file or directory")
    return files


def check_paths(paths: list[str]) -> None:
    """Every path names something, before a run takes its directory (an empty path would read as
    the current directory, and train on whatever is in it)."""
    if not paths:
        raise CharrnnError("no corpus given")
    for p in paths:
        if p == "":
            raise CharrnnError("'': an empty path among the corpus arguments")
        if p != STDIN and not os.path.lexists(p):
            raise CharrnnError(f"{p}: no such file or directory")


def skipped_note(skipped: list[str]) -> str:
    """One line for the files in corpus folders left out as not text, counted by folder (a source
    tree's .pyc files are many, in few __pycache__ folders)."""
    from collections import Counter

    where = Counter(str(Path(f).parent) for f in skipped)
    return (
        f"note: left out {len(skipped)} file(s) that are not UTF-8 text: "
        f"{describe([f'{n} in {d}' for d, n in where.most_common()])}"
    )


def looks_binary(path: Path) -> bool:
    """Whether a file's first 8 kB hold a NUL byte (git's test for binary) or bytes that cannot be
    UTF-8, the encoding charrnn reads. An unreadable file is not judged here: opening it says why."""
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES)
    except OSError:
        return False
    if b"\x00" in head:
        return True
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(head, final=len(head) < SNIFF_BYTES)
    except UnicodeDecodeError:
        return True
    return False


def open_sources(paths: list[str], spool_dir: Path | None = None, skipped: list[str] | None = None) -> list[Source]:
    """The corpus files in reading order; stdin (at most once) is copied to a file in ``spool_dir``.

    Spooling lets stdin be read more than once (hash, scan, encode) like any other file.
    ``skipped`` gathers the files in directories that are not text (see ``resolve``).
    """
    sources: list[Source] = []
    for name in resolve(paths, skipped):
        if name == STDIN:
            if any(s.name == "<stdin>" for s in sources):
                continue
            where = spool_dir if spool_dir is not None else Path(tempfile.gettempdir())
            spool = temp_path(where / "stdin.txt")  # a killed run's is swept by the next (files.sweep)
            try:
                where.mkdir(parents=True, exist_ok=True)
                with open(spool, "wb") as f:
                    shutil.copyfileobj(sys.stdin.buffer, f, CHUNK_BYTES)
            except BaseException as e:  # a signal while stdin is read, too (runtime.signals)
                spool.unlink(missing_ok=True)
                if isinstance(e, OSError):
                    raise CharrnnError(f"cannot store stdin in {where} ({e.strerror})") from None
                raise
            sources.append(Source("<stdin>", spool))
            continue
        path = Path(name)
        if not os.access(path, os.R_OK):
            raise CharrnnError(f"{name}: cannot read (permission denied)")
        sources.append(Source(name, path))
    return sources


def release(sources: list[Source]) -> None:
    """Remove stdin's spool file once the corpus is prepared."""
    for s in sources:
        if s.name == "<stdin>":
            s.path.unlink(missing_ok=True)


def iter_text(f: BinaryIO, name: str, chunk_bytes: int | None = None) -> Iterator[tuple[str, int]]:
    """(text, bytes consumed) per chunk: UTF-8 decoded, leading BOM dropped, CRLF/CR made LF.

    A NUL byte marks a binary file (as git and grep decide); invalid UTF-8 is reported at its
    byte offset in the file. A CR at a chunk's end is held back until the next chunk shows
    whether it starts a CRLF pair.
    """
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    offset = 0
    at_start = True
    held_cr = False
    while True:
        data = f.read(chunk_bytes)
        final = not data
        nul = data.find(b"\x00")
        if nul != -1:
            raise CharrnnError(f"{name}: looks like a binary file (NUL byte at offset {offset + nul}), not text")
        pending = len(decoder.getstate()[0])
        try:
            text = decoder.decode(data, final=final)
        except UnicodeDecodeError as e:
            raise CharrnnError(
                f"{name}: not valid UTF-8 (invalid byte at offset {offset - pending + e.start})"
            ) from None
        offset += len(data)
        if at_start and (text or final):
            at_start = False
            if text.startswith(BOM):
                text = text[1:]
        if held_cr:
            text = "\r" + text
        held_cr = not final and text.endswith("\r")
        if held_cr:
            text = text[:-1]
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        yield text, len(data)
        if final:
            return


def without_gutenberg(chunks: Iterator[tuple[str, int]], left_out: list[int]) -> Iterator[tuple[str, int]]:
    """A Project Gutenberg e-book's text between its START and END lines (other text unchanged),
    as (text, bytes consumed) chunks like ``iter_text``'s; appends the characters left out to
    ``left_out`` when it finds a START line. The last partial line of each chunk waits for the
    next, so an END line split between chunks is still found."""
    chunks = iter(chunks)
    head, used = "", 0
    for text, n in chunks:
        head, used = head + text, used + n
        if len(head) >= GUTENBERG_HEADER_CHARS:
            break
    start = GUTENBERG_START.search(head, 0, GUTENBERG_HEADER_CHARS)
    if start is None:
        yield head, used
        yield from chunks
        return
    buf = head[start.end() :].lstrip("\n")
    dropped = len(head) - len(buf)
    while True:
        end = GUTENBERG_END.search(buf)
        if end is not None:
            yield buf[: end.start()], used
            dropped += len(buf) - end.start()
            for text, n in chunks:
                dropped += len(text)
                yield "", n
            break
        # Hold back the last partial line, unless it is already longer than any END line
        # (a file of one endless line must not gather in memory).
        keep = buf.rfind("\n") + 1 or (len(buf) if len(buf) > GUTENBERG_HEADER_CHARS else 0)
        yield buf[:keep], used
        buf = buf[keep:]
        following = next(chunks, None)
        if following is None:
            yield buf, 0
            break
        text, used = following
        buf += text
    left_out.append(dropped)


def iter_corpus(
    sources: list[Source], keep_gutenberg: bool = False, left_out: dict[str, int] | None = None
) -> Iterator[tuple[str, int]]:
    """Every file's text chunks in order; files are joined as they are (each keeps its own ending).

    A Project Gutenberg e-book gives only its text, without header and licence, unless
    ``keep_gutenberg``; ``left_out`` then maps its name to the characters left out.
    """
    for s in sources:
        try:
            f = open(s.path, "rb")
        except OSError as e:
            raise CharrnnError(f"{s.name}: cannot read ({e.strerror})") from None
        with f:
            if keep_gutenberg:
                yield from iter_text(f, s.name)
                continue
            dropped: list[int] = []
            yield from without_gutenberg(iter_text(f, s.name), dropped)
            if dropped and left_out is not None:
                left_out[s.name] = dropped[0]


def decode(data: bytes, name: str) -> str:
    """A whole in-memory file as normalised text (prime files, small inputs)."""
    return "".join(text for text, _ in iter_text(io.BytesIO(data), name))


def read_text(sources: list[Source], keep_gutenberg: bool = False) -> str:
    """The whole corpus as one text in memory, for inputs known to be small (``eval``)."""
    text = "".join(t for t, _ in iter_corpus(sources, keep_gutenberg))
    if not text.strip():
        raise CharrnnError(f"{describe(sources)}: corpus is empty")
    return text


def describe(sources: list[Source] | list[str]) -> str:
    """The first three names of many files, for a message that must stay on one line."""
    names = [s.name if isinstance(s, Source) else s for s in sources]
    return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")


def fingerprint(sources: list[Source], advance: Callable[[int], None] = lambda n: None) -> str:
    """Hash of the files' contents in order, so a cache is never served for changed text.

    ``advance`` is told how many bytes each chunk held (a progress bar).
    """
    h = hashlib.sha256()
    for s in sources:
        h.update(s.size.to_bytes(8, "little"))
        with open(s.path, "rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                h.update(chunk)
                advance(len(chunk))
    return h.hexdigest()


def corpus_name(paths: list[str]) -> str:
    """A short name for the run directory: the first file's or directory's stem."""
    first = paths[0] if paths else STDIN
    if first == STDIN:
        return "stdin"
    return Path(first).resolve().stem or "corpus"
