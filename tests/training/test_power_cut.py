"""A power cut at every point of a run's file operations (issue 43): a real ``charrnn train`` is
traced with strace while it builds its corpus cache (ids and metadata) and writes best.pt,
last.pt and metrics.jsonl; each state a cut could leave (``powercut``: every operation on disk,
only the fsynced bytes, or half the unsynced ones) is laid out and the next run is started on
it, in process. Whatever the cut, the state holds no cache that loads other ids, the newest
last.pt written before the cut loads, and the next run (``--resume`` where last.pt is there)
exits 0, leaves no temp file, and ends with the uncut run's very model, metrics and cache. The
counts print with -s."""

import contextlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from conftest import TINY, run_cli
from powercut import VARIANTS, cuts, lay_out, trace

from charrnn.data import cache
from charrnn.errors import CharrnnError
from charrnn.model import checkpoint

STEPS = 4
TEMP = re.compile(r"(^|/)\.[^/]+\.tmp\d+(/|$)")


@dataclass
class Uncut:
    """What the traced run ended with, and how it was started."""

    args: list[str]
    key: str
    ids: np.ndarray
    weights: dict[str, torch.Tensor]


def _traced_run(tmp_path, corpus):
    """The run, traced into ``tmp_path/disk/run``; what it ended with."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (apt-get install strace; .ci/run installs it)")
    run = tmp_path / "disk" / "run"
    run.parent.mkdir()
    args = [str(corpus), "--out", str(run), *TINY, "--steps", str(STEPS), "--eval-every", "2", "--base", "none"]
    args.append("--quiet")
    r = trace([sys.executable, "-m", "charrnn", "train", *args], tmp_path / "trace.txt", tmp_path, dict(os.environ))
    if r.returncode != 0 and re.search(rb"^strace: .*(ptrace|Operation not permitted)", r.stderr, re.M):
        pytest.skip(f"strace cannot trace here: {r.stderr.decode().splitlines()[0]}")
    assert r.returncode == 0, r.stderr.decode()[-3000:]
    last = checkpoint.load(run / "last.pt")
    key = last["corpus"]["key"]
    return Uncut(args, key, np.array(cache.load(run / ".cache", key)[1]), last["state_dict"])


def _as_found(run, uncut, saved):
    """What a cut leaves, before the next run touches it: a cache that loads holds the very ids,
    and the newest last.pt written before the cut loads."""
    found = cache.load(run / ".cache", uncut.key)
    assert found is None or np.array_equal(np.asarray(found[1]), uncut.ids), "a cache that loads other ids"
    if saved is not None:
        assert checkpoint.load(run / "last.pt")["step"] == saved


def _next_run(run, uncut):
    """The next run after the cut: it resumes where last.pt is there, else starts over; True if
    it resumed."""
    resumed = (run / "last.pt").is_file()
    r = run_cli("train", "--resume", run, "--quiet") if resumed else run_cli("train", *uncut.args)
    assert r.exit_code == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert [str(p) for p in run.rglob("*") if TEMP.search(str(p))] == []
    last = checkpoint.load(run / "last.pt")
    assert last["step"] == STEPS
    assert all(torch.equal(last["state_dict"][k], v) for k, v in uncut.weights.items()), "not the uncut run's model"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [2, STEPS]
    found = cache.load(run / ".cache", uncut.key)
    assert found is not None and np.array_equal(np.asarray(found[1]), uncut.ids)
    return resumed


def test_a_power_cut_anywhere_leaves_a_state_the_next_run_accepts_or_rebuilds(tmp_path, repetitive_corpus):
    uncut = _traced_run(tmp_path, repetitive_corpus)
    disk, run, probe = tmp_path / "disk", tmp_path / "disk" / "run", tmp_path / "saved.pt"
    seen: set = set()
    points, replayed, resumed = 0, 0, 0
    saved = None  # the step of the newest whole last.pt the run had written before the cut
    for point, variant, state in cuts(tmp_path / "trace.txt", run, tmp_path):
        points = point + 1
        if variant == "all" and "run/last.pt" in state:
            probe.write_bytes(state["run/last.pt"] or b"")
            with contextlib.suppress(CharrnnError):  # one being written in place is not written yet
                saved = checkpoint.load(probe)["step"]
        # The sweep removes temp files by name, unread: states differing only in their contents are one.
        same = (saved, tuple(sorted((n, None if TEMP.search(n) else c) for n, c in state.items())))
        if same in seen:
            continue
        seen.add(same)
        lay_out(state, disk)
        try:
            _as_found(run, uncut, saved)
            resumed += _next_run(run, uncut)
        except (AssertionError, CharrnnError) as e:
            raise AssertionError(f"power cut after operation {point} ({variant}): {e}") from None
        replayed += 1
    print(
        f"power cuts: {points} cut points x {len(VARIANTS)} variants ({', '.join(VARIANTS)}); "
        f"{replayed} distinct states replayed, {resumed} of them resumed from last.pt"
    )
    assert points > 50 and resumed > 10
