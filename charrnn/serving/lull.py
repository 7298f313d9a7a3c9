"""When a busy server gives memory back: once a burst of rows has passed, not only when idle.

The engine's ``idle`` hook (the server's: hand the allocators' free memory back) runs when the
engine has had no work for a moment. A server that always has a few clients never gets there,
so what a burst of hundreds of rows left behind (freed heap pages, MKL's product buffers) would
stay until a lull that may never come: after 384 never-reading rows were cut, a server under 16
steady streams held 5-10 MB more than when idle (bench/serve_faults.py, 2-core AMD EPYC Zen 3).
``Lull`` watches the rows the engine holds and says when the burst is over: the rows have stayed
at or under half their peak for a while. Ordinary traffic (a peak under ``floor``) does not
trigger that, since a release walks the allocator's free lists and delays the next tick (0.2-6
ms measured on the same machine). Bursts that are not rows (ten floods of unknown characters
left ~4 MB under load) go back at the latest ``EVERY`` seconds after the last release, since a
release that often costs under a thousandth of the engine's time.

A release is worth trying, never worth a request: ``forgiving`` wraps the hook so that one that
raises (a library's allocator symbol missing, a bug) says so once on stderr and the engine goes
on, instead of failing the rows of the tick it ran in or stopping the worker.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from charrnn.errors import one_line

# A peak of rows smaller than this is ordinary traffic, not a burst worth a release.
FLOOR = 64
# Seconds of work after which the engine releases whatever its rows did.
EVERY = 10.0


class Lull:
    """The rows' peak since the last release, and since when they have stayed under half of it."""

    def __init__(self, after: float, floor: int = FLOOR, every: float = EVERY) -> None:
        self.after, self.floor, self.every = after, floor, every
        self.peak = 0
        self.since: float | None = None  # when the rows last fell to half the peak or under
        self.last = 0.0  # when update last said to release, or the engine woke (set by the first update)
        self.seen: float | None = None  # the last update's time

    def update(self, rows: int, now: float) -> bool:
        """Record the rows held at ``now`` (time.monotonic()); True when the memory a burst left
        should go back: the peak reached ``floor`` and the rows have stayed at or under half of
        it for ``after`` seconds, or ``every`` seconds of work have passed since the last release.
        The peak then starts again from ``rows``. A gap of over ``after`` seconds since the last
        update was the engine idle, when its own idle hook released: the count starts afresh."""
        if self.seen is None or now - self.seen > self.after:
            self.peak, self.since, self.last = 0, None, now
        self.seen = now
        self.peak = max(self.peak, rows)
        if self.peak < self.floor or 2 * rows > self.peak:
            self.since = None
        elif self.since is None:
            self.since = now
        lull = self.since is not None and now - self.since >= self.after
        if not (lull or now - self.last >= self.every):
            return False
        self.peak, self.since, self.last = rows, None, now
        return True


def forgiving(release: Callable[[], object]) -> Callable[[], None]:
    """``release`` as the engine may call it: what it raises is logged (the first time) and dropped."""
    failed = False

    def run() -> None:
        nonlocal failed
        try:
            release()
        except Exception as e:  # noqa: BLE001 - memory not given back costs memory, not the rows
            if not failed:
                print(f"warning: the server could not give memory back ({one_line(e)})", file=sys.stderr, flush=True)
            failed = True

    return run
