"""The bundled English base model against random weights, on the panel's corpora.

For each corpus: the base's fit (how much of the text its characters spell, and its bits per
character on the corpus's first 16k characters before any training) and what ``--preset auto``
chooses from it. Then, for each time budget, one training from the base (``--base english``)
and one from random weights (``--base none``), both under ``--preset auto``, alone on the
machine: each best.pt scored on the held-out split as bench/auto.py scores (the last 10% of the
text, its first 262,144 characters), and --samples samples of --chars characters at the
default temperature checked for copying (the share of each sample inside spans of 50+
characters found verbatim in the training text); on the demo screenplays also the structure
scores of bench/screenplay.py. One JSON line per cell, appended to --results with the base's
digest (cells already there from the same base are skipped, so an interrupted panel resumes);
``--table`` prints the docs' table.

Usage:
  python bench/base.py --corpora demo,earnest,tinyshakespeare,warpeace --minutes 2 10
  python bench/base.py --corpora quijote,stacks --minutes 10 --starts english
  python bench/base.py --corpora quijote,stacks,kernel --fits-only
  python bench/base.py --table
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from auto import corpus_path, split_text  # noqa: E402
from common import cpu_name, emit  # noqa: E402

from charrnn.api import load  # noqa: E402
from charrnn.evaluation.bpc import score_text  # noqa: E402
from charrnn.evaluation.copying import run_index  # noqa: E402
from charrnn.model import checkpoint  # noqa: E402
from charrnn.screenplay.fountain import structure  # noqa: E402
from charrnn.training.start import Fit, corpus_sample, fit_of, prefers_base  # noqa: E402

STARTS = ("english", "none")


def base_digest() -> str:
    """Which base a cell started from (the bundled file's digest): a new base makes a new panel."""
    return hashlib.sha256(checkpoint.bundled_base().read_bytes()).hexdigest()[:16]


# The seed of every cell run before --seed existed (their rows carry none).
SEED = 1337


def fit_row(path: Path, minutes: list[float]) -> dict:
    """The base's fit to the corpus, and auto's pick for each budget (a list, as ``minutes``)."""
    base = checkpoint.load(checkpoint.bundled_base())
    sample, size = corpus_sample([str(path)], keep_gutenberg=False)
    fit = fit_of(base, sample)
    picks = [prefers_base(fit, m * 60, size) for m in minutes]
    return {
        "coverage": round(fit.coverage, 4),
        "zero_shot_bpc": round(fit.bpc, 3),
        "fit_chars": fit.chars,
        "corpus_bytes": size,
        "auto": picks,
    }


@functools.cache
def corpus_bytes(name: str) -> int:
    """A panel corpus's size as auto measures it (``corpus_sample``), once per corpus."""
    return corpus_sample([str(corpus_path(name))], keep_gutenberg=False)[1]


def auto_pick(row: dict) -> bool:
    """Whether today's rule starts this cell's corpus and budget from the base, from the fit the
    row recorded (``auto`` holds what the rule of the day the cell ran picked). Rows older than
    ``corpus_bytes`` take the corpus's size as auto measures it."""
    size = row.get("corpus_bytes") or corpus_bytes(row["corpus"])
    fit = Fit(coverage=row["coverage"], bpc=row["zero_shot_bpc"], chars=row.get("fit_chars", 0))
    return prefers_base(fit, row["minutes"] * 60, size)


def samples_of(run: Path, count: int, chars: int) -> list[str]:
    model = load(run)
    return [model.generate("", length=chars, seed=seed) for seed in range(1, count + 1)]


def train_cell(
    path: Path, minutes: float, start: str, held_out: str, args: argparse.Namespace, screenplay: bool
) -> dict:
    """One training from ``start`` for ``minutes``, scored, sampled and checked for copying; the
    run directory is kept under ``--keep`` (for bench/screenplay.py's longer samples)."""
    kept = args.keep / f"{path.stem}-{minutes:g}m-{start}-seed{args.seed}" if args.keep else None
    if kept:
        kept.mkdir(parents=True, exist_ok=True)
    with contextlib.nullcontext(str(kept)) if kept else tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "charrnn", "train", str(path), "--time", f"{minutes * 60:g}s", "--out", out]
        cmd += ["--base", start, "--seed", str(args.seed)]
        log = Path(out) / "stderr.txt"
        with open(log, "w") as err:
            done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=err)
        if done.returncode != 0:
            sys.exit(f"error: {' '.join(cmd)} failed:\n{log.read_text()[-2000:]}")
        model = load(Path(out) / "best.pt")
        score, _ = score_text(model.net, model.vocab, held_out, skip_unknown=True)
        last = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()][-1]
        texts = samples_of(Path(out) / "best.pt", args.samples, args.chars)
        index = run_index(checkpoint.load(Path(out) / "best.pt"))
        copied = [index.copying(t).covered for t in texts] if index else []
        shape = structure("\n".join(texts)).as_dict() if screenplay else None
    return {
        "val_bpc": round(score.bpc, 4),
        "steps": last["step"],
        "passes": last["epoch"],
        "copied_fraction": round(statistics.mean(copied), 4) if copied else None,
        "structure": shape,
    }


def run(args: argparse.Namespace) -> None:
    if args.fits_only:
        for name in args.corpora.split(","):
            row = fit_row(corpus_path(name), args.minutes)
            emit(bench="base", corpus=name, minutes=args.minutes, **row, cpu=cpu_name())
        return
    done, digest = set(), base_digest()
    if args.results.is_file():
        rows = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
        done = {
            (r["corpus"], r["minutes"], r["start"], r.get("seed", SEED)) for r in rows if r.get("base_sha256") == digest
        }
    for name in args.corpora.split(","):
        path = corpus_path(name)
        fit = fit_row(path, args.minutes)
        train_text, held_out = split_text(path)
        for minutes, auto in zip(args.minutes, fit.pop("auto")):
            for start in args.starts.split(","):
                if (name, minutes, start, args.seed) in done:
                    continue
                cell = train_cell(path, minutes, start, held_out, args, name == "demo")
                row = {"bench": "base", "corpus": name, "chars": len(train_text), "minutes": minutes, "start": start}
                row["seed"] = args.seed
                row |= {**fit, "auto": auto, "base_sha256": digest, **cell}
                row |= {"cpu": cpu_name(), "date": time.strftime("%Y-%m-%d")}
                emit(**row)
                with open(args.results, "a") as f:
                    f.write(json.dumps(row) + "\n")


def table(results: Path) -> None:
    """Per corpus and budget: val bpc from the base and from random weights, the gain, what auto's
    rule of today picks (and how far its pick is from the better start), and the copied shares."""
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    seed = lambda r: r.get("seed", SEED)
    if len({r.get("base_sha256") for r in rows}) > 1:
        sys.exit(f"error: {results} holds cells of more than one base; one file per base")
    cells = {(r["corpus"], r["minutes"], r["start"], seed(r)): r for r in rows}
    head = (
        "| corpus | minutes | zero-shot bpc | from the base | from random | gain | auto picks | copied (base/random) |"
    )
    print(head)
    print("|---|---|---|---|---|---|---|---|")
    for corpus, minutes, s in dict.fromkeys((r["corpus"], r["minutes"], seed(r)) for r in rows):
        base, rand = cells.get((corpus, minutes, "english", s)), cells.get((corpus, minutes, "none", s))
        if not (base and rand):
            continue
        to_base = auto_pick(base)
        pick = base if to_base else rand
        off = pick["val_bpc"] - min(base["val_bpc"], rand["val_bpc"])
        copies = " / ".join(
            "-" if c["copied_fraction"] is None else f"{c['copied_fraction']:.3f}" for c in (base, rand)
        )
        gain = rand["val_bpc"] - base["val_bpc"]
        picks = f"{'base' if to_base else 'random'} (+{off:.3f})"
        scores = f"{base['val_bpc']:.3f} | {rand['val_bpc']:.3f} | {gain:+.3f}"
        name = corpus if s == SEED else f"{corpus} (seed {s})"
        print(f"| {name} | {minutes:g} | {base['zero_shot_bpc']:.2f} | {scores} | {picks} | {copies} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpora", default="demo,earnest,tinyshakespeare,warpeace")
    ap.add_argument("--minutes", type=float, nargs="+", default=[2.0, 10.0])
    ap.add_argument("--samples", type=int, default=5)
    ap.add_argument(
        "--seed", type=int, default=SEED, help="charrnn train's --seed (a cell is a corpus, budget, start and seed)"
    )
    ap.add_argument("--chars", type=int, default=2000)
    ap.add_argument(
        "--starts",
        default=",".join(STARTS),
        type=lambda v: v if set(v.split(",")) <= set(STARTS) else ap.error(f"--starts: {v!r} is not english, none"),
        help="the starts to train from (english, none or both)",
    )
    ap.add_argument("--results", type=Path, default=Path("base-results.jsonl"))
    ap.add_argument("--keep", type=Path, help="keep each cell's run directory in this folder")
    ap.add_argument("--fits-only", action="store_true", help="only the base's fit and auto's choice per corpus")
    ap.add_argument("--table", action="store_true", help="print the table of the results file and exit")
    args = ap.parse_args()
    if args.table:
        table(args.results)
    else:
        run(args)


if __name__ == "__main__":
    main()
