"""The ``charrnn`` command line: thin commands over the library.

Torch is imported inside the commands, never at module level, so ``charrnn --help`` is instant.
Every user error ends as one line ``error: ...`` on stderr with exit code 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from charrnn.errors import CharrnnError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rendering it with rich costs ~0.2 s of imports per call
    help="Train character-level recurrent language models on any text and sample from them.",
)

# Click's UsageError, whether Typer uses click itself or (newer Typer) its vendored copy.
UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")

def _show_version(value: bool) -> None:
    if value:
        from charrnn._version import __version__

        print(f"charrnn {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_show_version, help="Show the version and exit."),
) -> None:
    """Train character-level recurrent language models on any text and sample from them."""


def _unescape(text: str) -> str:
    """Shell-friendly escapes in --stop/--separator: \\n, \\t and \\\\."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _note_skipped(skipped: list[str]) -> None:
    from charrnn.data.corpus import skipped_note

    if skipped:
        print(skipped_note(skipped), file=sys.stderr)


def _fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


@app.command()
def train(
    corpus: list[str] = typer.Argument(None, help="Text files or directories, or - for stdin. Default: the bundled demo screenplays (run dir checkpoints/demo)."),
    preset: Optional[str] = typer.Option(None, help="auto (default: the size for this corpus, budget and machine) | tiny | small | medium | large; explicit flags override it."),
    model: Optional[str] = typer.Option(None, help="Recurrent cell: lstm | gru | rnn | peephole (peephole LSTM) | cifg (coupled input-forget gate LSTM)."),
    layers: Optional[int] = typer.Option(None, min=1, max=16, help="Stacked recurrent layers."),
    hidden: Optional[int] = typer.Option(None, min=1, max=16384, help="Hidden units per layer."),
    embed: Optional[int] = typer.Option(None, min=1, max=16384, help="Embedding size."),
    dropout: Optional[float] = typer.Option(None, min=0.0, max=0.95, help="Dropout between layers and before the head."),
    weight_drop: Optional[float] = typer.Option(None, min=0.0, max=0.95, help="DropConnect on the recurrent (hidden-to-hidden) weights, a mask per step."),
    tie: Optional[bool] = typer.Option(None, "--tie/--no-tie", help="Tie embedding and output weights (needs --embed == --hidden)."),
    seq_len: Optional[int] = typer.Option(None, min=1, max=100000, help="Truncated BPTT window length."),
    batch_size: Optional[int] = typer.Option(None, min=1, max=65536, help="Parallel streams per step."),
    lr: Optional[float] = typer.Option(None, min=0.0, max=10.0, help="Peak learning rate."),
    min_lr: Optional[float] = typer.Option(None, min=0.0, max=10.0, help="Final learning rate of the cosine decay (default lr/100)."),
    warmup: Optional[int] = typer.Option(None, min=1, max=10**9, help="Linear warm-up steps."),
    weight_decay: Optional[float] = typer.Option(None, min=0.0, max=10.0, help="AdamW weight decay on matrices."),
    grad_clip: Optional[float] = typer.Option(None, min=0.0, max=1e6, help="Global gradient-norm clip."),
    steps: Optional[int] = typer.Option(None, min=1, max=10**12, help="Stop after this many steps."),
    epochs: Optional[float] = typer.Option(None, min=0.0, max=1e6, help="Stop after this many passes over the data."),
    time: Optional[str] = typer.Option(None, "--time", help="Stop after this long, e.g. 90s, 10m, 1h30m."),
    eval_every: Optional[int] = typer.Option(None, min=1, max=10**12, help="Validate every N steps (default 200, spaced out so validation stays under ~4% of the run, and at least once per pass over the text)."),
    patience: Optional[int] = typer.Option(None, min=0, max=10**9, help="Stop once this many validations in a row have not beaten the best val bpc, after the first pass over the text (default 5; 0: never stop early)."),
    log_every: Optional[int] = typer.Option(None, min=1, max=10**12, help="Write a metrics line every N steps."),
    val_frac: Optional[float] = typer.Option(None, min=0.0, max=0.5, help="Last fraction of the text held out for validation."),
    val_tokens: Optional[int] = typer.Option(None, min=0, max=10**15, help="Validate on at most the first N tokens of the validation split (default 131072, about a 1.3 MB corpus's whole split; 0: all of it)."),
    vocab: Optional[str] = typer.Option(None, help="Tokens: char (default) | bpe | unigram (SentencePiece subwords, trained on the training split)."),
    vocab_size: Optional[int] = typer.Option(None, min=1, max=1_000_000, help="Subword vocabulary size for --vocab bpe|unigram (default 1024)."),
    keep_gutenberg: Optional[bool] = typer.Option(None, "--keep-gutenberg", help="Train on a Project Gutenberg e-book's header and licence too (by default only its text between the START and END lines)."),
    seed: Optional[int] = typer.Option(None, min=0, max=2**63 - 1, help="Random seed."),
    device: Optional[str] = typer.Option(None, help="auto | cpu | cuda | mps."),
    precision: Optional[str] = typer.Option(None, help="auto (default: bfloat16 for the LSTM on a CPU with AMX, float32 elsewhere) | float32 | bfloat16 | float16: the forward pass under autocast (weights stay float32)."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default checkpoints/<corpus-name>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (or the RUN_DIR given as corpus) from its last.pt."),
    init_from: Optional[Path] = typer.Option(None, help="Start from this checkpoint's weights (fine-tuning); a fresh run otherwise."),
    tensorboard: Optional[bool] = typer.Option(None, "--tensorboard/--no-tensorboard", help="Also log the metrics for TensorBoard in RUN_DIR/tensorboard (needs: pip install 'charrnn[tensorboard]')."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Train a model on a corpus; writes best.pt, last.pt and metrics.jsonl to the run directory."""
    try:
        _train(**locals())
    except CharrnnError as e:
        _fail(str(e))


def _train(corpus, out, quiet, **options) -> None:
    from charrnn.runtime import distributed
    from charrnn.runtime.progress import summary
    from charrnn.training.run import train_run
    from charrnn.errors import Interrupted

    world = distributed.launched()
    try:
        done = train_run(corpus, out=out, quiet=quiet, **options)
    except Interrupted as e:
        if world.main:
            print(f"stopped: saved {e.path}; continue with: charrnn train --resume {e.path.parent}", file=sys.stderr)
        raise typer.Exit(e.exit_code)
    if done.main:
        summary(done.result, quiet)
        if not quiet:
            print(f"sample with: charrnn sample {done.out}", file=sys.stderr)
            if done.cfg.tensorboard:
                print(f"curves in TensorBoard: tensorboard --logdir {done.out / 'tensorboard'}", file=sys.stderr)
    distributed.exit_finished(world)


class _Out:
    """Writes generated text to stdout, flushing at line ends so it streams through pipes."""

    def write(self, text: str) -> None:
        sys.stdout.write(text)
        if "\n" in text:
            sys.stdout.flush()

    def close(self) -> None:
        sys.stdout.flush()


@app.command()
def sample(
    checkpoint_path: Optional[Path] = typer.Argument(None, metavar="[CHECKPOINT]", help="Checkpoint file or run directory (default: the newest run under ./checkpoints)."),
    length: int = typer.Option(1000, min=0, max=10**9, help="Characters to generate per sample."),
    temp: float = typer.Option(0.8, help="Temperature (> 0): lower is safer, higher is wilder."),
    greedy: bool = typer.Option(False, "--greedy", help="Always take the most likely token."),
    top_k: Optional[int] = typer.Option(None, help="Sample only from the K most likely tokens."),
    top_p: Optional[float] = typer.Option(None, help="Nucleus sampling: the smallest set with probability >= P (0 < P <= 1)."),
    seed: Optional[int] = typer.Option(None, min=0, max=2**63 - 1, help="Seed for a reproducible sample."),
    prime: Optional[str] = typer.Option(None, help="Text the sample continues (printed first)."),
    prime_file: Optional[Path] = typer.Option(None, help="Read the prime text from a file."),
    unknown: str = typer.Option("error", help="Prime characters outside the vocabulary: error | skip."),
    stop: list[str] = typer.Option([], help="End a sample at this string (repeatable; \\n allowed)."),
    keep_stop: bool = typer.Option(False, "--keep-stop", help="Keep the stop string in the output."),
    num_samples: int = typer.Option(1, min=1, max=4096, help="Samples generated together as one batch."),
    separator: str = typer.Option("\\n\\n", help="Written between samples (\\n allowed)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON line per sample."),
    beam_width: Optional[int] = typer.Option(None, min=1, max=1024, help="Beam search for the most likely continuation."),
    fmt: Optional[str] = typer.Option(None, "--format", help="text (streamed; default) | fountain (cleaned into valid Fountain) | html | pdf | fdx (typeset screenplay; needs pip install 'charrnn[screenplay]'). Default: from -o's suffix, else text."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file (atomically) instead of stdout; pdf needs it when stdout is a terminal."),
    title: Optional[str] = typer.Option(None, help="Title for the screenplay's title page (a format other than text)."),
    author: Optional[str] = typer.Option(None, help="Author for the title page."),
    adapt: list[str] = typer.Option([], help="First adapt a copy of the model to this text (repeatable; - for stdin); without --prime the sample continues its last line."),
    adapt_steps: Optional[int] = typer.Option(None, help="At most this many update steps of --adapt (default 300, over at most 3 passes)."),
    save_adapted: Optional[Path] = typer.Option(None, help="Also write the adapted model to this checkpoint file."),
    precision: str = typer.Option("auto", help="auto (bfloat16 where measured faster: an LSTM of hidden >= 512 on a CPU with AMX; float32 elsewhere) | float32 | bfloat16: the weights of each step."),
) -> None:
    """Generate text from a trained model, streamed to stdout (or a typeset screenplay with --format)."""
    try:
        _sample(**locals())
    except CharrnnError as e:
        _fail(str(e))
    except BrokenPipeError:
        _detach_stdout()
        raise typer.Exit(0)
    except OSError as e:
        # stdout full (a disk or /dev/full): say so on stderr, never inside the output file.
        _detach_stdout()
        _fail(f"cannot write the sample to stdout ({e.strerror or e})", code=1)


def _check_unknown(unknown: str) -> None:
    """--unknown of sample and viz, checked before any checkpoint is loaded."""
    if unknown not in ("error", "skip"):
        raise CharrnnError(f"--unknown must be error or skip (got {unknown!r})")


def _detach_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _sample(checkpoint_path, prime, prime_file, unknown, stop, separator, as_json, beam_width, num_samples,
            fmt, output, title, author, adapt, adapt_steps, save_adapted, **o) -> None:
    from charrnn.sampling.options import SampleOptions
    from charrnn.screenplay.typeset import writer

    if not adapt and (adapt_steps is not None or save_adapted is not None):
        raise CharrnnError(f"{'--adapt-steps' if adapt_steps is not None else '--save-adapted'} applies only with --adapt")
    opts = SampleOptions(stops=[_unescape(s) for s in stop], **o)
    opts.check()
    _check_unknown(unknown)
    document = writer(fmt, output, title, author)  # checked before the model loads
    if document is not None and as_json:
        raise CharrnnError("--json writes JSON lines to stdout: not with --format or -o")
    if prime is not None and prime_file is not None:
        raise CharrnnError("give --prime or --prime-file, not both")
    if prime_file is not None:
        from charrnn.data.corpus import decode

        try:
            prime = decode(prime_file.read_bytes(), str(prime_file))
        except OSError as e:
            raise CharrnnError(f"{prime_file}: cannot read ({e.strerror})") from None
    prime = prime or ""

    from charrnn.model import checkpoint
    from charrnn.data.vocab import encode_prime
    from charrnn.cli.output import write_samples

    path = checkpoint.resolve(checkpoint_path) if checkpoint_path else checkpoint.latest_run()
    ckpt = checkpoint.load(path)
    model, vocab = checkpoint.build_model(ckpt)
    prime_ids = encode_prime(vocab, prime, unknown)
    prime_text = vocab.decode(prime_ids)
    if adapt:
        from charrnn.evaluation.adapt import adapt as adapt_model

        adapted = adapt_model(ckpt, model, vocab, adapt, adapt_steps, unknown, save_to=save_adapted)
        model = adapted.model
        if not prime_ids:  # the sample reads the passage's end and continues its last line
            prime_ids, prime_text = adapted.context, adapted.last_line
    write_samples(document or _Out(), model, vocab, opts, prime_ids, prime_text, num_samples, _unescape(separator), as_json,
                  beam_width)


@app.command()
def serve(
    checkpoints: list[str] = typer.Argument(None, metavar="[CHECKPOINT|RUN_DIR]...", help="Models to serve, each named by its run directory (default: the newest run under ./checkpoints)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback only unless asked)."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on (0: any free port, shown on start)."),
    api_key: Optional[str] = typer.Option(None, envvar="CHARRNN_API_KEY", help="Require Authorization: Bearer KEY on /v1 requests (or set CHARRNN_API_KEY)."),
    max_tokens: int = typer.Option(4096, min=1, max=10**7, help="The most tokens one completion may ask for."),
    max_concurrent: int = typer.Option(64, min=1, max=100_000, help="Requests served at once; more are answered 429 with Retry-After."),
    device: str = typer.Option("cpu", help="cpu | cuda | mps | auto."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No line per request on stderr (the start line stays)."),
) -> None:
    """Serve models over an OpenAI-compatible API (POST /v1/completions), with a playground page at /."""
    try:
        _serve(checkpoints, device, host, port, api_key=api_key, max_tokens=max_tokens, max_concurrent=max_concurrent, quiet=quiet)
    except CharrnnError as e:
        _fail(str(e))


def _serve(checkpoints, device, host, port, **settings) -> None:
    try:
        from charrnn.serving import http as server
    except ImportError as e:
        if e.name not in ("fastapi", "uvicorn", "starlette"):
            raise
        raise CharrnnError("charrnn serve needs the serve extra: pip install 'charrnn[serve]'") from None
    from charrnn.runtime.device import pick_device

    state = server.ServerState(server.load_models(checkpoints or []), device=str(pick_device(device)), **settings)
    server.run(state, host, port)


@app.command()
def info(checkpoint_path: Path = typer.Argument(..., metavar="CHECKPOINT", help="Checkpoint file or run directory.")) -> None:
    """Model size, vocabulary, steps trained and validation bpc of a checkpoint."""
    try:
        from charrnn.model import checkpoint

        rows = checkpoint.describe(checkpoint.load(checkpoint_path))
        for k, v in rows:
            print(f"{k:<14}{v}")
    except CharrnnError as e:
        _fail(str(e))


@app.command("eval")
def evaluate_cmd(
    checkpoint_path: Path = typer.Argument(..., metavar="CHECKPOINT", help="Checkpoint file or run directory."),
    text: list[str] = typer.Argument(..., help="Text files or directories, or - for stdin."),
    as_json: bool = typer.Option(False, "--json", help="One machine-readable JSON line."),
    skip_unknown: bool = typer.Option(False, "--skip-unknown", help="Drop (and count) characters outside the vocabulary."),
    keep_gutenberg: Optional[bool] = typer.Option(None, "--keep-gutenberg/--no-keep-gutenberg", help="Score a Project Gutenberg e-book's header and licence too, or only its text (default: as the model was trained)."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Also score it with dynamic evaluation: a copy of the model takes a gradient step after each segment it has scored."),
    segment: Optional[int] = typer.Option(None, help="Tokens per dynamic-evaluation segment (default 50)."),
    dynamic_lr: Optional[float] = typer.Option(None, help="Step size of the dynamic update (default: rms 3e-4, sgd 0.3)."),
    dynamic_decay: Optional[float] = typer.Option(None, help="Pull back toward the trained weights per step, 0..1 (default: rms 0.003, sgd 0.003)."),
    dynamic_method: Optional[str] = typer.Option(None, help="rms (Krause et al. 2018, default) | sgd."),
    stats_text: Optional[str] = typer.Option(None, help="Training-like text for the rms update's gradient statistics (default: the start of the checkpoint's own training corpus)."),
) -> None:
    """Bits per character (and per token, and perplexity) of any text under a trained model."""
    try:
        from charrnn.evaluation.dynamic import rule_from_flags

        rule = rule_from_flags(dynamic, dynamic_method, dynamic_lr, dynamic_decay, segment)
        if stats_text is not None and rule is None:
            raise CharrnnError("--stats-text applies only with --dynamic")
        from charrnn.evaluation.report import score_files

        result = score_files(checkpoint_path, text, skip_unknown, keep_gutenberg, rule, stats_text, _note_skipped)
        if as_json:
            print(json.dumps(result))
        else:
            width = max(16, *(len(k) + 2 for k in result))
            for k, v in result.items():
                print(f"{k:<{width}}{v}")
    except CharrnnError as e:
        _fail(str(e))


@app.command("export")
def export_cmd(
    checkpoint_path: Path = typer.Argument(..., metavar="CHECKPOINT", help="Checkpoint file or run directory."),
    output: Path = typer.Option(Path("model.onnx"), "--output", "-o", help="File to write."),
    fmt: str = typer.Option("onnx", "--format", help="onnx (the only format for now; needs: pip install 'charrnn[onnx]')."),
) -> None:
    """Write a trained model as an ONNX graph (vocabulary and settings in its metadata) for
    onnxruntime and other runtimes outside Python."""
    try:
        from charrnn.export.onnx import export_checkpoint

        print(f"wrote {export_checkpoint(checkpoint_path, output, fmt)}", file=sys.stderr)
    except CharrnnError as e:
        _fail(str(e))


@app.command()
def plot(
    runs: list[Path] = typer.Argument(..., metavar="RUN_DIR...", help="Run directories (or their metrics.jsonl files) to overlay."),
    output: Path = typer.Option(Path("curves.png"), "--output", "-o", help="Image to write: .png, .svg or .pdf."),
    title: Optional[str] = typer.Option(None, help="Figure title."),
) -> None:
    """Train and val bits/char against step and wall time, several runs overlaid (needs matplotlib)."""
    try:
        from charrnn.viz.curves import plot_runs

        print(f"wrote {plot_runs(runs, output, title)}", file=sys.stderr)
    except CharrnnError as e:
        _fail(str(e))


@app.command()
def viz(
    checkpoint_path: Path = typer.Argument(..., metavar="CHECKPOINT", help="Checkpoint file or run directory."),
    text: str = typer.Argument(..., help="Text file to read through the model, or - for stdin."),
    output: Path = typer.Option(Path("viz.html"), "--output", "-o", help="HTML page to write."),
    unit: list[str] = typer.Option([], help="LAYER:UNIT (from 0; cell state for LSTMs) or LAYER:UNIT:h|c to offer on the page (repeatable)."),
    length: int = typer.Option(2000, min=1, max=50_000, help="Characters of the text to show."),
    offset: int = typer.Option(0, min=0, help="Characters of the text to skip first."),
    top: int = typer.Option(5, min=1, max=100, help="Units listed per feature."),
    unknown: str = typer.Option("error", help="Characters outside the vocabulary: error | skip."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Do not print the unit ranking."),
) -> None:
    """An HTML page of the text coloured by surprisal or by any unit, with the units that track
    quotes, line position and speaker cues found for you; hover a character for the predictions."""
    try:
        _check_unknown(unknown)
        from charrnn.viz.page import write_page

        ranking = write_page(checkpoint_path, text, output, unit, length, offset, top, unknown)
        if not quiet:
            for feature, scored in ranking.items():
                best = ", ".join(f"{u.name} (r={r:+.2f})" for u, r in scored[:3])
                print(f"{feature:<22}{best}", file=sys.stderr)
        print(f"wrote {output}", file=sys.stderr)
    except CharrnnError as e:
        _fail(str(e))


def main() -> None:
    """Console entry point: click's usage errors become one ``error:`` line too."""
    try:
        code = app(standalone_mode=False)
    except UsageError as e:
        message = " ".join(e.format_message().split())
        if message:
            print(f"error: {message}", file=sys.stderr)
        code = 2 if message else 0  # no message: `charrnn` alone, which showed the help
    except typer.Abort:
        code = 130
    except KeyboardInterrupt:
        print(file=sys.stderr)
        code = 130
    except BrokenPipeError:
        _detach_stdout()
        code = 0
    sys.exit(code if isinstance(code, int) else 0)
