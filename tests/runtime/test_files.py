"""Temp files: one name pattern for all of them, and the next run sweeps those of killed
processes (never a live one's) from its run directory and corpus cache."""

import os
import signal
import subprocess
import sys
import time

from conftest import TINY, run_cli

from charrnn.runtime.files import TEMP_NAME, sweep


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_sweep_removes_only_dead_processes_temp_files(tmp_path):
    dead = _dead_pid()
    live = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / f".last.pt.tmp{dead}").write_bytes(b"x" * 1000)
        (tmp_path / f".key.tmp{dead}").mkdir()
        (tmp_path / f".key.tmp{dead}" / "ids").write_bytes(b"ids")
        kept = [f".best.pt.tmp{live.pid}", f".best.pt.tmp{os.getpid()}", "last.pt", "notes.tmp1", ".x.tmp"]
        for name in kept:
            (tmp_path / name).write_bytes(b"kept")
        removed = sweep(tmp_path)
        assert sorted(p.name for p in removed) == sorted([f".last.pt.tmp{dead}", f".key.tmp{dead}"])
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
    finally:
        live.kill()
        live.wait()
    assert sweep(tmp_path / "missing") == []


def test_a_run_sweeps_what_killed_runs_left_and_names_stdin_spool_alike(tmp_path, repetitive_corpus):
    run = tmp_path / "run"
    # A run reading stdin, killed while it spools it: the spool carries the pattern and its pid.
    proc = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "train", "-", "--out", str(run), *TINY, "--steps", "1", "--quiet"],
        stdin=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None
    proc.stdin.write(b"some text\n" * 1000)
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while not list((run / ".cache").glob(".*")) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdin.close()
    spools = [p.name for p in (run / ".cache").iterdir()]
    assert len(spools) == 1 and (m := TEMP_NAME.fullmatch(spools[0])) and int(m["pid"]) == proc.pid
    stale = run / f".last.pt.tmp{_dead_pid()}"
    stale.write_bytes(b"x" * 100_000)
    live = subprocess.Popen(["sleep", "60"])
    try:
        alive = run / f".best.pt.tmp{live.pid}"
        alive.write_bytes(b"being written")
        r = run_cli("train", repetitive_corpus, "--out", run, *TINY, "--steps", "1")
        assert r.exit_code == 0, r.stderr
        assert "note: removed 2 temp file(s)" in r.stderr
        assert [p.name for p in run.rglob(".*.tmp*")] == [alive.name]
    finally:
        live.kill()
        live.wait()
