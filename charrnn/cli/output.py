"""Writing what ``charrnn sample`` generates: one sample streamed as it grows, several samples
of one batch (with a separator, or as JSON lines), or a beam search's text.

``out`` is anything with ``write`` and ``close``: stdout flushed at line ends, or a screenplay
document (``charrnn.screenplay.typeset.writer``) that typesets what it is given when closed.
"""

from __future__ import annotations

import json
from typing import Protocol

from charrnn.data.vocab import Vocab
from charrnn.model.network import CharRNN
from charrnn.sampling.beam import beam_search
from charrnn.sampling.generate import generate
from charrnn.sampling.options import SampleOptions


class Out(Protocol):
    def write(self, text: str) -> None: ...

    def close(self) -> None: ...


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
) -> None:
    """Each sample starts with the prime text; a single plain sample streams piece by piece."""
    if beam_width is not None:
        text, _ = beam_search(model, vocab, prime_ids, beam_width, opts.length)
        out.write(json.dumps({"text": prime_text + text}) + "\n" if as_json else prime_text + text + "\n")
    elif num_samples == 1 and not as_json:
        out.write(prime_text)
        for _, piece in generate(model, vocab, opts, prime_ids, 1):
            out.write(piece)
        out.write("\n")
    else:
        texts = [prime_text] * num_samples
        for row, piece in generate(model, vocab, opts, prime_ids, num_samples):
            texts[row] += piece
        for i, text in enumerate(texts):
            if as_json:
                out.write(json.dumps({"sample": i, "text": text}) + "\n")
            else:
                out.write(text + (separator if i < num_samples - 1 else "\n"))
    out.close()
