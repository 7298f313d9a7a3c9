"""``charrnn sample``: the options of ``SAMPLE_OPTIONS`` (charrnn.sampling.options), checked
before the model loads; the text written by ``charrnn.cli.output``."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from charrnn.cli.errors import check_unknown, detach_stdout, fail
from charrnn.cli.options import takes
from charrnn.errors import CharrnnError

if TYPE_CHECKING:
    from charrnn.data.vocab import Vocab
    from charrnn.model.network import CharRNN
from charrnn.sampling.options import SAMPLE_OPTIONS, SampleOptions


@takes(SAMPLE_OPTIONS)
def sample(**options: Any) -> None:
    """Generate text from a trained model, streamed to stdout (or a typeset screenplay with --format)."""
    try:
        _sample(**options)
    except CharrnnError as e:
        fail(str(e))
    except BrokenPipeError:
        detach_stdout()
        raise typer.Exit(0) from None
    except OSError as e:
        # stdout full (a disk or /dev/full): say so on stderr, never inside the output file.
        detach_stdout()
        fail(f"cannot write the sample to stdout ({e.strerror or e})", code=1)


def unescape(text: str) -> str:
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


class _Out:
    """Writes generated text to stdout, flushing at line ends so it streams through pipes."""

    def write(self, text: str) -> None:
        sys.stdout.write(text)
        if "\n" in text:
            sys.stdout.flush()

    def close(self) -> None:
        sys.stdout.flush()


def _sample(
    checkpoint_path: Path | None,
    prime: str | None,
    prime_file: Path | None,
    unknown: str,
    stops: list[str],
    separator: str,
    as_json: bool,
    beam_width: int | None,
    num_samples: int,
    fmt: str | None,
    output: Path | None,
    title: str | None,
    author: str | None,
    adapt: list[str],
    adapt_steps: int | None,
    save_adapted: Path | None,
    **o: Any,
) -> None:
    from charrnn.screenplay.typeset import writer

    if not adapt and (adapt_steps is not None or save_adapted is not None):
        flag = "--adapt-steps" if adapt_steps is not None else "--save-adapted"
        raise CharrnnError(f"{flag} applies only with --adapt")
    opts = SampleOptions(stops=[unescape(s) for s in stops], **o)
    opts.check()
    check_unknown(unknown)
    document = writer(fmt, output, title, author)  # checked before the model loads
    if document is not None and as_json:
        raise CharrnnError("--json writes JSON lines to stdout: not with --format or -o")
    prime = _prime_text(prime, prime_file)

    from charrnn.cli.output import write_samples
    from charrnn.data.vocab import encode_prime
    from charrnn.model import checkpoint

    ckpt = checkpoint.load(_model_path(checkpoint_path))
    model, vocab = checkpoint.build_model(ckpt)
    prime_ids = encode_prime(vocab, prime, unknown)
    prime_text = vocab.decode(prime_ids)
    if adapt:
        model, prime_ids, prime_text = _adapted(
            ckpt, model, vocab, adapt, adapt_steps, unknown, save_adapted, prime_ids, prime_text
        )
    opts = _precision(model, opts, beam_width)
    texts = write_samples(
        document or _Out(),
        model,
        vocab,
        opts,
        prime_ids,
        prime_text,
        num_samples,
        unescape(separator),
        as_json,
        beam_width,
        _copy_report(ckpt) if as_json else None,
    )
    if not as_json:
        _warn_if_copied(ckpt, texts)


def _precision(model: CharRNN, opts: SampleOptions, beam_width: int | None) -> SampleOptions:
    """``--precision auto`` resolved before the first character, saying so where the measured
    pick is a reduced precision: its seeded text is not float32's. (Beam search steps in float32.)"""
    from charrnn.sampling.precision import choose

    if beam_width is not None:
        return opts
    choice = choose(model, opts.precision, model.embed.weight.device)
    if choice.chosen_by_auto and choice.name != "float32":
        print(
            f"note: sampling with {choice.name} weights, measured faster here than float32 "
            "(--precision float32 for float32's text)",
            file=sys.stderr,
        )
    return dataclasses.replace(opts, precision=choice.name)


def _adapted(
    ckpt: dict[str, Any],
    model: CharRNN,
    vocab: Vocab,
    passages: list[str],
    steps: int | None,
    unknown: str,
    save_to: Path | None,
    prime_ids: list[int],
    prime_text: str,
) -> tuple[CharRNN, list[int], str]:
    """The model adapted to --adapt's passages; without a prime, the sample reads the passage's
    end and continues its last line."""
    from charrnn.evaluation.adapt import adapt

    adapted = adapt(ckpt, model, vocab, passages, steps, unknown, save_to=save_to)
    if not prime_ids:
        return adapted.model, adapted.context, adapted.last_line
    return adapted.model, prime_ids, prime_text


def _model_path(given: Path | None) -> Path:
    """The model named, else the newest run, else the bundled base (saying so on stderr)."""
    from charrnn.model import checkpoint

    if given is not None:
        return checkpoint.resolve(given)
    path, note = checkpoint.default_model()
    if note:
        print(note, file=sys.stderr)
    return path


def _copy_report(ckpt: dict[str, Any]) -> Callable[[str], dict[str, Any]]:
    """--json's copy fields for each sample; null where the run's training text is not on disk."""
    from charrnn.evaluation.copying import run_index

    index = run_index(ckpt)
    if index is None:
        return lambda text: {"longest_copied": None, "copied_fraction": None}
    return lambda text: index.copying(text).as_dict()


def _warn_if_copied(ckpt: dict[str, Any], texts: list[str]) -> None:
    """A plain sample's one warning on stderr when it repeats a long passage of its training text
    (a small corpus memorised reads as new text); checked after the text is out."""
    from charrnn.evaluation.copying import WARN_SPAN, run_index

    index = run_index(ckpt)
    if index is None:
        return
    longest = max(index.copying(text).longest for text in texts)
    if longest > WARN_SPAN:
        print(
            f"warning: this sample repeats {longest:,} characters of the training text verbatim; "
            "the model has memorised it (more text, or --base english, helps; sample --json reports it)",
            file=sys.stderr,
        )


def _prime_text(prime: str | None, prime_file: Path | None) -> str:
    """--prime, or the text of --prime-file (not both), or nothing."""
    if prime is not None and prime_file is not None:
        raise CharrnnError("give --prime or --prime-file, not both")
    if prime_file is not None:
        from charrnn.data.corpus import decode

        try:
            return decode(prime_file.read_bytes(), str(prime_file))
        except OSError as e:
            raise CharrnnError(f"{prime_file}: cannot read ({e.strerror})") from None
    return prime or ""
