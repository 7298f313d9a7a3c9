"""The run-directory lock: one training run at a time writes into a RUN_DIR.

Two runs into one directory (the default ``checkpoints/<corpus-name>`` for two corpora of the
same name) would write over each other's checkpoints and metrics. The lock is an advisory
``flock`` on RUN_DIR/.lock, which the kernel releases when its process ends however it ends, so
a killed run never leaves a directory locked for good; the file names the holder for the
error message. Only training takes it: sampling, evaluating and ``info`` read checkpoints,
which are replaced atomically, and never wait.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from charrnn.errors import CharrnnError

LOCK_NAME = ".lock"


class RunLock:
    """Held by the training process (rank 0 under torchrun) from before it writes anything."""

    def __init__(self, run_dir: Path, note: Callable[[str], None]) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.note = note
        self.fd: int | None = None
        self.created = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock or stop with one line naming its holder; nothing in RUN_DIR changes then."""
        try:
            import fcntl
        except ImportError:  # not POSIX (Windows): runs are not locked there
            return
        try:
            self.created = not self.run_dir.exists()
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CharrnnError(f"--out {self.run_dir}: cannot create the run directory ({e.strerror or e})") from None
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read(fd)
                os.close(fd)
                raise CharrnnError(
                    f"{self.run_dir} is in use by process {holder.get('pid', '?')} "
                    f"(started {holder.get('started', '?')})"
                ) from None
            # The holder before us may have removed the file between our open and our lock:
            # then we hold a lock on a file nobody else can see, so start over.
            if _same_file(fd, self.path):
                break
            os.close(fd)
        stale = _read(fd)
        if stale.get("pid"):
            self.note(
                f"note: {self.run_dir} was locked by process {stale['pid']} "
                f"(started {stale.get('started', '?')}), which is gone; taking the lock over"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}).encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink()
            if self.created:  # a run that failed before writing anything leaves no empty RUN_DIR
                self.run_dir.rmdir()
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise CharrnnError(f"--out {self.run_dir}: directory is not writable ({e.strerror or e})") from None


def _read(fd: int) -> dict[str, Any]:
    try:
        found = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)
