"""The training progress bar and summary table, always on stderr so stdout stays clean."""

from __future__ import annotations

from typing import Any, TypedDict

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

stderr = Console(stderr=True)


class _Fields(TypedDict):
    """The training bar's text fields, as its columns show them."""

    step: str
    train: str
    val: str
    cps: str


class TrainProgress:
    """A bar whose completion is the run's progress (by steps, epochs or time budget)."""

    def __init__(self, enabled: bool, total_steps: int | None) -> None:
        self.enabled = enabled
        self.total_steps = total_steps
        self.fields: _Fields = {"step": "0", "train": "-", "val": "-", "cps": "-"}
        self._progress = Progress(
            TextColumn("step {task.fields[step]}"),
            BarColumn(),
            TextColumn("train {task.fields[train]}  val {task.fields[val]} bpc  {task.fields[cps]} chars/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=stderr,
            transient=False,
            disable=not enabled,
        )
        self._task = self._progress.add_task("train", total=1.0, **self.fields)
        self._started = False

    def __enter__(self) -> TrainProgress:
        if self.enabled:
            self._progress.start()
            self._started = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        if self._started:
            self._progress.stop()
            self._started = False

    def update(
        self, step: int, progress: float, train_bpc: float | None, val_bpc: float | None, cps: float | None
    ) -> None:
        if not self.enabled:
            return
        total = f"/{self.total_steps}" if self.total_steps else ""
        self.fields["step"] = f"{step}{total}"
        if train_bpc is not None:
            self.fields["train"] = f"{train_bpc:.3f}"
        if val_bpc is not None:
            self.fields["val"] = f"{val_bpc:.3f}"
        if cps is not None:
            self.fields["cps"] = f"{cps:,.0f}"
        self._progress.update(self._task, completed=min(1.0, progress), **self.fields)


class PrepareProgress:
    """Corpus preparation: one bar per pass over the files (hashing, scanning, encoding), in MB/s."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("{task.description:<28}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=stderr,
            transient=True,
            disable=not enabled,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> PrepareProgress:
        if self.enabled:
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self._progress.stop()

    def phase(self, name: str, total_bytes: int) -> None:
        if not self.enabled:
            return
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(name, total=total_bytes)

    def advance(self, nbytes: int) -> None:
        if self.enabled and self._task is not None:
            self._progress.advance(self._task, nbytes)


def summary(result: dict[str, Any], quiet: bool) -> None:
    """The end-of-run table: what was trained, how well, and where it was saved."""
    if quiet:
        return
    table = Table(title="charrnn training summary", show_header=False)

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    steps = f"{result['steps']:,}" + (" (stopped early: val bpc stopped improving)" if result["stopped_early"] else "")
    best = fmt(result["best_val_bpc"])
    if result["best_val_bpc"] is not None:
        best += f" (step {result['best_step']:,}{' of the first run' if result.get('best_in_first_run') else ''})"
    rows = [
        ("steps", steps),
        ("epochs", f"{result['epochs']:.2f}"),
        ("time", f"{result['elapsed']:.1f} s"),
        ("chars/s", f"{result['chars_per_s']:,.0f}"),
        ("parameters", f"{result['parameters']:,}"),
        ("last train bpc", fmt(result["train_bpc"])),
        ("last val bpc", fmt(result["last_val_bpc"])),
        ("best val bpc", best),
        ("best checkpoint", result["best"]),
        ("last checkpoint", result["last"]),
    ]
    if "first_run" in result:
        f = result["first_run"]
        rows.insert(
            3,
            (
                "first run",
                f"{f['steps']:,} steps, {f['elapsed']:.1f} s, stopped early; "
                f"best {fmt(f['best_val_bpc'])} (step {f['best_step']:,})",
            ),
        )
    for k, v in rows:
        table.add_row(k, v)
    stderr.print(table)


class LateBar:
    """A bar for work of a known number of steps that shows itself only once the work has taken
    over ``after`` seconds: a quick adaptation stays silent, a long one says how far it is."""

    def __init__(self, description: str, total: int, enabled: bool = True, after: float = 1.0) -> None:
        import time

        self._clock = time.monotonic
        self._start = self._clock()
        self.after = after
        self.enabled = enabled
        self.done = 0
        self._progress = Progress(
            TextColumn(f"{description:<20}"),
            BarColumn(),
            TextColumn("{task.completed:,}/{task.total:,} segments"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=stderr,
            transient=True,
        )
        self._task = self._progress.add_task(description, total=total)
        self._shown = False

    def __enter__(self) -> LateBar:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._shown:
            self._progress.stop()

    def advance(self) -> None:
        self.done += 1
        if not self.enabled:
            return
        if not self._shown and self._clock() - self._start > self.after:
            self._progress.start()
            self._shown = True
        if self._shown:
            self._progress.update(self._task, completed=self.done)
