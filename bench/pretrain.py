"""The English base model's recipe: pretrain on ../shared/corpora/pg-english/, resumable in chunks.

    python bench/pretrain.py --out checkpoints/base-english --chunk 2h   # again until it says done

Each call trains until the chunk's time is up (then the run saves last.pt and the next call
resumes it exactly) or the run is finished. The corpus is the manifest's books, each checked
against its sha256, in the manifest's order with four held-back books last: the validation split
is exactly those books (two plays, two novels), so the base's val bpc is on text it never read.
The run is seeded and stops at a fixed step count, so on one kind of CPU every chunking of it
gives the same weights bit for bit.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "corpora"))
import catalogue  # noqa: E402

PG = catalogue.SHARED / "pg-english"
# Held back for validation, by e-book number: two plays and two novels of the corpus's kinds.
HELD_BACK = ("3618", "2542", "2852", "768")
STEPS = 12_000
FLAGS = [
    "--preset",
    "small",
    "--model",
    "lstm",
    "--layers",
    "2",
    "--hidden",
    "512",
    "--embed",
    "128",
    "--dropout",
    "0",
    "--seq-len",
    "100",
    "--batch-size",
    "32",
    "--lr",
    "1e-2",
    "--weight-decay",
    "0.1",
    "--steps",
    str(STEPS),
    "--patience",
    "0",
    "--seed",
    "1337",
    "--device",
    "cpu",
    "--precision",
    "float32",
]


def books() -> tuple[list[Path], list[Path], str]:
    """The training books and the held-back books, checked; the manifest's sha256."""
    manifest = PG / "MANIFEST.tsv"
    with open(manifest, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        data = (PG / row["file"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != row["sha256"]:
            sys.exit(f"error: {row['file']} differs from MANIFEST.tsv's sha256")
    train = [PG / r["file"] for r in rows if r["ebook_number"] not in HELD_BACK]
    held = [PG / r["file"] for n in HELD_BACK for r in rows if r["ebook_number"] == n]
    return train, held, hashlib.sha256(manifest.read_bytes()).hexdigest()


def chars(paths: list[Path]) -> int:
    return sum(len(p.read_text(encoding="utf-8")) for p in paths)


def train_chunk(out: Path, seconds: float | None) -> int:
    """One chunk of training: a fresh run, or the saved one resumed; the trainer's exit code."""
    train, held, _ = books()
    if (out / "last.pt").is_file():
        args = ["train", "--resume", str(out)]
    else:
        total = chars(train) + chars(held)
        # The last val_frac of the text is validation: exactly the held-back books' characters.
        args = ["train", *map(str, train + held), *FLAGS, "--val-frac", repr(chars(held) / total), "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", *args])
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the trainer saves last.pt after this step and exits 143
        proc.wait()
    return proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("checkpoints/base-english"))
    parser.add_argument(
        "--chunk", default=None, help="stop (resumably) after this long, e.g. 2h (default: run to the end)"
    )
    a = parser.parse_args()
    from charrnn.config import parse_duration

    seconds = parse_duration(a.chunk) if a.chunk else None
    start = time.monotonic()
    code = train_chunk(a.out, seconds)
    state = "chunk" if code == 128 + signal.SIGTERM else "done" if code == 0 else "failed"
    print(
        json.dumps(
            {
                "bench": "pretrain",
                "out": str(a.out),
                "state": state,
                "exit": code,
                "seconds": round(time.monotonic() - start, 1),
                "pid": os.getpid(),
            }
        )
    )
    sys.exit(0 if state != "failed" else 1)


if __name__ == "__main__":
    main()
