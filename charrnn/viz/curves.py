"""Training curves: train and val bits per character of one or more runs, against step and time.

Read from each run's ``metrics.jsonl`` (the trainer appends one line per log step), drawn with
matplotlib's object API on a figure of our own, so no display or GUI backend is ever needed.
matplotlib is an optional extra (``pip install 'charrnn[plot]'``): only this command needs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from charrnn.errors import CharrnnError

METRICS = "metrics.jsonl"
FORMATS = (".png", ".svg", ".pdf")
SIZE_INCHES = (12.0, 4.5)
DPI = 100


@dataclass(frozen=True)
class Curves:
    """One run's logged points; val points exist only at evaluation steps."""

    name: str
    steps: list[int]
    seconds: list[float]
    train: list[float]
    val_steps: list[int]
    val_seconds: list[float]
    val: list[float]


def read_run(path: Path) -> Curves:
    """A run directory (or its metrics file) as curves; a torn last line (a run killed
    mid-write) is ignored, any other unreadable line is an error."""
    path = Path(path)
    metrics = path / METRICS if path.is_dir() else path
    if not metrics.is_file():
        raise CharrnnError(f"{path}: no {METRICS} here (give a run directory written by charrnn train)")
    try:
        lines = metrics.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CharrnnError(f"{metrics}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append((int(row["step"]), float(row["elapsed"]), row["train_bpc"], row.get("val_bpc")))
        except (ValueError, KeyError, TypeError):
            if n == len(lines):
                break
            raise CharrnnError(f"{metrics}:{n}: not a charrnn metrics line") from None
    if not rows:
        raise CharrnnError(f"{metrics}: no metrics logged yet")
    vals = [r for r in rows if r[3] is not None]
    name = metrics.parent.name if metrics.name == METRICS else metrics.stem
    return Curves(
        name=name or str(metrics.parent),
        steps=[r[0] for r in rows],
        seconds=[r[1] for r in rows],
        train=[float(r[2]) for r in rows],
        val_steps=[r[0] for r in vals],
        val_seconds=[r[1] for r in vals],
        val=[float(r[3]) for r in vals],
    )


def _time_unit(longest_s: float) -> tuple[str, float]:
    """Seconds, minutes or hours, whichever keeps the axis numbers readable."""
    if longest_s < 120:
        return "s", 1.0
    if longest_s < 2 * 3600:
        return "min", 60.0
    return "h", 3600.0


def _unique_names(runs: list[Curves], paths: list[Path]) -> list[str]:
    """Run names for the legend, falling back to the paths given where names repeat."""
    names = [r.name for r in runs]
    return [str(p) if names.count(n) > 1 else n for n, p in zip(names, paths)]


def plot_runs(paths: list[Path], out: Path, title: str | None = None) -> Path:
    """Draw every run's curves side by side (by step, by wall time) and save to ``out``."""
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise CharrnnError(f"-o {out}: use one of {', '.join(FORMATS)}")
    if not paths:
        raise CharrnnError("give at least one run directory")
    runs = [read_run(p) for p in paths]
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise CharrnnError("plot needs matplotlib: pip install 'charrnn[plot]'") from None

    unit, scale = _time_unit(max(r.seconds[-1] for r in runs))
    fig = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    by_step, by_time = fig.subplots(1, 2, sharey=True)
    for run, label in zip(runs, _unique_names(runs, paths)):
        line = by_step.plot(run.steps, run.train, linewidth=1, alpha=0.6, linestyle="--")[0]
        colour = line.get_color()
        by_time.plot([s / scale for s in run.seconds], run.train, linewidth=1, alpha=0.6, linestyle="--", color=colour)
        if run.val:
            by_step.plot(run.val_steps, run.val, marker="o", markersize=3, color=colour)
            by_time.plot([s / scale for s in run.val_seconds], run.val, marker="o", markersize=3, color=colour)
        best = f", best val {min(run.val):.3f}" if run.val else ""
        # One legend entry per run; the line styles are explained in the axis titles.
        by_time.plot([], [], color=colour, label=f"{label}{best}")
    by_step.set_xlabel("step")
    by_time.set_xlabel(f"training time ({unit})")
    by_step.set_ylabel("bits per character")
    by_step.set_title("by step (dashed: train, solid: val)")
    by_time.set_title("by wall time (dashed: train, solid: val)")
    for ax in (by_step, by_time):
        ax.grid(True, alpha=0.3)
    by_time.legend(loc="upper right", fontsize="small")
    fig.suptitle(title or "charrnn training curves")
    try:
        fig.savefig(out)
    except OSError as e:
        raise CharrnnError(f"cannot write {out} ({e.strerror or e})") from None
    return out
