"""``charrnn train``: the options of ``TRAIN_OPTIONS`` (charrnn.training.config), the run of
``train_run``, the same function the Python API's ``charrnn.train`` calls."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from charrnn.cli.errors import fail
from charrnn.cli.options import takes
from charrnn.errors import CharrnnError, Interrupted
from charrnn.training.config import TRAIN_OPTIONS


@takes(TRAIN_OPTIONS)
def train(**options: Any) -> None:
    """Train a model on a corpus; writes best.pt, last.pt and metrics.jsonl to the run directory."""
    try:
        _train(**options)
    except CharrnnError as e:
        fail(str(e))


def _train(corpus: list[str], out: Path | None, quiet: bool, **options: Any) -> None:
    from charrnn.runtime import distributed
    from charrnn.runtime.progress import summary
    from charrnn.training.run import train_run

    world = distributed.launched()
    try:
        done = train_run(corpus, out=out, quiet=quiet, **options)
    except Interrupted as e:
        if world.main:
            resume = f"saved {e.path}; continue with: charrnn train --resume {e.path.parent}" if e.path else str(e)
            print(f"stopped: {resume}", file=sys.stderr)
        raise typer.Exit(e.exit_code) from None
    if done.main:
        summary(done.result, quiet)
        if not quiet:
            print(f"sample with: charrnn sample {done.out}", file=sys.stderr)
            if done.cfg.tensorboard:
                print(f"curves in TensorBoard: tensorboard --logdir {done.out / 'tensorboard'}", file=sys.stderr)
    distributed.exit_finished(world)
