"""The commands that look at what training made: ``info`` and ``eval`` of a checkpoint, ``viz``
of a text read through it, ``plot`` of runs' curves, and ``export`` of a model for other
runtimes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from charrnn.cli.errors import check_unknown, fail
from charrnn.errors import CharrnnError

CHECKPOINT_HELP = "Checkpoint file or run directory."


def info(checkpoint_path: Path = typer.Argument(..., metavar="CHECKPOINT", help=CHECKPOINT_HELP)) -> None:
    """Model size, vocabulary, steps trained and validation bpc of a checkpoint."""
    try:
        from charrnn.model import checkpoint

        rows = checkpoint.describe(checkpoint.load(checkpoint_path))
        for k, v in rows:
            print(f"{k:<14}{v}")
    except CharrnnError as e:
        fail(str(e))


def evaluate(
    checkpoint_path: Path = typer.Argument(..., metavar="CHECKPOINT", help=CHECKPOINT_HELP),
    text: list[str] = typer.Argument(..., help="Text files or directories, or - for stdin."),
    as_json: bool = typer.Option(False, "--json", help="One machine-readable JSON line."),
    unknown: str = typer.Option(
        "error",
        "--unknown",
        help="Characters outside the vocabulary: error | skip (drop and count them), as for sample.",
    ),
    skip_unknown: bool = typer.Option(False, "--skip-unknown", hidden=True, help="The old spelling of --unknown skip."),
    keep_gutenberg: bool | None = typer.Option(
        None,
        "--keep-gutenberg/--no-keep-gutenberg",
        help="Score a Project Gutenberg e-book's header and licence too, or only its text (default: as the model "
        "was trained).",
    ),
    dynamic: bool = typer.Option(
        False,
        "--dynamic",
        help="Also score it with dynamic evaluation: a copy of the model takes a gradient step "
        "after each segment it has scored.",
    ),
    segment: int | None = typer.Option(None, help="Tokens per dynamic-evaluation segment (default 50)."),
    dynamic_lr: float | None = typer.Option(None, help="Step size of the dynamic update (default: rms 3e-4, sgd 0.3)."),
    dynamic_decay: float | None = typer.Option(
        None, help="Pull back toward the trained weights per step, 0..1 (default: rms 0.003, sgd 0.003)."
    ),
    dynamic_method: str | None = typer.Option(None, help="rms (Krause et al. 2018, default) | sgd."),
    stats_text: str | None = typer.Option(
        None,
        help="Training-like text for the rms update's gradient statistics (default: the start of the "
        "checkpoint's own training corpus).",
    ),
) -> None:
    """Bits per character (and per token, and perplexity) of any text under a trained model."""
    try:
        check_unknown(unknown)
        from charrnn.evaluation.dynamic import rule_from_flags

        rule = rule_from_flags(dynamic, dynamic_method, dynamic_lr, dynamic_decay, segment)
        if stats_text is not None and rule is None:
            raise CharrnnError("--stats-text applies only with --dynamic")
        from charrnn.evaluation.report import score_files

        skip = skip_unknown or unknown == "skip"
        result = score_files(checkpoint_path, text, skip, keep_gutenberg, rule, stats_text, _note_skipped)
        if as_json:
            print(json.dumps(result))
        else:
            width = max(16, *(len(k) + 2 for k in result))
            for k, v in result.items():
                print(f"{k:<{width}}{v}")
    except CharrnnError as e:
        fail(str(e))


def _note_skipped(skipped: list[str]) -> None:
    from charrnn.data.corpus import skipped_note

    if skipped:
        print(skipped_note(skipped), file=sys.stderr)


def export(
    checkpoint_path: Path = typer.Argument(..., metavar="CHECKPOINT", help=CHECKPOINT_HELP),
    output: Path = typer.Option(Path("model.onnx"), "--output", "-o", help="File to write."),
    fmt: str = typer.Option(
        "onnx", "--format", help="onnx (the only format for now; needs: pip install 'charrnn[onnx]')."
    ),
) -> None:
    """Write a trained model as an ONNX graph (vocabulary and settings in its metadata) for
    onnxruntime and other runtimes outside Python."""
    try:
        from charrnn.export.onnx import export_checkpoint

        print(f"wrote {export_checkpoint(checkpoint_path, output, fmt)}", file=sys.stderr)
    except CharrnnError as e:
        fail(str(e))


def plot(
    runs: list[Path] = typer.Argument(
        ..., metavar="RUN_DIR...", help="Run directories (or their metrics.jsonl files) to overlay."
    ),
    output: Path = typer.Option(Path("curves.png"), "--output", "-o", help="Image to write: .png, .svg or .pdf."),
    title: str | None = typer.Option(None, help="Figure title."),
) -> None:
    """Train and val bits/char against step and wall time, several runs overlaid (needs matplotlib)."""
    try:
        from charrnn.viz.curves import plot_runs

        print(f"wrote {plot_runs(runs, output, title)}", file=sys.stderr)
    except CharrnnError as e:
        fail(str(e))


def viz(
    checkpoint_path: Path = typer.Argument(..., metavar="CHECKPOINT", help=CHECKPOINT_HELP),
    text: str = typer.Argument(..., help="Text file to read through the model, or - for stdin."),
    output: Path = typer.Option(Path("viz.html"), "--output", "-o", help="HTML page to write."),
    unit: list[str] = typer.Option(
        [], help="LAYER:UNIT (from 0; cell state for LSTMs) or LAYER:UNIT:h|c to offer on the page (repeatable)."
    ),
    length: int = typer.Option(2000, min=1, max=50_000, help="Characters of the text to show."),
    offset: int = typer.Option(0, min=0, help="Characters of the text to skip first."),
    top: int = typer.Option(5, min=1, max=100, help="Units listed per feature."),
    unknown: str = typer.Option("error", help="Characters outside the vocabulary: error | skip."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not print the unit ranking."),
) -> None:
    """An HTML page of the text coloured by surprisal or by any unit, with the units that track
    quotes, line position and speaker cues found for you; hover a character for the predictions."""
    try:
        check_unknown(unknown)
        from charrnn.viz.page import write_page

        ranking = write_page(checkpoint_path, text, output, unit, length, offset, top, unknown)
        if not quiet:
            for feature, scored in ranking.items():
                best = ", ".join(f"{u.name} (r={r:+.2f})" for u, r in scored[:3])
                print(f"{feature:<22}{best}", file=sys.stderr)
        print(f"wrote {output}", file=sys.stderr)
    except CharrnnError as e:
        fail(str(e))
