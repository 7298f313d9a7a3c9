"""Corpus preparation at scale: MB/s and peak memory on a generated text of about 1 GB.

The text is the shared corpora repeated until it reaches ``--size-mb``. Measured, each in its
own process (peak RSS from the kernel's accounting for that process alone):
  - naive: the usual char-rnn way, the whole file read into memory and encoded there (baseline);
  - cold: charrnn's streaming preparation into its memory-mapped token cache;
  - warm: the same call again, served from the cache;
  - train: a short real training run on the prepared corpus (``charrnn train``).
Usage: python bench/prepare.py [--size-mb 1024] [--vocab char|bpe|unigram] [--keep]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CORPORA, emit  # noqa: E402

NAIVE = """
import sys, numpy as np
text = open(sys.argv[1], encoding="utf-8").read()
chars = sorted(set(text))
lookup = np.zeros(0x110000, dtype=np.uint8)
lookup[[ord(c) for c in chars]] = np.arange(len(chars))
ids = lookup[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]
"""

PREPARE = """
import sys
from pathlib import Path
from charrnn.data.prepare import VocabSpec, prepare
data = prepare([sys.argv[1]], Path(sys.argv[2]), float(sys.argv[3]), VocabSpec(sys.argv[4]))
print(len(data.train) + len(data.val))
"""


def make_corpus(path: Path, size_mb: int) -> int:
    parts = [p.read_bytes() for p in sorted(CORPORA.glob("*.txt")) + sorted(CORPORA.glob("*.tex"))]
    target, written = size_mb << 20, 0
    with open(path, "wb") as f:
        while written < target:
            for part in parts:
                f.write(part)
                written += len(part)
    return written


def measure(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process, read with wait4 for that child alone."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"error: {' '.join(cmd[:4])} ... failed")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--vocab", default="char", choices=["char", "bpe", "unigram"])
    ap.add_argument("--val-frac", type=float, default=0.0005, help="small, so validation stays quick on 1 GB")
    ap.add_argument("--dir", default=None, help="where the big file goes (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        big = Path(tmp) / "big.txt"
        size = make_corpus(big, args.size_mb)
        mb = size / 2**20
        common = dict(bench="prepare", size_mb=round(mb), vocab=args.vocab)
        if args.vocab == "char":
            s, rss = measure([sys.executable, "-c", NAIVE, str(big)])
            emit(
                **common, who="naive_in_memory", seconds=round(s, 2), mb_per_s=round(mb / s, 1), peak_rss_mb=round(rss)
            )
        out = Path(tmp) / "run"
        prep = [sys.executable, "-c", PREPARE, str(big), str(out / ".cache"), str(args.val_frac), args.vocab]
        s, rss = measure(prep)
        emit(**common, who="charrnn_cold", seconds=round(s, 2), mb_per_s=round(mb / s, 1), peak_rss_mb=round(rss))
        s, rss = measure(prep)
        emit(**common, who="charrnn_warm_cache", seconds=round(s, 2), peak_rss_mb=round(rss))
        train = [
            sys.executable,
            "-m",
            "charrnn",
            "train",
            str(big),
            "--preset",
            "tiny",
            "--steps",
            "50",
            "--val-frac",
            str(args.val_frac),
            "--vocab",
            args.vocab,
            "--out",
            str(out),
            "--quiet",
        ]
        s, rss = measure(train)
        emit(**common, who="charrnn_train_50_steps", seconds=round(s, 2), peak_rss_mb=round(rss))


if __name__ == "__main__":
    main()
