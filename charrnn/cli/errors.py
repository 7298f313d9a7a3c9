"""How a command ends on a user error: one line ``error: ...`` on stderr and exit code 2; and
stdout let go of when its reader has gone, so the interpreter's last flush cannot fail again."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import typer

from charrnn.errors import CharrnnError
from charrnn.sampling.options import SAMPLE_OPTIONS


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def check_unknown(unknown: str) -> None:
    """--unknown of sample and viz, checked before any checkpoint is loaded."""
    choices = SAMPLE_OPTIONS["unknown"].choices
    if unknown not in choices:
        raise CharrnnError(f"--unknown must be {' or '.join(choices)} (got {unknown!r})")


def detach_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
