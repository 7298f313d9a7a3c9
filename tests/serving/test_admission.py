"""Who gives a place up when the server is full: streams stalled on their clients, longest first,
and only as many as the new request needs (and none if they could not make room)."""

import pytest

from charrnn.serving import admission
from charrnn.serving.models import ServerState
from charrnn.serving.openai import ApiError


class Stalled:
    """A stream's connection whose writes have waited ``waited`` seconds on its client."""

    def __init__(self, waited: float) -> None:
        self.waited, self.evicted = waited, False

    def stalled_for(self) -> float:
        return self.waited

    def evict(self) -> None:
        self.evicted = True


def _streams(state, *specs):
    """A slot per (rows, seconds stalled), streaming on a ``Stalled`` connection."""
    out = []
    for rows, waited in specs:
        slot, conn, cancelled = admission.admit(state, rows), Stalled(waited), []
        slot.streams_on(conn, lambda s=slot, c=cancelled: (c.append(True), s.free()))  # as the server's release
        out.append((slot, conn, cancelled))
    return out


def test_a_full_server_evicts_the_longest_stalled_stream_and_only_it():
    state = ServerState(models={}, max_concurrent=3, max_rows=100)
    (_, reading, _), (_, short, _), (_, longest, cancelled) = _streams(state, (1, 0.0), (1, 1.5), (1, 4.0))
    slot = admission.admit(state, 1)
    assert longest.evicted and cancelled and not short.evicted and not reading.evicted
    assert (state.active, state.rows) == (3, 3)
    slot.free()
    slot.free()  # however many ways a request ends, its place goes back once
    assert (state.active, state.rows) == (2, 2)


def test_streams_that_cannot_make_room_keep_their_places():
    state = ServerState(models={}, max_concurrent=10, max_rows=10)
    (_, reading, _), (_, stalled, _) = _streams(state, (6, 0.0), (2, 5.0))
    with pytest.raises(ApiError) as refused:
        admission.admit(state, 5)  # evicting the stalled 2 rows leaves 6 + 5 > 10
    assert refused.value.status == 429 and not stalled.evicted
    admission.admit(state, 4)  # 6 + 4 fits once the stalled stream's 2 rows are gone
    assert stalled.evicted and not reading.evicted and state.rows == 10


def test_a_stream_that_has_waited_under_a_second_is_not_evicted():
    state = ServerState(models={}, max_concurrent=1, max_rows=10)
    ((_, conn, _),) = _streams(state, (1, admission.EVICT_AFTER / 2))
    with pytest.raises(ApiError):
        admission.admit(state, 1)
    assert not conn.evicted
