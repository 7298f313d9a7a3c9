"""The corpus cache is one unit: built in a temp folder and renamed whole, so a build cut short
(here by a real full disk, as the metadata is written) leaves no part of itself behind."""

import numpy as np
import pytest
from conftest import PAGE, fill

from charrnn.data.prepare import prepare
from charrnn.errors import CharrnnError


def test_a_build_cut_short_leaves_nothing_and_the_next_one_is_whole(tmp_path, small_disk):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the lamp is dark and the door is open.\n" * 5000)  # 195,000 one-byte ids
    reference = prepare([str(corpus)], tmp_path / "cache", 0.1)
    cache_dir = small_disk / "cache"
    # Room for the ids to the last page, none for the metadata written after them.
    filler = fill(small_disk, (195_000 + PAGE - 1) // PAGE * PAGE)
    with pytest.raises(CharrnnError, match=r"^no space left on device while writing .*; no partial cache is left$"):
        prepare([str(corpus)], cache_dir, 0.1)
    assert list(cache_dir.iterdir()) == []
    filler.unlink()
    again = prepare([str(corpus)], cache_dir, 0.1)
    assert [p.name for p in cache_dir.iterdir()] == [again.key]
    assert sorted(p.name for p in (cache_dir / again.key).iterdir()) == ["ids", "meta.json"]
    assert np.array_equal(np.asarray(again.train), reference.train)
    assert np.array_equal(np.asarray(again.val), reference.val)
