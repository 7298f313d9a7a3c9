"""docs/serve.md runs: its `charrnn serve` blocks start a real server (on a free port instead of
8000) and every other ```sh and ```python block runs against the latest one, in page order."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

from servers import Server, ascii_run

DOC = Path(__file__).resolve().parents[2] / "docs" / "serve.md"


def blocks() -> list[tuple[str, str]]:
    return re.findall(r"^```(sh|python)\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)


def test_every_example_runs(tmp_path):
    ascii_run(tmp_path / "checkpoints" / "demo")
    found = blocks()
    assert sum(code.startswith("charrnn serve") for _, code in found) >= 1 and len(found) >= 5
    server = None
    try:
        for lang, code in found:
            if code.startswith("charrnn serve"):
                if server is not None:
                    server.stop()
                server = Server(*shlex.split(code)[2:], cwd=tmp_path)
                continue
            code = code.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
            cmd = ["bash", "-e", "-o", "pipefail", "-c", code] if lang == "sh" else [sys.executable, "-c", code]
            r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and r.stdout.strip(), f"{code}\n{r.stdout}\n{r.stderr}"
            assert '"error"' not in r.stdout, r.stdout
    finally:
        if server is not None:
            server.stop()
