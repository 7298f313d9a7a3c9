"""Ctrl-C and SIGTERM while a run prepares its corpus: unwind, so every ``finally`` removes its
temp file (the ids being encoded, the stdin spool), and exit 130 / 143 as training does.

Python's default SIGTERM ends the process on the spot, leaving those files behind, and its
SIGINT raises a ``KeyboardInterrupt`` that the command line would print as a traceback.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from charrnn.errors import Interrupted

STOPS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def interruptible() -> Iterator[None]:
    """Inside, SIGINT or SIGTERM raises ``Interrupted`` (nothing saved); a second signal while
    the first unwinds quits at once, as a second Ctrl-C does during training."""
    if threading.current_thread() is not threading.main_thread():  # signals reach only the main thread
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        for s in STOPS:
            signal.signal(s, signal.SIG_DFL)
        raise Interrupted(signum, None)

    old = {s: signal.signal(s, stop) for s in STOPS}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
