"""The corpus cache is one unit: built in a temp folder and renamed whole, so a build cut short
(here by a real full disk, as the metadata is written) leaves no part of itself behind; caches
in the older flat layout are removed by the next run."""

import subprocess

import numpy as np
import pytest
from conftest import PAGE, TINY, fill, run_cli

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
    assert not cache_dir.exists()  # the folder it created, too
    filler.unlink()
    again = prepare([str(corpus)], cache_dir, 0.1)
    assert [p.name for p in cache_dir.iterdir()] == [again.key]
    assert sorted(p.name for p in (cache_dir / again.key).iterdir()) == ["ids", "meta.json"]
    assert np.array_equal(np.asarray(again.train), reference.train)
    assert np.array_equal(np.asarray(again.val), reference.val)


def test_a_run_removes_caches_of_the_flat_layout_and_keeps_the_rest(tmp_path, repetitive_corpus):
    """2.0.0 and earlier kept a cache as KEY.ids, KEY.json and KEY.vocab (0.1: KEY.npy) side by side;
    nothing reads them now, so the next run removes them, keeping the copy index's flat files and a
    live process's temp file."""
    key = prepare([str(repetitive_corpus)], tmp_path / "elsewhere", 0.1).key
    old_key = key.split("-")[0] + "-char-v1"  # 0.1's key: digest, vocabulary, cache version
    run = tmp_path / "run"
    (run / ".cache").mkdir(parents=True)
    flat = [f"{key}.ids", f"{key}.json", f"{key}.vocab", f"{old_key}.npy", f"{old_key}.json"]
    live = subprocess.Popen(["sleep", "60"])
    try:
        kept = [f"{key}.text", f"{key}.suffixes.npy", f".{key}.ids.tmp{live.pid}", "notes.json"]
        for name in flat + kept:
            (run / ".cache" / name).write_bytes(b"{}")
        r = run_cli("train", repetitive_corpus, "--out", run, *TINY, "--steps", "1")
        assert r.exit_code == 0, r.stderr
        assert f"note: removed 5 corpus cache file(s) of charrnn 2.0.0 or earlier from {run / '.cache'}" in r.stderr
        assert sorted(p.name for p in (run / ".cache").iterdir()) == sorted([key, *kept])
    finally:
        live.kill()
        live.wait()
