"""The Python API: ``charrnn.train`` a model, ``charrnn.load`` it, generate and score text.

The same code as the command line, with the same options and defaults: ``train`` checks its
keywords with ``TRAIN_OPTIONS``, the table ``charrnn train`` builds its flags from, so the two
cannot drift apart. Bad input raises ``CharrnnError`` with the one-line message the command
would print.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charrnn.data.vocab import encode_prime
from charrnn.errors import CharrnnError
from charrnn.evaluation.bpc import Score, score_text
from charrnn.model import checkpoint
from charrnn.model.network import ModelConfig
from charrnn.sampling.generate import generate
from charrnn.sampling.options import SampleOptions
from charrnn.training.config import TRAIN_OPTIONS

__all__ = ["Model", "Run", "Score", "load", "train"]

PathLike = str | os.PathLike[str]
# Options of ``charrnn train`` that the API takes another way: the corpus and run directory as
# arguments, and ``progress`` in place of ``--quiet``.
_NOT_OPTIONS = ("corpus", "out", "preset", "quiet")
_OPTIONS = {name: option for name, option in TRAIN_OPTIONS.items() if name not in _NOT_OPTIONS}


@dataclass(frozen=True)
class Run:
    """A finished training run."""

    dir: Path
    best: Path
    last: Path
    best_val_bpc: float | None
    steps: int
    elapsed: float
    # Everything the command's summary table shows (chars_per_s, parameters, first_run, ...).
    summary: dict[str, Any]

    def load(self) -> Model:
        """The run's best model."""
        return load(self.best)


def train(
    corpus: PathLike | Sequence[PathLike] | None = None,
    out: PathLike | None = None,
    preset: str | None = None,
    *,
    progress: bool = False,
    **options: Any,
) -> Run:
    """Train as ``charrnn train CORPUS --out OUT --preset PRESET`` would, and return the run.

    ``corpus`` is a file, a folder, or a list of them (None: the bundled demo screenplays).
    ``options`` are the command's flags by their Python names: ``steps=300``,
    ``time="10m"``, ``dropout=0.2``, ``resume=True``, ``init_from="base/best.pt"``. Notes and
    warnings go to stderr; ``progress=True`` also shows the progress bar and the summary.
    Ctrl-C saves last.pt and raises ``KeyboardInterrupt``; ``resume=True`` continues the run.
    """
    from charrnn.errors import Interrupted
    from charrnn.runtime.progress import summary
    from charrnn.training.run import train_run

    paths = [corpus] if isinstance(corpus, (str, os.PathLike)) else list(corpus or [])
    try:
        done = train_run(
            [os.fspath(p) for p in paths],
            out=None if out is None else Path(out),
            preset=preset,
            quiet=not progress,
            **_checked(options),
        )
    except Interrupted as e:
        raise KeyboardInterrupt(str(e)) from None
    if done.main:
        summary(done.result, not progress)
    r = done.result
    return Run(done.out, Path(r["best"]), Path(r["last"]), r["best_val_bpc"], r["steps"], r["elapsed"], r)


def _checked(options: dict[str, Any]) -> dict[str, Any]:
    """The options read as the command reads its flags: their names, types and ranges (and the
    message for a bad one) are ``TRAIN_OPTIONS``'. None is an option not given."""
    for name in options:
        if name not in _OPTIONS:
            raise CharrnnError(f"unknown option {name!r}; the options are {', '.join(sorted(_OPTIONS))}")
    return {name: _OPTIONS[name].coerce(value) for name, value in options.items() if value is not None}


def load(path: PathLike) -> Model:
    """A trained model from a checkpoint file or a run directory (its best.pt)."""
    return Model(checkpoint.load(Path(path)))


class Model:
    """A trained model with its vocabulary, ready to generate and score text on the CPU."""

    def __init__(self, ckpt: dict[str, Any]) -> None:
        self.net, self.vocab = checkpoint.build_model(ckpt)
        self.path = Path(ckpt["path"])
        self.config: ModelConfig = self.net.cfg
        self.val_bpc: float | None = ckpt.get("val_bpc")
        # The charrnn version that wrote the checkpoint (None before 1.0).
        self.charrnn_version: str | None = ckpt.get("charrnn_version")

    def __repr__(self) -> str:
        c = self.config
        vocabulary = f"{self.vocab.kind} vocabulary of {self.vocab.size}"
        return f"<charrnn.Model {c.model} {c.layers}x{c.hidden}, {vocabulary}: {self.path}>"

    def generate(
        self,
        prime: str = "",
        length: int = 1000,
        temp: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] = (),
        seed: int | None = None,
        unknown: str = "error",
    ) -> str:
        """``length`` characters continuing ``prime`` (the prime itself is not repeated), ending
        early at the first ``stop`` string; the same ``seed`` gives the same text. Characters of
        ``prime`` outside the vocabulary are an error, or dropped with ``unknown="skip"``."""
        return "".join(self.stream(prime, length, temp, top_k, top_p, stop, seed, unknown))

    def stream(
        self,
        prime: str = "",
        length: int = 1000,
        temp: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] = (),
        seed: int | None = None,
        unknown: str = "error",
    ) -> Iterator[str]:
        """``generate``'s text piece by piece as it is sampled (for a live display)."""
        opts, ids = self._options(prime, length, temp, top_k, top_p, stop, seed, unknown)
        for _, piece in generate(self.net, self.vocab, opts, ids, 1):
            yield piece

    def generate_many(
        self,
        n: int,
        prime: str = "",
        length: int = 1000,
        temp: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] = (),
        seed: int | None = None,
        unknown: str = "error",
    ) -> list[str]:
        """``n`` samples generated together as one batch (much faster than ``n`` calls), as
        ``charrnn sample --num-samples N`` makes them."""
        if not isinstance(n, int) or n < 1:
            raise CharrnnError(f"n must be a whole number >= 1 (got {n!r})")
        opts, ids = self._options(prime, length, temp, top_k, top_p, stop, seed, unknown)
        texts = [""] * n
        for row, piece in generate(self.net, self.vocab, opts, ids, n):
            texts[row] += piece
        return texts

    def score(self, text: str, unknown: str = "error") -> Score:
        """How well the model predicts ``text``: ``.bpc`` (bits per character, as ``charrnn
        eval`` reports), ``.bits_per_token``, ``.perplexity``. Characters outside the
        vocabulary are an error, or dropped with ``unknown="skip"``."""
        _check_unknown(unknown)
        with _python_spelling():
            return score_text(self.net, self.vocab, text, skip_unknown=unknown == "skip")[0]

    def _options(
        self,
        prime: str,
        length: int,
        temp: float,
        top_k: int | None,
        top_p: float | None,
        stop: str | Sequence[str],
        seed: int | None,
        unknown: str,
    ) -> tuple[SampleOptions, list[int]]:
        stops = [stop] if isinstance(stop, str) else list(stop)
        opts = SampleOptions(length=length, temp=temp, top_k=top_k, top_p=top_p, seed=seed, stops=stops)
        opts.check()
        _check_unknown(unknown)
        with _python_spelling():
            return opts, encode_prime(self.vocab, prime, unknown)


def _check_unknown(unknown: str) -> None:
    if unknown not in ("error", "skip"):
        raise CharrnnError(f'unknown must be "error" or "skip" (got {unknown!r})')


@contextmanager
def _python_spelling() -> Iterator[None]:
    """The library's errors name the command line's flag; from Python the keyword is the fix."""
    try:
        yield
    except CharrnnError as e:
        raise CharrnnError(str(e).replace("--unknown skip", 'unknown="skip"')) from None
