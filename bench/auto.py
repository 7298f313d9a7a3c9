"""The panel behind ``--preset auto``: val bits per character reached on each corpus and time
budget by the named presets, by auto, by the plain PyTorch loop of bench/quality.py, and by any
other settings (the sweeps the rule was derived from).

Every cell is one training through the real CLI (or the plain loop), alone on the machine, then
scored the same way: its best.pt on the first EVAL_CHARS characters of the held-out split (the
last 10% of the text charrnn trains on, Gutenberg header and licence left out for both). One
JSON line per cell goes to stdout and to the results file; cells already there are skipped, so
an interrupted panel resumes where it stopped, and ``--table`` prints the table from the file.

Usage:
  python bench/auto.py --corpora demo,earnest --minutes 2 --who 'tiny;small;auto;plain'
  python bench/auto.py --who 'tiny:hidden=384' --minutes 2 --corpora tinyshakespeare
  python bench/auto.py --table
``--who`` takes ';'-separated preset names, ``auto``, ``plain``, or ``PRESET:flag=value,...`` (flags of
``charrnn train``, e.g. ``small:hidden=384,dropout=0.1``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import catalogue, cpu_name, emit, train_plain  # noqa: E402

from charrnn.api import load  # noqa: E402
from charrnn.data.corpus import open_sources, read_text, release  # noqa: E402
from charrnn.data.prepare import split_point  # noqa: E402
from charrnn.evaluation.bpc import evaluate, score_text  # noqa: E402
from charrnn.model import checkpoint  # noqa: E402

# Enough held-out text for a score steady to ~0.001 bpc, and quick to score for every cell.
EVAL_CHARS = 262_144


def corpus_path(name: str) -> Path:
    """A panel corpus by its catalogue name (corpora/catalogue.py; the kernel is built on first use)."""
    if name not in catalogue.PANEL:
        sys.exit(f"error: unknown corpus {name!r}; choose from {', '.join(catalogue.PANEL)}")
    return catalogue.path(name)


def split_text(path: Path) -> tuple[str, str]:
    """The text charrnn trains on and the held-out text every cell is scored on."""
    sources = open_sources([str(path)])
    try:
        text = read_text(sources)
    finally:
        release(sources)
    cut = split_point(len(text), 0.1)
    return text[:cut], text[cut : cut + EVAL_CHARS]


def flags_of(who: str) -> list[str]:
    """``charrnn train`` flags for a ``--who`` entry."""
    if who == "auto" or ":" not in who:
        return ["--preset", who]
    preset, _, extra = who.partition(":")
    flags = ["--preset", preset]
    for pair in extra.split(","):
        key, _, value = pair.partition("=")
        flags += [f"--{key.replace('_', '-')}", value]
    return flags


def _metrics(out: Path) -> list[list[dict]]:
    runs = [out / "first" / "metrics.jsonl", out / "metrics.jsonl"]
    return [[json.loads(line) for line in p.read_text().splitlines()] for p in runs if p.is_file()]


def _val_share(runs: list[list[dict]], chars_per_step: int) -> float:
    """The share of the training clock not spent in steps: validation and checkpoints (a metrics
    line's chars/s leaves them out)."""
    stepping = elapsed = 0.0
    for run in runs:
        prev = 0
        for line in run:
            stepping += (line["step"] - prev) * chars_per_step / max(line["chars_per_s"], 1e-9)
            prev = line["step"]
        elapsed += run[-1]["elapsed"]
    return max(0.0, 1 - stepping / elapsed) if elapsed else 0.0


def run_charrnn(path: Path, seconds: float, who: str, seed: int, held_out: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable,
            "-m",
            "charrnn",
            "train",
            str(path),
            "--time",
            f"{seconds:g}s",
            "--out",
            out,
            "--seed",
            str(seed),
            *flags_of(who),
        ]
        log = Path(out) / "stderr.txt"
        start = time.monotonic()
        with open(log, "w") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
        wall = time.monotonic() - start
        lines = log.read_text().splitlines()
        if status != 0:
            sys.exit(f"error: {' '.join(cmd)} failed:\n" + "\n".join(lines[-5:]))
        runs = _metrics(Path(out))
        model = load(Path(out) / "best.pt")
        score, _ = score_text(model.net, model.vocab, held_out, skip_unknown=True)
        cfg = checkpoint.load(Path(out) / "last.pt")["train_config"]
    speeds = [line["chars_per_s"] for run in runs for line in run[1:] or run]
    return {
        "chose": next((line for line in lines if line.startswith("auto:")), None),
        "flags": " ".join(flags_of(who)),
        "steps": sum(run[-1]["step"] for run in runs),
        "passes": round(sum(run[-1]["epoch"] for run in runs), 3),
        "second_run": len(runs) == 2,
        "val_bpc": round(score.bpc, 4),
        "run_best_val_bpc": min(line["val_bpc"] for run in runs for line in run if line["val_bpc"] is not None),
        "chars_per_s": round(statistics.median(speeds)),
        "max_rss_mb": round(usage.ru_maxrss / 1024),
        "val_share": round(_val_share(runs, cfg["batch_size"] * cfg["seq_len"]), 4),
        "wall_s": round(wall, 1),
        "params": sum(p.numel() for p in model.net.parameters()),
        "tokens": None,
    }


def run_plain(seconds: float, seed: int, train_text: str, held_out: str) -> dict:
    chars = sorted(set(train_text) | set(held_out))
    lookup = {c: i for i, c in enumerate(chars)}
    encode = lambda t: np.fromiter((lookup[c] for c in t), dtype=np.int64, count=len(t))
    device = torch.device("cpu")
    start = time.monotonic()
    model, stats = train_plain(encode(train_text), len(chars), seconds, device, seed=seed)
    score = evaluate(model, encode(held_out), device)
    return {
        "chose": None,
        "flags": "plain nn.LSTM 2x512 loop",
        "steps": stats["steps"],
        "passes": round(stats["passes"], 3),
        "second_run": False,
        "val_bpc": round(score.bpc, 4),
        "run_best_val_bpc": None,
        "chars_per_s": round(stats["chars_per_s"]),
        "max_rss_mb": None,
        "val_share": None,
        "wall_s": round(time.monotonic() - start, 1),
        "params": sum(p.numel() for p in model.parameters()),
        "tokens": None,
    }


def done_cells(results: Path) -> set[tuple]:
    if not results.is_file():
        return set()
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return {(r["corpus"], r["minutes"], r["who"], r["seed"]) for r in rows}


def run_cells(args: argparse.Namespace) -> None:
    done = done_cells(args.results)
    for name in args.corpora.split(","):
        todo = [
            (m, w, s)
            for m in args.minutes
            for w in args.who.split(";")
            for s in args.seeds
            if (name, m, w, s) not in done
        ]
        if not todo:
            continue
        path = corpus_path(name)
        train_text, held_out = split_text(path)
        for minutes, who, seed in todo:
            seconds = minutes * 60
            if who == "plain":
                cell = run_plain(seconds, seed, train_text, held_out)
            else:
                cell = run_charrnn(path, seconds, who, seed, held_out)
            cell["tokens"] = len(train_text)
            row = {
                "bench": "auto",
                "corpus": name,
                "corpus_bytes": path.stat().st_size,
                "minutes": minutes,
                "who": who,
                "seed": seed,
                **cell,
                "held_out_chars": len(held_out),
                "cpu": cpu_name(),
                "date": time.strftime("%Y-%m-%d"),
            }
            emit(**row)
            with open(args.results, "a") as f:
                f.write(json.dumps(row) + "\n")


def table(results: Path) -> None:
    """One row per corpus and budget: each who's val bpc (mean over seeds, with the spread), and
    what auto chose."""
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    whos = list(dict.fromkeys(r["who"] for r in rows))
    cells: dict[tuple, dict[str, list[float]]] = {}
    chose: dict[tuple, str] = {}
    for r in rows:
        cells.setdefault((r["corpus"], r["minutes"]), {}).setdefault(r["who"], []).append(r["val_bpc"])
        if r.get("chose"):
            chose[(r["corpus"], r["minutes"])] = r["chose"].split(" — ")[0].removeprefix("auto: ")
    print("| corpus | minutes | " + " | ".join(whos) + " | auto chose |")
    print("|---|---|" + "---|" * (len(whos) + 1))
    for key, by_who in cells.items():
        values = []
        for w in whos:
            v = by_who.get(w)
            values.append(
                "" if not v else f"{statistics.mean(v):.3f}" + (f" ±{(max(v) - min(v)) / 2:.3f}" if len(v) > 1 else "")
            )
        print(f"| {key[0]} | {key[1]:g} | " + " | ".join(values) + f" | {chose.get(key, '')} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpora", default=",".join(catalogue.PANEL))
    ap.add_argument("--minutes", type=float, nargs="+", default=[2.0])
    ap.add_argument("--who", default="tiny;small;auto;plain", help="';'-separated entries (see the module docstring)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1337])
    ap.add_argument("--results", type=Path, default=Path("auto-results.jsonl"))
    ap.add_argument("--table", action="store_true", help="print the table of the results file and exit")
    args = ap.parse_args()
    if args.table:
        table(args.results)
    else:
        run_cells(args)


if __name__ == "__main__":
    main()
