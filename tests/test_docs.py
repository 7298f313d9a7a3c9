"""Every shell and Python example in README.md and docs/*.md runs, so the docs cannot rot.

How a page's examples run
  Each ```sh or ```bash block runs as one bash script (``set -euo pipefail``), each ```python
  block as one Python script, in the order of the page, all in one fresh work folder per page
  (so a block may use what an earlier block of its page made). ```text blocks show output and
  are not run. A block opened as ```sh no-test is not run either: keep that for commands that
  install charrnn or run this very suite (.ci/run runs those) and for hardware the suite
  cannot have (several machines, GPUs); say why beside it on the page.

What the work folder holds (names a page may use)
  corpus.txt, play.txt, scene.txt, other.txt, novel.txt, plays/a.txt, plays/b.txt
      copies of the bundled demo screenplay;
  checkpoints/demo
      a tiny run on the bundled corpus, what the quick start leaves (`charrnn sample` finds it);
  examples/
      the checkout's examples (docs/export.md runs examples/onnx_sample.py).

Tiny models, so the whole suite stays fast
  In shell blocks ``charrnn`` and ``torchrun`` are shell functions that append TRAIN_FLAGS to a
  training command (later flags win, so a page's ``--time 10m`` still shows but the run is a few
  steps of a tiny model; with ``--base english``, two steps of the base's own size); ``pip`` says
  what it would install and does nothing. In Python blocks ``charrnn.train`` takes TRAIN_OPTIONS
  over the page's own options. ``charrnn`` itself is this checkout's, each command forked from one
  warm process (cli_server.py) that imported torch once.

Adding a page
  A page without a row in PAGES runs as above. A page that needs more adds a row, e.g.
      PAGES["docs/serve.md"] = Page(setup=live_server, needs=("fastapi", "uvicorn"))
  ``setup`` is a context manager factory called with the work folder: it makes what the page
  needs (a server on 127.0.0.1, files of its own), yields environment variables for the page's
  blocks (say ``{"CHARRNN_URL": url}``) and cleans up when the page is done. ``needs`` lists
  modules whose absence skips the page with the reason; ``timeout`` is per block, in seconds.
  ``run_by`` names the test that runs a page's examples its own way instead (docs/serve.md's
  start a server: tests/serving/test_serve_docs.py).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import TINY

ROOT = Path(__file__).resolve().parents[1]
CLI_SERVER = Path(__file__).resolve().parent / "cli_server.py"
README_LIMIT = 8000
TRAIN_FLAGS = [*TINY, "--steps", "10", "--eval-every", "5"]
# A run from the base trains the base's own size (sizes as flags are refused): a few steps of it.
BASE_TRAIN_FLAGS = ["--steps", "2", "--eval-every", "2", "--val-tokens", "256"]
TRAIN_OPTIONS = dict(
    layers=1,
    hidden=32,
    embed=16,
    seq_len=16,
    batch_size=8,
    dropout=0.0,
    lr=1e-2,
    weight_decay=0.01,
    steps=10,
    eval_every=5,
)
CORPUS_COPIES = ("corpus.txt", "play.txt", "scene.txt", "other.txt", "novel.txt", "plays/a.txt", "plays/b.txt")


@dataclass(frozen=True)
class Page:
    setup: Callable[[Path], contextlib.AbstractContextManager[dict[str, str]]] | None = None
    needs: tuple[str, ...] = ()
    timeout: int = 120
    # A page whose examples another test runs in its own way (say, against a server it starts).
    run_by: str | None = None


PAGES: dict[str, Page] = {
    # Its `charrnn serve` blocks start a server and the other blocks talk to it (port substituted).
    "docs/serve.md": Page(run_by="tests/serving/test_serve_docs.py"),
}

SHELL_PRELUDE = """set -euo pipefail
charrnn() {
    if [ "${1-}" != train ]; then command charrnn "$@"
    elif [[ " $* " == *" --base english "* ]]; then command charrnn "$@" $BASE_TRAIN_FLAGS
    else command charrnn "$@" $TRAIN_FLAGS; fi
}
torchrun() { command torchrun "$@" $TRAIN_FLAGS; }
pip() { echo "test_docs: not run: pip $*" >&2; }
"""

PYTHON_PRELUDE = """import json, os
import charrnn.api
_train = charrnn.api.train
charrnn.api.train = lambda *a, **k: _train(*a, **{**k, **json.loads(os.environ["TRAIN_OPTIONS"])})
"""

BLOCK = re.compile(r"^```(sh|bash|python)([^\n]*)\n(.*?)^```", re.M | re.S)


def pages() -> list[str]:
    return ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]


def blocks(page: str) -> list[tuple[str, str]]:
    """(language, code) of every block the suite runs, in page order."""
    text = (ROOT / page).read_text(encoding="utf-8")
    return [(m[1], m[3]) for m in BLOCK.finditer(text) if "no-test" not in m[2].split()]


@pytest.fixture(scope="session")
def shims(tmp_path_factory) -> Iterator[Path]:
    """A folder for the front of PATH: `charrnn` (this checkout's, forked from a warm process by
    cli_server.py, so a command does not pay torch's import) and `torchrun`."""
    bin_dir = tmp_path_factory.mktemp("docs-bin")
    sock = bin_dir / "charrnn.sock"
    server = subprocess.Popen(
        [sys.executable, str(CLI_SERVER), str(sock)], stdout=subprocess.PIPE, env=_env(bin_dir, {})
    )
    try:
        assert server.stdout.readline() == b"ready\n", "cli_server.py did not start"
        for name, command in (("charrnn", f'"{CLI_SERVER}" "{sock}"'), ("torchrun", "-m torch.distributed.run")):
            shim = bin_dir / name
            shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" {command} "$@"\n')
            shim.chmod(0o755)
        yield bin_dir
    finally:
        server.kill()
        server.wait()


@pytest.fixture(scope="session")
def workspace(tmp_path_factory, shims) -> Path:
    """The work folder every page starts from (see the module docstring)."""
    work = tmp_path_factory.mktemp("docs-work")
    demo = sorted((ROOT / "charrnn" / "demo").glob("*.fountain"))[0]
    shutil.copytree(ROOT / "examples", work / "examples")  # pages run examples/ as from a checkout
    for name in CORPUS_COPIES:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(demo, work / name)
    r = subprocess.run(
        ["charrnn", "train", *TRAIN_FLAGS, "--quiet"], cwd=work, capture_output=True, text=True, env=_env(shims, {})
    )
    assert r.returncode == 0, r.stderr
    return work


def _env(bin_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    """The shims first on PATH, this checkout first on PYTHONPATH."""
    path = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {
        **os.environ,
        "PATH": path,
        "PYTHONPATH": pythonpath,
        "PYTHONUNBUFFERED": "1",
        "TRAIN_FLAGS": " ".join(TRAIN_FLAGS),
        "BASE_TRAIN_FLAGS": " ".join(BASE_TRAIN_FLAGS),
        "TRAIN_OPTIONS": json.dumps(TRAIN_OPTIONS),
        **extra,
    }


@contextlib.contextmanager
def _no_setup(work: Path) -> Iterator[dict[str, str]]:
    yield {}


@pytest.mark.parametrize("page", pages())
def test_every_example_on_the_page_runs(page, workspace, shims, tmp_path):
    spec = PAGES.get(page, Page())
    if spec.run_by is not None:
        assert (ROOT / spec.run_by).is_file(), f"{page}: {spec.run_by} is missing"
        pytest.skip(f"{page}'s examples run in {spec.run_by}")
    for module in spec.needs:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{page} needs {module}")
    found = blocks(page)
    if not found:
        pytest.skip(f"{page} has no examples to run")
    work = tmp_path / "work"
    shutil.copytree(workspace, work, symlinks=True)
    with (spec.setup or _no_setup)(work) as extra:
        env = _env(shims, extra)
        for i, (lang, code) in enumerate(found):
            cmd = (
                ["bash", "-c", SHELL_PRELUDE + code]
                if lang in ("sh", "bash")
                else [sys.executable, "-c", PYTHON_PRELUDE + code]
            )
            r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env, timeout=spec.timeout)
            assert r.returncode == 0, f"{page}, block {i + 1} ({lang}) failed:\n{code}\n--- stderr:\n{r.stderr[-3000:]}"


def test_readme_is_short_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme) <= README_LIMIT, f"README.md is {len(readme)} characters (at most {README_LIMIT})"
    for page in (ROOT / "docs").glob("*.md"):
        assert f"docs/{page.name}" in readme, f"README.md does not link docs/{page.name}"
