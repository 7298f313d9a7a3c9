"""charrnn as a package a new user meets: the version, the bundled demo corpus found through the
package (not the checkout), the one-line error for an empty corpus path, and the run-directory
lock, tested with real second processes."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY, run_cli, run_proc

import charrnn
from charrnn.model import checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_version_has_one_source_and_checkpoints_record_it(trained_run):
    r = run_proc("--version")
    assert r.returncode == 0 and r.stdout.decode() == f"charrnn {charrnn.__version__}\n"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and "charrnn._version.__version__" in pyproject
    assert checkpoint.load(trained_run / "best.pt")["charrnn_version"] == charrnn.__version__
    r = run_cli("info", trained_run)
    assert re.search(rf"^written by\s+charrnn {re.escape(charrnn.__version__)}$", r.stdout, re.M), r.stdout


def test_info_of_a_checkpoint_from_before_versions_were_recorded_shows_a_dash(trained_run, tmp_path):
    ckpt = torch.load(trained_run / "best.pt", weights_only=True)
    ckpt.pop("charrnn_version")
    torch.save(ckpt, tmp_path / "old.pt")
    r = run_cli("info", tmp_path / "old.pt")
    assert r.exit_code == 0 and re.search(r"^written by\s+-$", r.stdout, re.M), r.stdout


def test_without_a_corpus_training_reads_the_bundled_demo_folder(tmp_path):
    r = run_proc("train", *TINY, "--steps", "3", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ckpt = checkpoint.load(tmp_path / "checkpoints" / "demo" / "best.pt")
    demo = Path(charrnn.__file__).parent / "demo"
    assert ckpt["corpus"]["paths"] == [str(p) for p in sorted(demo.glob("*.fountain"))]
    assert ckpt["corpus"]["paths"], "the demo folder holds no screenplay"


@pytest.mark.parametrize("paths", [[""], ["{corpus}", ""]])
def test_an_empty_corpus_path_is_a_one_line_error_and_writes_nothing(tmp_path, repetitive_corpus, paths):
    work = tmp_path / "work"
    work.mkdir()
    r = run_proc("train", *[p.format(corpus=repetitive_corpus) for p in paths], *TINY, "--steps", "3", cwd=work)
    assert r.returncode == 2 and r.stderr.decode() == "error: '': an empty path among the corpus arguments\n"
    assert list(work.iterdir()) == []


def _files(run_dir: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(run_dir)): (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.rglob("*")}


def test_a_run_directory_in_use_is_locked_until_its_process_is_gone(tmp_path, repetitive_corpus):
    out = tmp_path / "run"
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "charrnn",
            "train",
            str(repetitive_corpus),
            *TINY,
            "--steps",
            "1000000",
            "--eval-every",
            "5",
            "--out",
            str(out),
            "--quiet",
        ],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.pt").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (out / "last.pt").exists(), first.stderr.read() if first.poll() is not None else "no last.pt"
        os.kill(first.pid, signal.SIGSTOP)  # alive and holding the lock, but writing nothing
        before = _files(out)
        started = r"\(started \d{4}-\d\d-\d\d [\d:]+ \w+\)"
        held = rf"^error: {re.escape(str(out))} is in use by process {first.pid} {started}\n$"
        for args in (["train", repetitive_corpus, *TINY, "--steps", "5", "--out", out], ["train", "--resume", out]):
            r = run_proc(*args)
            assert r.returncode == 2 and re.match(held, r.stderr.decode()), r.stderr
        assert _files(out) == before
        # Readers never wait for the lock.
        assert run_proc("sample", out, "--length", "20", "--seed", "1").returncode == 0
        assert run_proc("info", out).returncode == 0
        assert run_proc("eval", out, repetitive_corpus).returncode == 0
    finally:
        first.kill()
        first.wait()
    r = run_proc("train", "--resume", out, "--steps", "6", "--quiet")
    assert r.returncode == 0, r.stderr
    assert f"locked by process {first.pid}" in r.stderr.decode() and "taking the lock over" in r.stderr.decode()
    assert not (out / ".lock").exists()
