"""A real `charrnn serve` in a subprocess on 127.0.0.1, for the server, page and docs tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


class Server:
    """`charrnn serve ARGS --port 0`: the URL from its start line, its stderr lines as they come."""

    def __init__(self, *args: str, cwd: Path | None = None, env: dict | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "charrnn", "serve", *map(str, args), "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: list[str] = []
        self._started = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._started.wait(60) or not any(line.startswith("charrnn serve: http://") for line in self.lines):
            self.proc.kill()
            raise RuntimeError(f"server did not start: {''.join(self.lines)}")
        start = next(line for line in self.lines if line.startswith("charrnn serve: http://"))
        match = re.search(r"(http://\S+) \(models: (.*)\)", start)
        self.url, self.models = match.group(1), match.group(2).split(", ")
        self.port = int(self.url.rsplit(":", 1)[1])

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            if line.startswith("charrnn serve: http://") or self.proc.poll() is not None:
                self._started.set()
        self._started.set()

    def log_lines(self, pattern: str) -> list[str]:
        return [line for line in self.lines if re.search(pattern, line)]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> tuple[int, float]:
        """Send ``sig``; the exit code and the seconds it took to exit."""
        start = time.perf_counter()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        return code, time.perf_counter() - start

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def ascii_run(run_dir: Path) -> Path:
    """A run directory holding a small untrained LSTM over printable ASCII and newline: any
    English prompt (a screenplay, the docs' examples) is in its vocabulary, and it costs no
    training."""
    import torch

    from charrnn.data.vocab import CharVocab
    from charrnn.model import checkpoint
    from charrnn.model.network import CharRNN, ModelConfig

    torch.manual_seed(0)
    vocab = CharVocab("\n" + "".join(chr(c) for c in range(32, 127)))
    model = CharRNN(ModelConfig(vocab_size=vocab.size, layers=1, hidden=32, embed=16, dropout=0.0))
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint.save(
        {"model_config": model.cfg.to_dict(), "vocab": vocab.to_state(), "state_dict": model.state_dict()},
        run_dir / "best.pt",
    )
    return run_dir
