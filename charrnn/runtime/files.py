"""Writing a file atomically: a temp file beside it, flushed to disk, renamed over it.

The rename is atomic, so at every instant the path holds either the previous complete file or
the new complete one: an interrupted checkpoint, export or rendered screenplay is never torn.
A full disk is one line that names the file and says the previous one is intact, and the temp
file is removed. Every temp file charrnn writes is named ``.NAME.tmpPID``, so the one a killed
process left is recognised and swept (``sweep``) by the next run.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from charrnn.errors import CharrnnError

# What a full disk looks like: no space, no quota left, or (NFS, a failing or full device) EIO.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EIO)
TEMP_NAME = re.compile(r"\.(?P<name>.+)\.tmp(?P<pid>[0-9]+)")


def temp_path(path: Path) -> Path:
    """The temp name a file is written under before its rename: ``.NAME.tmpPID``."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def sweep(folder: Path) -> list[Path]:
    """Remove the temp files (and folders) in ``folder`` whose process has ended: a run killed
    again and again would otherwise fill the disk with them. A live process's are kept."""
    try:
        found = [(p, int(m["pid"])) for p in folder.iterdir() if (m := TEMP_NAME.fullmatch(p.name))]
    except OSError:  # no such folder yet: nothing to sweep
        return []
    removed = []
    for path, pid in found:
        if _alive(pid):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def write_error(e: OSError, path: Path, what: str, kept: str) -> CharrnnError:
    """The one line for a failed write: a full disk says what survived (``kept``), as in
    ``no space left on device while writing RUN/last.pt; the previous checkpoint is intact``."""
    if e.errno in DISK_FULL:
        return CharrnnError(f"{os.strerror(e.errno).lower()} while writing {path}; {kept}")
    return CharrnnError(f"cannot write {what + ' ' if what else ''}{path} ({e.strerror or e})")


class _Recorder:
    """The temp file as writers see it, keeping the first OSError a write or flush raised:
    torch's zip writer reports a failed write as a RuntimeError that no longer says why."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        """All of ``data``, or the OSError: a disk that fills mid-write takes part of a large
        write and refuses the rest, which torch would report only as a position mismatch."""
        view = memoryview(data)
        done = 0
        try:
            while done < len(view):
                done += self.f.write(view[done:])
        except OSError as e:
            self.error = self.error or e
            raise
        return done

    def flush(self) -> None:
        try:
            self.f.flush()
        except OSError as e:
            self.error = self.error or e
            raise


def fsync_dir(folder: Path) -> None:
    """Make the names in ``folder`` (a rename, a new file) durable, as fsync does a file's bytes."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomic(path: Path, write: Callable[[BinaryIO], None] | bytes, what: str = "") -> None:
    """``write`` fills the open temp file (or is the bytes to write); ``what`` names the file in
    the one-line error (``cannot write checkpoint PATH (...)``)."""
    path = Path(path)
    tmp = temp_path(path)
    kept = f"the previous {what or 'file'} is intact" if path.exists() else "no partial file is left"
    recorder = None
    try:
        with open(tmp, "wb") as f:
            recorder = _Recorder(f)
            if isinstance(write, bytes):
                recorder.write(write)
            else:
                write(recorder)  # type: ignore[arg-type]  # a file as far as writers go
            recorder.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        _remove(tmp)
        cause = e if isinstance(e, OSError) else recorder.error if recorder else None
        if cause is None:
            raise
        raise write_error(cause, path, what, kept) from None
    try:
        fsync_dir(path.parent)
    except OSError as e:
        raise write_error(e, path, what, "the new file is in place but may not survive a power cut") from None


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
