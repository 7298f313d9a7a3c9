"""Data-parallel scaling: one process against N torchrun ranks (gloo on CPU, NCCL on GPUs).

Same model, same global batch, same wall-clock budget; throughput is the trainer's own
chars/s (median over log intervals, validation excluded). Scaling efficiency is
(N-rank chars/s) / (N x one-process chars/s). On a 2-core CPU two ranks share the cores the
single process already uses, so expect little gain there; the number is still worth knowing.
Usage: python bench/ddp.py [--nproc 2] [--seconds 90] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import corpus, emit  # noqa: E402


def run(nproc: int, path: Path, seconds: float, device: str, flags: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as out:
        train = [
            "-m",
            "charrnn",
            "train",
            str(path),
            "--time",
            f"{seconds}s",
            "--device",
            device,
            "--eval-every",
            "1000000",
            "--out",
            out,
            "--quiet",
            *flags,
        ]
        if nproc == 1:
            cmd = [sys.executable, *train]
        else:
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node",
                str(nproc),
                *train,
            ]
        subprocess.run(cmd, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        lines = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    speed = statistics.median(line["chars_per_s"] for line in lines[1:] or lines)
    return {"chars_per_s": speed, "steps": lines[-1]["step"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=90)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--corpus", default="tinyshakespeare.txt")
    ap.add_argument("--flags", default="", help="extra train flags, e.g. '--preset tiny'")
    args = ap.parse_args()
    path = corpus(args.corpus)
    flags = args.flags.split()
    one = run(1, path, args.seconds, args.device, flags)
    emit(bench="ddp", ranks=1, device=args.device, **one)
    many = run(args.nproc, path, args.seconds, args.device, flags)
    emit(bench="ddp", ranks=args.nproc, device=args.device, **many)
    emit(
        bench="ddp",
        ratio=f"{args.nproc}_ranks/1_process chars/s",
        value=many["chars_per_s"] / one["chars_per_s"],
        efficiency=many["chars_per_s"] / (args.nproc * one["chars_per_s"]),
    )


if __name__ == "__main__":
    main()
