import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from charrnn.cli.app import app

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "corpora"))
from catalogue import SHARED  # noqa: E402  (where the shared corpora are: corpora/catalogue.py)


@pytest.fixture(autouse=True, scope="session")
def _measurements_kept_apart(tmp_path_factory):
    """What charrnn measures about the machine (auto's speed probe, the sampler's precision
    timings) is kept for the session alone, in and out of subprocesses, never in the home's cache."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))


# A tiny model underfits, so it keeps the tiny preset's light weight decay, not the default's 0.1.
TINY = [
    "--layers",
    "1",
    "--hidden",
    "32",
    "--embed",
    "16",
    "--seq-len",
    "16",
    "--batch-size",
    "8",
    "--dropout",
    "0",
    "--lr",
    "1e-2",
    "--weight-decay",
    "0.01",
]


def run_cli(*args: str, input: str | None = None):
    """The CLI in-process (fast); stderr is kept apart from stdout."""
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def run_proc(*args: str, input: bytes | None = None, cwd: Path | None = None, timeout: int = 300):
    """The real console entry point in a subprocess (exit codes, pipes, signals)."""
    return subprocess.run(
        [sys.executable, "-m", "charrnn", *map(str, args)],
        input=input,
        capture_output=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def shared(name: str) -> Path:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


@pytest.fixture(scope="session")
def repetitive_corpus(tmp_path_factory) -> Path:
    """A small text with strong structure, so a tiny model learns it in seconds."""
    lines = [
        f"{name}: the {thing} is {adj}.\n"
        for name in ("ANNA", "BORIS", "CLARA")
        for thing in ("sea", "lamp", "door")
        for adj in ("open", "dark")
    ]
    path = tmp_path_factory.mktemp("corpus") / "play.txt"
    path.write_text("".join(lines) * 40)
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, repetitive_corpus) -> Path:
    """One tiny trained run shared by the sampling and checkpoint tests."""
    out = tmp_path_factory.mktemp("run")
    r = run_cli("train", repetitive_corpus, *TINY, "--steps", "300", "--eval-every", "50", "--out", out, "--quiet")
    assert r.exit_code == 0, r.stderr
    return out


PAGE = 4096


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MB tmpfs, unmounted afterwards; skipped where this process may not mount one."""
    where = tmp_path / "disk"
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip() or r.returncode}); needs root")
    yield where
    gc.collect()  # the in-process runs' memory-mapped caches
    if subprocess.run(["umount", str(where)]).returncode != 0:
        subprocess.run(["umount", "--lazy", str(where)], check=True)


def fill(disk: Path, leave: int) -> Path:
    """A filler file that leaves ``leave`` bytes (rounded up to pages) free on the tmpfs."""
    st = os.statvfs(disk)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - (leave + PAGE - 1) // PAGE * PAGE))
    return filler
