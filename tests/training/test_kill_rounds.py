"""kill -9 at seeded random instants, 20 rounds, while a run prepares a 3 MB corpus or writes
its checkpoints: whatever the instant, what the next run finds is consistent (the checkpoints
load, the cache loads the very ids or is rebuilt) and its start leaves no temp file.
The counts of kills that landed in each window print with -s."""

import random
import re
import shutil
import subprocess
import sys
import time

import numpy as np
from conftest import TINY, run_cli

from charrnn.data import cache
from charrnn.data.prepare import prepare
from charrnn.model import checkpoint
from charrnn.runtime.files import sweep

ROUNDS = 20
TEMP = re.compile(r"^\..+\.tmp\d+$")
# Each step validates on a few tokens and writes best.pt and last.pt: most of a step
# is checkpoint writing (50 MB for last.pt: the write window is wide).
RUN = [*TINY, "--hidden", "1024", "--eval-every", "1", "--val-tokens", "64", "--steps", "100000", "--quiet"]


def _temps(run):
    return [p for p in run.rglob("*") if TEMP.match(p.name)]


def _started(run, preparing):
    """The instant a window opens: the cache being built, or a checkpoint being written."""
    if preparing:  # the run holds its lock: preparation follows at once
        return (run / ".lock").exists()
    try:
        names = [p.name for p in run.iterdir()]
    except OSError:
        return False
    return any(TEMP.match(n) and n.startswith((".last.pt", ".best.pt")) for n in names)


def test_kill_9_during_preparation_and_checkpoint_writes(tmp_path):
    rng = random.Random(43)
    words = ["the", "lamp", "door", "sea", "is", "open", "dark", "ANNA", "BORIS", "and", "a", "of", "—"]
    corpus = tmp_path / "big.txt"
    corpus.write_text("".join(" ".join(rng.choices(words, k=12)) + ".\n" for _ in range(60_000)))  # 3 MB
    started = time.monotonic()
    reference = prepare([str(corpus)], tmp_path / "reference", 0.1)
    prep = time.monotonic() - started
    run = tmp_path / "run"
    hit = {"preparing": 0, "writing": 0}
    for i in range(ROUNDS):
        preparing = i % 2 == 0  # then the cache is gone and the run builds it again
        if preparing:
            shutil.rmtree(run / ".cache", ignore_errors=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "charrnn", "train", str(corpus), "--out", str(run), *RUN],
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not _started(run, preparing) and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(rng.uniform(0, prep) if preparing else rng.uniform(0, 0.02))
        proc.kill()
        proc.wait()
        left = _temps(run)
        hit["preparing"] += any(p.parent.name == ".cache" for p in left)
        hit["writing"] += any(p.name.startswith((".last.pt", ".best.pt")) for p in left)
        # What the next run finds: checkpoints that load, and a cache that loads the very ids or none.
        for name in ("last.pt", "best.pt"):
            if (run / name).exists():
                checkpoint.build_model(checkpoint.load(run / name))
        found = cache.load(run / ".cache", reference.key)
        if found is not None:
            assert np.array_equal(np.asarray(found[1]), np.concatenate([reference.train, reference.val]))
        # Its start sweeps what the killed run left.
        assert sorted(sweep(run) + sweep(run / ".cache")) == sorted(left)
        assert _temps(run) == []
    # Some instants fell in each window (seeded, so the same ones every time).
    print(f"kill -9 rounds: {ROUNDS}, landed while preparing: {hit['preparing']}, while writing: {hit['writing']}")
    assert hit["preparing"] + hit["writing"] >= 3, hit
    r = run_cli("train", corpus, "--out", run, *RUN[:-3], "--steps", "2", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert _temps(run) == []
