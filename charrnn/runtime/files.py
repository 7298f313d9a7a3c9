"""Writing a file atomically: a temp file beside it, flushed to disk, renamed over it.

The rename is atomic, so at every instant the path holds either the previous complete file or
the new complete one: an interrupted checkpoint, export or rendered screenplay is never torn.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from charrnn.errors import CharrnnError


def write_atomic(path: Path, write: Callable[[BinaryIO], None] | bytes, what: str = "") -> None:
    """``write`` fills the open temp file (or is the bytes to write); ``what`` names the file in
    the one-line error (``cannot write checkpoint PATH (...)``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            if isinstance(write, bytes):
                f.write(write)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise CharrnnError(f"cannot write {what + ' ' if what else ''}{path} ({e.strerror or e})") from None
