"""The corpora charrnn is tested and measured on: one name for each, where its file lives, and a
check that what is there is the text the docs' numbers were measured on.

The benches name corpora as the docs do (``bench/auto.py --corpora demo,kernel``) and find them
through ``path``. Third-party text is never copied into this repository: it is read from
``../shared/corpora/`` beside the checkout, and the kernel corpus is built there on demand.

Usage: python corpora/catalogue.py [--build]   (one JSON line per corpus; --build builds the
kernel corpus if it is missing; exit 1 if a present file does not match its checksum)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "corpora"
KERNEL_SCRIPT = SHARED / "linux.sh"


@dataclass(frozen=True)
class Corpus:
    name: str
    file: str  # relative to the repository (bundled) or to ../shared/corpora (shared); "" if built
    where: str  # "bundled" | "shared" | "built"
    what: str
    panel: bool = True  # one of the texts docs/auto.md's panel measures --preset auto on


CATALOGUE = [
    Corpus(
        "demo",
        "charrnn/demo/demo_screenplay.fountain",
        "bundled",
        "one original screenplay, 80 kB: the panel's shortest text",
    ),
    Corpus(
        "screenplays",
        "charrnn/demo",
        "bundled",
        "the 42 original screenplays (443 kB) `charrnn train` reads when given no corpus",
        panel=False,
    ),
    Corpus("earnest", "earnest.txt", "shared", "Wilde's stage play, 137 kB with its Gutenberg licence"),
    Corpus("tinyshakespeare", "tinyshakespeare.txt", "shared", "the classic char-rnn corpus, 1.1 MB"),
    Corpus("stacks", "stacks_algebra.tex", "shared", "LaTeX source, 1.8 MB"),
    Corpus("quijote", "quijote_es.txt", "shared", "Spanish, 2.2 MB, UTF-8 with a BOM and CRLF"),
    Corpus("warpeace", "warpeace.txt", "shared", "an English novel, 3.2 MB"),
    Corpus("kernel", "", "built", "the Linux kernel's C source, 64 MB, built by ../shared/corpora/linux.sh"),
]
NAMES = [c.name for c in CATALOGUE]
PANEL = [c.name for c in CATALOGUE if c.panel]


def find(name: str) -> Corpus:
    for c in CATALOGUE:
        if c.name == name:
            return c
    raise KeyError(f"unknown corpus {name!r}; choose from {', '.join(NAMES)}")


def path(name: str, build: bool = True) -> Path:
    """The corpus's file or folder; the kernel corpus is built first if ``build`` (it is
    deterministic, so a second build is the same file; linux.sh skips an existing one)."""
    c = find(name)
    if c.where == "bundled":
        return REPO / c.file
    if c.where == "shared":
        return SHARED / c.file
    if not build:  # where linux.sh puts it, with its own OUT and MB
        return Path(os.environ.get("OUT", "/tmp/charrnn-linux")) / f"linux-{os.environ.get('MB', '64')}mb.c"
    built = subprocess.run(["bash", str(KERNEL_SCRIPT)], check=True, capture_output=True, text=True)
    return Path(built.stdout.strip().splitlines()[-1])


def checksums() -> dict[str, str]:
    """The shared folder's own SHA256SUMS, file name -> hex digest."""
    sums = SHARED / "SHA256SUMS"
    if not sums.is_file():
        return {}
    return {
        name: digest
        for digest, name in (line.split(maxsplit=1) for line in sums.read_text().splitlines() if line.strip())
    }


def describe(c: Corpus, p: Path, expected: dict[str, str]) -> dict:
    """What a user repeating a measurement needs to know of the file: it is there, it is the
    same bytes, and how many characters it has."""
    row = {"name": c.name, "where": c.where, "path": str(p), "what": c.what, "present": p.exists()}
    if not p.exists():
        return row
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    data = b"".join(f.read_bytes() for f in files)
    try:
        text, utf8 = data.decode("utf-8"), True
    except UnicodeDecodeError:
        text, utf8 = data.decode("utf-8", errors="replace"), False
    digest = hashlib.sha256(data).hexdigest()
    row.update(
        files=len(files), bytes=len(data), chars=len(text), distinct_chars=len(set(text)), utf8=utf8, sha256=digest
    )
    if c.where == "shared" and c.file in expected:
        row["sha256_ok"] = digest == expected[c.file]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", action="store_true", help="build the kernel corpus if it is missing")
    args = ap.parse_args()
    expected = checksums()
    ok = True
    for c in CATALOGUE:
        row = describe(c, path(c.name, build=args.build), expected)
        ok &= row.get("sha256_ok", True)
        print(json.dumps(row), flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
