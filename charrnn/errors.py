"""The exceptions the CLI and the API turn into messages: bad input, and a run stopped by a signal.

The CLI turns a ``CharrnnError`` into a one-line ``error: ...`` and exit code 2, and an
``Interrupted`` into its signal's exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import signal
from pathlib import Path


class CharrnnError(Exception):
    """Bad input (corpus, checkpoint, option) explained in one line for the user."""


class ServerFailed(CharrnnError):
    """A server that cannot go on (its model's worker stopped): one line, and exit code 1 so a
    supervisor restarts it."""


class Interrupted(Exception):
    """Training stopped by a signal after saving ``last.pt`` (``path``), or while it prepared its
    corpus, before there was anything to save (``path`` None); carries the exit code."""

    def __init__(self, signum: int, path: Path | None) -> None:
        done = f"; saved {path}" if path is not None else " while preparing the corpus; nothing was saved"
        super().__init__(f"interrupted by {signal.Signals(signum).name}{done}")
        self.exit_code = 128 + signum
        self.path = path


def one_line(e: BaseException) -> str:
    """An exception as one line of a log (its text may hold newlines), at most 300 characters."""
    return " ".join(f"{type(e).__name__}: {e}".split())[:300]
