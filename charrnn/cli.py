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

DEMO_CORPUS = Path(__file__).resolve().parent.parent / "corpora" / "demo_screenplay.fountain"


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
    """One line for the files in corpus folders left out as not text, counted by folder (a source
    tree's .pyc files are many, in few __pycache__ folders)."""
    from collections import Counter

    from charrnn.corpus import describe

    if skipped:
        where = Counter(str(Path(f).parent) for f in skipped)
        print(f"note: left out {len(skipped)} file(s) that are not UTF-8 text: "
              f"{describe([f'{n} in {d}' for d, n in where.most_common()])}", file=sys.stderr)


def _fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(code)


@app.command()
def train(
    corpus: list[str] = typer.Argument(None, help="Text files or directories, or - for stdin. Default: the bundled demo screenplay."),
    preset: Optional[str] = typer.Option(None, help="tiny | small (default) | medium | large; explicit flags override it."),
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
    eval_every: Optional[int] = typer.Option(None, min=1, max=10**12, help="Validate every N steps (default 200, or once per pass over the text if sooner)."),
    patience: Optional[int] = typer.Option(None, min=0, max=10**9, help="Stop once this many validations in a row have not beaten the best val bpc (default 5; 0: never stop early)."),
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


def _train(corpus, preset, out, resume, init_from, quiet, time, **flags) -> None:
    from charrnn import checkpoint
    from charrnn.config import GPU_PRESETS, make_config, parse_duration
    from charrnn.corpus import STDIN, corpus_name, describe

    paths = list(corpus or [])
    resume_ckpt = None
    if resume:
        run_dir = out
        if run_dir is None and len(paths) == 1 and Path(paths[0]).is_dir() and (Path(paths[0]) / "last.pt").is_file():
            run_dir = Path(paths.pop())
        if run_dir is None:
            raise CharrnnError("--resume needs the run directory: charrnn train --resume RUN_DIR (or --out RUN_DIR)")
        resume_ckpt = checkpoint.load(Path(run_dir) / "last.pt")
        saved = resume_ckpt.get("train_config", {})
        saved_corpus = resume_ckpt.get("corpus", {})
        if not paths:
            paths = list(saved_corpus.get("paths") or saved_corpus.get("files", []))
            if not paths or "<stdin>" in paths or STDIN in paths:
                raise CharrnnError("cannot resume: give the corpus again (the run was trained from stdin)")
            if "paths" not in saved_corpus and len(paths) >= 100:
                raise CharrnnError("cannot resume: give the corpus again (this run saved only its first 100 file names)")
        # The run's own settings, with any flag given now on top (e.g. a longer --time).
        base = {k: v for k, v in saved.items()}
        base.setdefault("keep_gutenberg", True)  # a run from before the header was left out read it
        base.setdefault("val_tokens", 0)  # and one from before --val-tokens validated on the whole split
        base.setdefault("precision", "float32")  # and one from before --precision trained in float32
        given = {k: v for k, v in flags.items() if v is not None}
        if time is not None:
            given["time"] = parse_duration(time)
        out = Path(run_dir)
        cfg = make_config(None, {})
        for k, v in {**base, **given}.items():
            setattr(cfg, k, v)
    else:
        cfg = make_config(preset, {**flags, "time": time})
    if not paths:
        if not DEMO_CORPUS.is_file():
            raise CharrnnError(f"no corpus given and the bundled demo corpus is missing ({DEMO_CORPUS})")
        paths = [str(DEMO_CORPUS)]

    import torch

    from charrnn import distributed, precision
    from charrnn.data import VocabSpec, prepare
    from charrnn.progress import summary
    from charrnn.train import Interrupted, Trainer, fit_retraining, pick_device
    from charrnn.vocab import from_state

    world = distributed.launched()
    out = out or Path("checkpoints") / corpus_name(paths)
    if out.exists() and not out.is_dir():
        raise CharrnnError(f"--out {out}: exists and is not a directory")
    device = pick_device(cfg.device)
    precision.resolve(cfg.precision, device, cfg.model)  # before preparing the corpus, which can take minutes
    if preset in GPU_PRESETS and device.type == "cpu" and world.main:
        print(
            f"warning: --preset {preset} is sized for a GPU; on a CPU its steps are slow (~25 s each on 2 cores), "
            "so --preset small or medium will learn more in the same time",
            file=sys.stderr,
        )
    if world.active:
        if STDIN in paths:
            raise CharrnnError("a corpus from stdin cannot be shared between torchrun ranks; give a file")
        device = distributed.rank_device(world, device)
    if world.main and not resume and (out / "last.pt").exists():
        print(f"note: {out} already holds a run; starting a new one over it (use --resume to continue it)", file=sys.stderr)
    init = checkpoint.load(init_from) if init_from is not None else None
    # A fine-tuned run encodes its corpus with the vocabulary it started from, also when resumed.
    given = init if init is not None else resume_ckpt if resume_ckpt and resume_ckpt["corpus"].get("vocab_given") else None
    fixed = from_state(given["vocab"]) if given is not None else None
    spec = VocabSpec(cfg.vocab, cfg.vocab_size)
    distributed.start(world, device)
    try:
        # Rank 0 prepares (and caches) the corpus; the others then read the same cache.
        data = distributed.main_first(
            world,
            lambda: prepare(
                paths, out / ".cache", cfg.val_frac, spec, vocab=fixed, show_progress=not quiet and world.main,
                keep_gutenberg=cfg.keep_gutenberg,
            ),
        )
        if world.main and not quiet:
            _note_skipped(data.skipped)
        if world.main and not quiet and data.left_out:
            names = list(data.left_out)
            books = names[0] if len(names) == 1 else f"{len(names)} books ({describe(names)})"
            print(f"note: {books}: training on the text only, without Project Gutenberg's header and licence "
                  f"({sum(data.left_out.values()):,} characters; --keep-gutenberg keeps them)", file=sys.stderr)
        trainer = Trainer(cfg, data, out, quiet=quiet, resume=resume_ckpt, init_from=init, world=world, device=device)
        try:
            # A resumed first run goes on to a second one only if it knows it is a first run (versions
            # before first_run did not say) and has its starting weights (a fine-tune's are not saved).
            retrain = resume_ckpt is None or (
                "first_run" in resume_ckpt.get("train_config", {})
                and (init is not None or not resume_ckpt["corpus"].get("vocab_given"))
            )
            result = fit_retraining(trainer, retrain)
        except Interrupted as e:
            if world.main:
                print(f"stopped: saved {e.path}; continue with: charrnn train --resume {out}", file=sys.stderr)
            raise typer.Exit(e.exit_code)
    finally:
        distributed.stop()
    if world.main:
        summary(result, quiet)
        if not quiet:
            print(f"sample with: charrnn sample {out}", file=sys.stderr)
            if cfg.tensorboard:
                print(f"curves in TensorBoard: tensorboard --logdir {out / 'tensorboard'}", file=sys.stderr)
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
    precision: str = typer.Option("auto", help="auto (bfloat16 where measured faster: an LSTM of hidden >= 512 on a CPU with AMX; float32 elsewhere) | float32 | bfloat16: the weights of each step."),
) -> None:
    """Generate text from a trained model, streamed to stdout."""
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


def _sample(checkpoint_path, prime, prime_file, unknown, stop, separator, as_json, beam_width, num_samples, **o) -> None:
    from charrnn.sample import SampleOptions

    opts = SampleOptions(stops=[_unescape(s) for s in stop], **o)
    opts.check()
    _check_unknown(unknown)
    if prime is not None and prime_file is not None:
        raise CharrnnError("give --prime or --prime-file, not both")
    if prime_file is not None:
        from charrnn.corpus import decode

        try:
            prime = decode(prime_file.read_bytes(), str(prime_file))
        except OSError as e:
            raise CharrnnError(f"{prime_file}: cannot read ({e.strerror})") from None
    prime = prime or ""

    from charrnn import checkpoint
    from charrnn.sample import beam_search, encode_prime, generate

    path = checkpoint.resolve(checkpoint_path) if checkpoint_path else checkpoint.latest_run()
    model, vocab = checkpoint.build_model(checkpoint.load(path))
    prime_ids = encode_prime(vocab, prime, unknown)
    prime_text = vocab.decode(prime_ids)
    out = _Out()
    if beam_width is not None:
        text, _ = beam_search(model, vocab, prime_ids, beam_width, opts.length)
        out.write(json.dumps({"text": prime_text + text}) + "\n" if as_json else prime_text + text + "\n")
        out.close()
        return
    if num_samples == 1 and not as_json:
        out.write(prime_text)
        for _, piece in generate(model, vocab, opts, prime_ids, 1):
            out.write(piece)
        out.write("\n")
        out.close()
        return
    texts = [prime_text] * num_samples
    for row, piece in generate(model, vocab, opts, prime_ids, num_samples):
        texts[row] += piece
    sep = _unescape(separator)
    for i, text in enumerate(texts):
        if as_json:
            out.write(json.dumps({"sample": i, "text": text}) + "\n")
        else:
            out.write(text + (sep if i < num_samples - 1 else "\n"))
    out.close()


@app.command()
def info(checkpoint_path: Path = typer.Argument(..., metavar="CHECKPOINT", help="Checkpoint file or run directory.")) -> None:
    """Model size, vocabulary, steps trained and validation bpc of a checkpoint."""
    try:
        from charrnn import checkpoint
        from charrnn.model import count_parameters
        from charrnn.vocab import describe_chars

        ckpt = checkpoint.load(checkpoint_path)
        model, vocab = checkpoint.build_model(ckpt)
        cfg = model.cfg
        fmt = lambda v: "-" if v is None else f"{v:.4f}"
        rows = [
            ("checkpoint", ckpt["path"]),
            ("model", f"{cfg.model} {cfg.layers}x{cfg.hidden}, embed {cfg.embed}, dropout {cfg.dropout}, weight drop {cfg.weight_drop}, tied {cfg.tie}"),
            ("parameters", f"{count_parameters(model):,}"),
            ("vocabulary", f"{vocab.kind}, {vocab.size} tokens"),
            ("steps", f"{ckpt.get('step', 0):,}"),
            ("val bpc", fmt(ckpt.get("val_bpc"))),
            ("best val bpc", fmt(ckpt.get("best_val_bpc"))),
            ("trained for", f"{ckpt.get('elapsed', 0.0):.1f} s"),
        ]
        if vocab.kind == "char":
            rows.append(("characters", describe_chars(list(vocab.chars), limit=200)))
        else:
            rows.append(("tokenizer", f"SentencePiece {vocab.kind}, byte fallback, whitespace kept"))
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
) -> None:
    """Bits per character (and per token, and perplexity) of any text under a trained model."""
    try:
        from charrnn import checkpoint, corpus
        from charrnn.data import encode_text
        from charrnn.evaluate import evaluate
        from charrnn.vocab import describe_chars

        ckpt = checkpoint.load(checkpoint_path)
        model, vocab = checkpoint.build_model(ckpt)
        if keep_gutenberg is None:  # a model from before the Gutenberg rule was trained on whole files
            keep_gutenberg = bool(ckpt.get("train_config", {}).get("keep_gutenberg", "train_config" in ckpt))
        skipped: list[str] = []
        sources = corpus.open_sources(text, skipped=skipped)
        _note_skipped(skipped)
        try:
            body = corpus.read_text(sources, keep_gutenberg)
        finally:
            corpus.release(sources)
        missing = vocab.missing(body)
        skipped = 0
        if missing:
            if not skip_unknown:
                raise CharrnnError(f"text has characters the vocabulary lacks: {describe_chars(missing)} (use --skip-unknown)")
            gone = set(missing)
            kept = "".join(c for c in body if c not in gone)
            skipped, body = len(body) - len(kept), kept
        ids = encode_text(vocab, body)
        if len(ids) < 2:
            raise CharrnnError("text is too short to evaluate (needs at least 2 tokens)")
        import torch

        score = evaluate(model, ids, torch.device("cpu"), chars=vocab.count_chars(ids[1:]))
        result = {
            "bpc": round(score.bpc, 5),
            "bits_per_token": round(score.bits_per_token, 5),
            "perplexity": round(score.perplexity, 4),
            "chars": score.chars,
            "tokens": score.tokens,
            "skipped_chars": skipped,
        }
        if as_json:
            print(json.dumps(result))
        else:
            for k, v in result.items():
                print(f"{k:<16}{v}")
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
        from charrnn.export import export_checkpoint

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
        from charrnn.plot import plot_runs

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
        _viz(checkpoint_path, text, output, unit, length, offset, top, unknown, quiet)
    except CharrnnError as e:
        _fail(str(e))


def _viz(checkpoint_path, text, output, units, length, offset, top, unknown, quiet) -> None:
    from charrnn import checkpoint, corpus
    from charrnn.sample import encode_prime
    from charrnn.trace import parse_unit, rank_units, trace
    from charrnn.viz import render

    _check_unknown(unknown)
    if text != corpus.STDIN and not Path(text).exists():
        raise CharrnnError(f"{text}: no such file (TEXT is a file; for a literal text: echo '...' | charrnn viz CHECKPOINT -)")
    ckpt = checkpoint.load(checkpoint_path)
    model, vocab = checkpoint.build_model(ckpt)
    chosen = [parse_unit(u, model) for u in units]
    sources = corpus.open_sources([text])
    try:
        body = corpus.read_text(sources)[offset : offset + length]
    finally:
        corpus.release(sources)
    if not body:
        raise CharrnnError(f"{text}: no text to show" + (f" after --offset {offset}" if offset else ""))
    tr = trace(model, vocab, encode_prime(vocab, body, unknown, what="the text"))
    ranking = rank_units(tr, top)
    cfg = model.cfg
    subtitle = f"{Path(ckpt['path'])} · {cfg.model} {cfg.layers}x{cfg.hidden}, {vocab.kind} vocabulary of {vocab.size}"
    page = render(tr, f"charrnn viz: {Path(text).name if text != corpus.STDIN else 'stdin'}", subtitle, chosen, ranking)
    try:
        output.write_text(page, encoding="utf-8")
    except OSError as e:
        raise CharrnnError(f"cannot write {output} ({e.strerror or e})") from None
    if not quiet:
        for feature, scored in ranking.items():
            best = ", ".join(f"{u.name} (r={r:+.2f})" for u, r in scored[:3])
            print(f"{feature:<22}{best}", file=sys.stderr)
    print(f"wrote {output}", file=sys.stderr)


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
