"""Writing what ``charrnn sample`` generates: one sample streamed as it grows, several samples
of one batch (with a separator, or as JSON lines), or a beam search's text.

``out`` is anything with ``write`` and ``close``: stdout flushed at line ends, or a screenplay
document (``charrnn.screenplay.typeset.writer``) that typesets what it is given when closed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from charrnn.data.vocab import Vocab
from charrnn.model.network import CharRNN
from charrnn.sampling.beam import beam_search
from charrnn.sampling.generate import generate
from charrnn.sampling.options import SampleOptions


class Out(Protocol):
    def write(self, text: str) -> None: ...

    def close(self) -> None: ...


# The fields a JSON line adds for one sample's generated text (the copy report).
Report = Callable[[str], dict[str, Any]]


def write_samples(
    out: Out,
    model: CharRNN,
    vocab: Vocab,
    opts: SampleOptions,
    prime_ids: list[int],
    prime_text: str,
    num_samples: int = 1,
    separator: str = "\n\n",
    as_json: bool = False,
    beam_width: int | None = None,
    report: Report | None = None,
) -> list[str]:
    """Each sample starts with the prime text; a single plain sample streams piece by piece.
    Returns each sample's generated text (without the prime), for the copy warning."""
    if beam_width is not None:
        text, _ = beam_search(model, vocab, prime_ids, beam_width, opts.length)
        texts = [text]
        if as_json:
            out.write(json.dumps({"text": prime_text + text, **_fields(report, text)}) + "\n")
        else:
            out.write(prime_text + text + "\n")
    elif num_samples == 1 and not as_json:
        out.write(prime_text)
        pieces = []
        for _, piece in generate(model, vocab, opts, prime_ids, 1):
            out.write(piece)
            pieces.append(piece)
        out.write("\n")
        texts = ["".join(pieces)]
    else:
        texts = [""] * num_samples
        for row, piece in generate(model, vocab, opts, prime_ids, num_samples):
            texts[row] += piece
        for i, text in enumerate(texts):
            if as_json:
                out.write(json.dumps({"sample": i, "text": prime_text + text, **_fields(report, text)}) + "\n")
            else:
                out.write(prime_text + text + (separator if i < num_samples - 1 else "\n"))
    out.close()
    return texts


def _fields(report: Report | None, text: str) -> dict[str, Any]:
    return report(text) if report is not None else {}
