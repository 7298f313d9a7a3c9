"""When a busy server gives a burst's memory back (``Lull``): the rows' peak, half of it, and time.
The engine updates it on every tick (milliseconds apart); a gap of over ``after`` is the engine idle."""

from charrnn.serving.lull import Lull


def _ticks(lull: Lull, rows: int, start: float, end: float, step: float = 0.1) -> list[float]:
    """Tick from ``start`` to ``end`` (excluded) holding ``rows``; the times a release was asked for."""
    times = [start + i * step for i in range(round((end - start) / step))]
    return [t for t in times if lull.update(rows, t)]


def test_ordinary_traffic_asks_for_a_release_only_every_ten_seconds_of_work():
    lull = Lull(after=1.0, floor=64, every=10.0)
    assert _ticks(lull, 40, 0.0, 5.0) == [] and _ticks(lull, 2, 5.0, 9.9) == []
    assert [round(t, 1) for t in _ticks(lull, 63, 9.9, 25.0)] == [10.0, 20.0]


def test_a_burst_is_over_once_the_rows_stay_under_half_its_peak_for_a_while():
    lull = Lull(after=1.0, floor=64, every=100.0)
    assert not lull.update(400, 0.0)
    assert not lull.update(200, 0.5)  # half the peak: the lull starts
    assert not lull.update(201, 1.0)  # over half: it starts again
    assert _ticks(lull, 16, 1.2, 2.2) == []
    assert lull.update(16, 2.2)  # 1.0 s at or under half of 400
    assert _ticks(lull, 16, 2.3, 9.0) == []  # the peak starts again from 16: ordinary traffic
    assert not lull.update(100, 9.0)
    assert [round(t, 1) for t in _ticks(lull, 10, 9.1, 11.0)] == [10.1]  # a second burst, a second release


def test_after_the_engine_was_idle_the_count_starts_afresh():
    """The idle hook released when the engine stopped ticking: the first ticks after it must not
    release again, whether ten seconds have passed or a burst had ebbed before it went idle."""
    lull = Lull(after=1.0, floor=64, every=10.0)
    assert not lull.update(400, 0.0) and not lull.update(0, 0.5)  # a burst, then idle
    assert _ticks(lull, 1, 60.0, 70.0) == []  # the next request, a minute later
    assert lull.update(1, 70.0)  # ten seconds of work since it woke
