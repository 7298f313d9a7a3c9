"""The hand-off of a request's text from the model's worker thread to the event loop.

The worker appends every tick's text to each request's ``Mailbox`` without touching the event
loop; the loop is woken only for a request whose reader is waiting, at most once per tick for
all of them. A streamed response reads at most one event's worth every few milliseconds, so
between its reads the worker's ticks cost the loop nothing (with ``asyncio.Queue`` every tick
woke the loop and every character was a ``put``).

A mailbox also says when its reader is ``behind``: a stream whose client stops reading stops
being taken from once its connection's buffers fill, and the engine parks its rows, so a client
that never reads holds no share of the model's steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterable

# What the worker posts: (choice index, text, finish reason or None).
Item = tuple[int, str, "str | None"]
# Seconds a mailbox's oldest text may wait untaken before its reader is behind. A reader that
# keeps up takes it within one event's interval (20 ms) and the event loop's delay; a count of
# characters would park a fast reader of a fast model, and spare a slow model's non-reader.
BEHIND_AFTER = 0.5


class Mailbox:
    """One request's text as it arrives; ``post`` from the worker thread, the rest on the loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.items: deque[Item] = deque()  # append and popleft are atomic across threads
        self.waiter: asyncio.Future[None] | None = None
        # When the oldest untaken item was posted: set by the worker when there was none, cleared
        # by the loop after it has taken them all, so a race can only make it late by a tick.
        self.since: float | None = None

    @property
    def behind(self) -> bool:
        """Whether the reader has left text untaken for over ``BEHIND_AFTER`` seconds."""
        since = self.since
        return since is not None and bool(self.items) and time.monotonic() - since > BEHIND_AFTER

    def post(self, item: Item) -> asyncio.Future[None] | None:
        """Add an item; the waiting reader's future to wake, if there is one."""
        if self.since is None:
            self.since = time.monotonic()
        self.items.append(item)
        return self.waiter

    async def wait(self) -> None:
        """Until there is something to take."""
        while not self.items:
            self.waiter = self.loop.create_future()
            # The worker appends then reads ``waiter``; we set ``waiter`` then read the items:
            # whichever runs second sees the other's write, so no item goes unnoticed.
            if self.items:
                break
            try:
                await self.waiter
            finally:
                self.waiter = None

    def take(self) -> list[Item]:
        """Everything posted so far, in order."""
        out = []
        with contextlib.suppress(IndexError):
            while True:
                out.append(self.items.popleft())
        self.since = None
        return out


def deliver(loop: asyncio.AbstractEventLoop, posts: Iterable[tuple[Mailbox, Item]]) -> None:
    """Post one tick's items (from the worker thread) and wake their waiting readers in one call."""
    woken = {id(fut): fut for fut in (box.post(item) for box, item in posts) if fut is not None}
    if woken:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
            loop.call_soon_threadsafe(_wake, list(woken.values()))


def _wake(futures: list[asyncio.Future[None]]) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_result(None)
