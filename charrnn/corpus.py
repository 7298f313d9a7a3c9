"""Reading a corpus: which files, and how their bytes become one normalised text.

Every failure names the file and what is wrong, so a user with a folder of hundreds of files
knows which one to fix.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

from charrnn.errors import CharrnnError

STDIN = "-"
BOM = "\ufeff"
# A file with a NUL byte in its first block is treated as binary, the way git and grep do.
_SNIFF_BYTES = 8192


@dataclass(frozen=True)
class Source:
    """One input file (or stdin) and its raw bytes."""

    name: str
    data: bytes


def resolve(paths: list[str]) -> list[str]:
    """Expand directories into their regular files (recursively, sorted, hidden ones skipped)."""
    if not paths:
        raise CharrnnError("no corpus given")
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
            if not inside:
                raise CharrnnError(f"{p}: directory holds no files")
            files.extend(str(f) for f in inside)
        elif path.is_file():
            files.append(p)
        elif path.exists():
            raise CharrnnError(f"{p}: not a regular file or directory")
        else:
            raise CharrnnError(f"{p}: no such file or directory")
    return files


def read_sources(paths: list[str]) -> list[Source]:
    """Read the raw bytes of every file (stdin at most once)."""
    sources = []
    for name in resolve(paths):
        if name == STDIN:
            sources.append(Source("<stdin>", sys.stdin.buffer.read()))
            continue
        try:
            sources.append(Source(name, Path(name).read_bytes()))
        except OSError as e:
            raise CharrnnError(f"{name}: cannot read ({e.strerror})") from None
    return sources


def decode(data: bytes, name: str) -> str:
    """UTF-8 text with a leading BOM dropped and every line ending made LF."""
    nul = data.find(b"\x00", 0, _SNIFF_BYTES)
    if nul != -1:
        raise CharrnnError(f"{name}: looks like a binary file (NUL byte at offset {nul}), not text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CharrnnError(f"{name}: not valid UTF-8 (invalid byte at offset {e.start})") from None
    if "\x00" in text:
        offset = data.find(b"\x00")
        raise CharrnnError(f"{name}: looks like a binary file (NUL byte at offset {offset}), not text")
    if text.startswith(BOM):
        text = text[1:]
    return text.replace("\r\n", "\n").replace("\r", "\n")


def fingerprint(sources: list[Source]) -> str:
    """Hash of the names' order and contents, so a cache is never served for changed text."""
    h = hashlib.sha256()
    for s in sources:
        h.update(len(s.data).to_bytes(8, "little"))
        h.update(s.data)
    return h.hexdigest()


def corpus_name(paths: list[str]) -> str:
    """A short name for the run directory: the first file's or directory's stem."""
    first = paths[0] if paths else STDIN
    if first == STDIN:
        return "stdin"
    return Path(first).resolve().stem or "corpus"


def read_text(sources: list[Source]) -> str:
    """The whole corpus as one text; files are joined as they are (each keeps its own ending)."""
    text = "".join(decode(s.data, s.name) for s in sources)
    if not text.strip():
        names = ", ".join(s.name for s in sources[:3]) + (" ..." if len(sources) > 3 else "")
        raise CharrnnError(f"{names}: corpus is empty")
    return text
