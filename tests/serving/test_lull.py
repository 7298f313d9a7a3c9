"""When a busy server gives a burst's memory back (``Lull``): the rows' peak, half of it, and time."""

from charrnn.serving.lull import Lull


def test_ordinary_traffic_asks_for_a_release_only_every_so_often():
    lull = Lull(after=1.0, floor=64, every=10.0)
    assert not any(lull.update(rows, t) for t, rows in enumerate([10, 63, 2, 0, 40, 1, 1, 1, 1, 5]))
    assert lull.update(5, 10.0)  # ten seconds of work since the first tick
    assert not lull.update(5, 19.9) and lull.update(5, 20.0)


def test_a_burst_is_over_once_the_rows_stay_under_half_its_peak_for_a_while():
    lull = Lull(after=1.0, floor=64, every=100.0)
    assert not lull.update(400, 0.0)
    assert not lull.update(200, 0.5)  # half the peak: the lull starts
    assert not lull.update(201, 1.0)  # over half: it starts again
    assert not lull.update(16, 1.2)
    assert not lull.update(16, 2.1)
    assert lull.update(16, 2.2)  # 1.0 s at or under half of 400
    assert not lull.update(16, 9.0)  # the peak starts again from 16: ordinary traffic
    assert not lull.update(100, 10.0) and not lull.update(10, 10.5)
    assert lull.update(10, 11.5)  # a second burst, a second release
