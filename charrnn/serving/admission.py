"""A request's place among those the server generates at once, and who gives a place up.

The server generates at most ``--max-concurrent`` requests and ``--max-rows`` rows at once; a
request past either gets 429. A stream whose client stops reading keeps its place until
``--stall-timeout`` closes its connection (10 s by default), so clients that never read could
take every place and lock out the ones that do: in the fault bench, 51 never-reading requests
beside 16 good streams left three of those without a place for ten seconds (165 refusals, the
good clients at 0.75x their quiet throughput). So a full server makes room: a stream whose
connection has waited on its client for ``EVICT_AFTER`` seconds gives its place to the new
request, longest-waiting first, and its connection is closed as the stall timeout would close it.
"""

from __future__ import annotations

from collections.abc import Callable

from charrnn.serving.models import Connection, ServerState, Stream
from charrnn.serving.openai import ApiError

# Seconds a stream's writes must have waited on its client before a new request may take its
# place. Writes wait only once ~16 kB of the stream's text lies unread (guard.SEND_BUFFER): a
# reader that keeps up never gets there, and a second's wait on top (the first choice) left the
# fault bench's good clients 48-140 refusals in the seconds before the never-readers qualified.
EVICT_AFTER = 0.25


class Slot:
    """One admitted request's place: its count and rows in the server's totals until ``free``."""

    def __init__(self, state: ServerState, rows: int) -> None:
        self.state, self.rows = state, rows
        self.freed = False
        state.active += 1
        state.rows += rows

    def free(self) -> None:
        """Give the place back (once, however many ways the request ends)."""
        if not self.freed:
            self.freed = True
            self.state.active -= 1
            self.state.rows -= self.rows
            self.state.streams.pop(self, None)

    def streams_on(self, connection: Connection, release: Callable[[], None]) -> None:
        """The request streams on ``connection``: it may lose its place if the client stops
        reading, and then ``release`` (what the request runs as it ends: its rows cancelled, this
        place freed) runs at once, not when its stream next runs."""
        if not self.freed:
            self.state.streams[self] = Stream(connection, self.rows, release)


def admit(state: ServerState, rows: int) -> Slot:
    """A place for a request of ``rows`` rows, or an ``ApiError``: 400 if its rows could never be
    served, 429 (with Retry-After) while the server is at its limit of requests or rows and no
    stalled stream can make room."""
    if rows > state.max_rows:
        raise ApiError(400, f"n times the number of prompts must be at most {state.max_rows} (--max-rows)", "n")
    _make_room(state, rows)
    busy = None
    if state.active >= state.max_concurrent:
        busy = f"its limit of {state.max_concurrent} concurrent requests"
    elif state.rows + rows > state.max_rows:
        busy = f"its limit of {state.max_rows} rows generated at once"
    if busy is not None:
        raise ApiError(
            429,
            f"the server is at {busy}; retry shortly",
            code="rate_limit_exceeded",
            kind="rate_limit_error",
            headers={"Retry-After": "1"},
        )
    return Slot(state, rows)


def _fits(state: ServerState, requests: int, held: int, rows: int) -> bool:
    """Whether a request of ``rows`` fits beside ``requests`` requests holding ``held`` rows."""
    return requests < state.max_concurrent and held + rows <= state.max_rows


def _make_room(state: ServerState, rows: int) -> None:
    """Evict stalled streams, the longest stalled first, as many as a request of ``rows`` needs
    to fit; none if evicting every stream stalled long enough would still leave it out."""
    requests, held = state.active, state.rows
    if _fits(state, requests, held, rows):
        return
    stalled = sorted(((s.connection.stalled_for(), s) for s in state.streams.values()), key=lambda w: -w[0])
    chosen: list[Stream] = []
    for waited, stream in stalled:
        if waited < EVICT_AFTER or _fits(state, requests, held, rows):
            break
        chosen.append(stream)
        requests, held = requests - 1, held - stream.rows
    if not _fits(state, requests, held, rows):
        return
    for stream in chosen:
        stream.release()
        stream.connection.evict()
