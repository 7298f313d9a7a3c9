"""Ctrl-C or SIGTERM while a run prepares its corpus (here: while it reads a piped corpus from
stdin) unwinds, removes the temp files and the cache folder it created, and exits 130 / 143 as
during training."""

import signal
import subprocess
import sys
import time

import pytest
from conftest import TINY


# SIGINT into a run directory of its own (nothing of it is left), SIGTERM into one that holds a
# file already (the run directory stays, as it was).
@pytest.mark.parametrize("signum,code,before", [(signal.SIGINT, 130, []), (signal.SIGTERM, 143, ["notes.txt"])])
def test_signal_while_preparing_cleans_up_and_exits_as_training_does(tmp_path, signum, code, before):
    run = tmp_path / "run"
    for name in before:
        run.mkdir(exist_ok=True)
        (run / name).write_text("mine")
    proc = subprocess.Popen(
        [sys.executable, "-m", "charrnn", "train", "-", "--out", str(run), *TINY, "--steps", "5"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(b"some text\n" * 1000)
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while not list((run / ".cache").glob(".stdin*")):  # the spool: stdin is being read
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signum)
    assert proc.wait(timeout=30) == code
    proc.stdin.close()
    err = proc.stderr.read().decode()
    assert err.splitlines()[-1] == (
        f"stopped: interrupted by {signum.name} while preparing the corpus; nothing was saved"
    )
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(["run", *before] if before else [])
