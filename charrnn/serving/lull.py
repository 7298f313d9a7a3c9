"""When a busy server gives memory back: once a burst of rows has passed, not only when idle.

The engine's ``idle`` hook (the server's: hand the allocators' free memory back) runs when the
engine has had no work for a moment. A server that always has a few clients never gets there,
so what a burst of hundreds of rows left behind (freed heap pages, MKL's product buffers) would
stay until a lull that may never come: after 384 never-reading rows were cut, a server under 16
steady streams held 5-10 MB more than when idle (bench/serve_faults.py, 2-core AMD EPYC Zen 3).
``Lull`` watches the rows the engine holds and says when the burst is over: the rows have stayed
at or under half their peak for a while. Ordinary traffic (a peak under ``floor``) never
triggers it, since a release walks the allocator's free lists and delays the next tick (0.2-6
ms measured on the same machine).
"""

from __future__ import annotations

# A peak of rows smaller than this is ordinary traffic, not a burst worth a release.
FLOOR = 64


class Lull:
    """The rows' peak since the last release, and since when they have stayed under half of it."""

    def __init__(self, after: float, floor: int = FLOOR) -> None:
        self.after = after
        self.floor = floor
        self.peak = 0
        self.since: float | None = None  # when the rows last fell to half the peak or under

    def update(self, rows: int, now: float) -> bool:
        """Record the rows held at ``now`` (time.monotonic()); True when the memory a burst left
        should go back: the peak reached ``floor`` and the rows have stayed at or under half of
        it for ``after`` seconds. The peak then starts again from ``rows``."""
        self.peak = max(self.peak, rows)
        if self.peak < self.floor or 2 * rows > self.peak:
            self.since = None
            return False
        if self.since is None:
            self.since = now
        if now - self.since < self.after:
            return False
        self.peak, self.since = rows, None
        return True
