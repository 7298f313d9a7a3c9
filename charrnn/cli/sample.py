"""``charrnn sample``: the options of ``SAMPLE_OPTIONS`` (charrnn.sampling.options), checked
before the model loads; the text written by ``charrnn.cli.output``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from charrnn.cli.errors import check_unknown, detach_stdout, fail
from charrnn.cli.options import takes
from charrnn.errors import CharrnnError
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
    write_samples(
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
