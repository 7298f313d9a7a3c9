"""What a sample is asked for: length, temperature, top-k/top-p, seed, stop strings, precision.

One set of options for ``charrnn sample``, the Python API's ``generate`` and the server's
requests; ``check`` holds the rules every caller validates with.

Here too is ``Option``, how one setting is offered as a flag: its name, type, range and help,
declared once on the fields of ``SampleOptions`` and ``TrainConfig`` (and in tables beside
them), so that ``charrnn.cli`` builds its typer options from them and ``charrnn.api`` checks
keywords with them. It lives in this module because sampling is the lower of the two layers
that declare options; ``charrnn.training.config`` imports it from here. Nothing here imports
torch: the command line reads these tables to show ``--help``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from charrnn.errors import CharrnnError


@dataclass(frozen=True)
class Option:
    """One setting as a command's flag (or argument) and an API keyword."""

    help: str
    # int, float, str, bool, Path or list[str]; for a field, read from its annotation.
    type: Any = None
    # typer's declarations where the flag is not just --name: "--tie/--no-tie", "--quiet", "-q".
    flags: tuple[str, ...] = ()
    # The command's default: None is "not given" (for training, the preset decides).
    default: Any = None
    # The flag's range, closed: shown in --help and checked when the flag is read.
    min: int | float | None = None
    max: int | float | None = None
    # min itself is not allowed either: checked with the other settings after the flag is read,
    # because a flag's range is closed (--lr shows [0.0<=x<=10.0] and must be > 0).
    min_open: bool = False
    # The fixed values where there are (each is checked where it is used, with its own message).
    choices: tuple[str, ...] = ()
    argument: bool = False  # a positional argument, not a flag
    metavar: str | None = None
    name: str = ""  # the Python name: the field's, or the table's key

    @property
    def flag(self) -> str:
        """The flag as messages name it: ``--layers``, ``--tie``, ``--json``."""
        return self.flags[0].split("/")[0] if self.flags else "--" + self.name.replace("_", "-")

    def coerce(self, value: Any) -> Any:
        """``value`` read as the command reads this flag: a number from its text (``300`` and
        ``"300"`` alike; ``"many"`` is an error) within the range, a flag's truth, text or a path.

        A bad value raises ``CharrnnError`` with the message the command prints for the same text
        (the wording of the parser typer uses), so the Python API reports it as the CLI does;
        tests/cli/test_options.py holds the two side by side, value by value.
        """
        if self.type is bool:
            return bool(value)
        text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
        if self.type is Path:
            return Path(text)
        if self.type is int or self.type is float:
            return self._number(text)
        return text

    def _number(self, text: str) -> int | float:
        number: int | float | None
        if self.type is int:
            number, kind = _read_int(text), "integer, unable to parse string as an integer"
        else:
            number, kind = _read_float(text), "number, unable to parse string as a number"
        if number is None:
            raise self._invalid(f"Input should be a valid {kind}")
        # The upper bound first, as the parser checks them: NaN fails both and is told the upper.
        if self.max is not None and not number <= self.max:
            raise self._invalid(f"Input should be less than or equal to {shown(self.max)}")
        if self.min is not None and not number >= self.min:
            raise self._invalid(f"Input should be greater than or equal to {shown(self.min)}")
        return number

    def _invalid(self, reason: str) -> CharrnnError:
        return CharrnnError(f"Invalid value for '{self.flag}': {reason}")


def _read_int(text: str) -> int | None:
    """An integer as the command's parser reads one: ASCII digits (with single underscores),
    a sign, and a fraction of zeros (``5.0``) allowed, space around it ignored."""
    s = text.strip()
    if not re.fullmatch(r"[+-]?[0-9]+(?:_[0-9]+)*(?:\.0+)?", s):
        return None
    return int(s.split(".")[0])


def _read_float(text: str) -> float | None:
    s = text.strip()
    if not s.isascii():  # Python's float reads other scripts' digits; the parser does not
        return None
    try:
        return float(s)
    except ValueError:
        return None


def shown(bound: int | float) -> str:
    """A bound as the parser's messages write it: 0 for 0.0, 1000000 for 1e6, 0.95."""
    if isinstance(bound, float) and bound.is_integer():
        return str(int(bound))
    return str(bound)


def option(default: Any, help: str, **declared: Any) -> Any:
    """A dataclass field that is also a command's option (``dataclasses.field`` with the
    ``Option`` in its metadata); its name and type are the field's. An empty list default
    becomes a fresh list per instance."""
    metadata = {"option": Option(help, **declared)}
    if isinstance(default, list):
        return dataclasses.field(default_factory=list, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def options_of(cls: type, defaults: bool) -> dict[str, Option]:
    """The options declared on ``cls``'s fields, each named and typed by its field (``int`` for
    ``int | None``). With ``defaults`` the command's default is the field's; without, None."""
    hints = typing.get_type_hints(cls)
    found = {}
    for f in dataclasses.fields(cls):
        if "option" not in f.metadata:
            continue
        default = None
        if defaults:
            default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        found[f.name] = dataclasses.replace(f.metadata["option"], name=f.name, type=_not_none(hints[f.name]),
                                            default=default)
    return found


def _not_none(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (kind,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return kind
    return hint


def command_options(order: tuple[str, ...], *tables: Mapping[str, Option]) -> dict[str, Option]:
    """A command's options: ``tables`` merged, named by their keys, in ``order`` (the order its
    --help lists them in), which must name each exactly once."""
    merged = {name: dataclasses.replace(o, name=name) for table in tables for name, o in table.items()}
    if sorted(order) != sorted(merged):
        raise ValueError(f"the order and the options differ: {sorted(set(order) ^ set(merged))}")
    return {name: merged[name] for name in order}


@dataclass
class SampleOptions:
    length: int = option(1000, "Characters to generate per sample.", min=0, max=10**9)
    temp: float = option(0.8, "Temperature (> 0): lower is safer, higher is wilder.")
    greedy: bool = option(False, "Always take the most likely token.", flags=("--greedy",))
    top_k: int | None = option(None, "Sample only from the K most likely tokens.")
    top_p: float | None = option(None, "Nucleus sampling: the smallest set with probability >= P (0 < P <= 1).")
    seed: int | None = option(None, "Seed for a reproducible sample.", min=0, max=2**63 - 1)
    stops: list[str] = option([], "End a sample at this string (repeatable; \\n allowed).", flags=("--stop",))
    keep_stop: bool = option(False, "Keep the stop string in the output.", flags=("--keep-stop",))
    precision: str = option(
        "auto", "auto (bfloat16 where measured faster: an LSTM of hidden >= 512 on a CPU with AMX; float32 elsewhere) "
        "| float32 | bfloat16: the weights of each step.", choices=("auto", "float32", "bfloat16"))

    def check(self) -> None:
        if self.length < 0:
            raise CharrnnError(f"--length must be >= 0 (got {self.length})")
        if not self.greedy and not self.temp > 0:
            raise CharrnnError(f"--temp must be > 0 (got {self.temp})")
        if self.top_k is not None and self.top_k < 1:
            raise CharrnnError(f"--top-k must be >= 1 (got {self.top_k})")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise CharrnnError(f"--top-p must be in (0, 1] (got {self.top_p})")
        if any(s == "" for s in self.stops):
            raise CharrnnError("--stop must not be empty")
        precisions = SAMPLE_OPTIONS["precision"].choices
        if self.precision not in precisions:
            raise CharrnnError(f"--precision must be one of {', '.join(precisions)} (got {self.precision!r})")


# ``charrnn sample``'s options that are no field of SampleOptions: what to continue, how many
# samples and how to write them, and adapting the model first.
_RUN_OPTIONS = {
    "checkpoint_path": Option("Checkpoint file or run directory (default: the newest run under ./checkpoints).",
                              type=Path, argument=True, metavar="[CHECKPOINT]"),
    "prime": Option("Text the sample continues (printed first).", type=str),
    "prime_file": Option("Read the prime text from a file.", type=Path),
    "unknown": Option("Prime characters outside the vocabulary: error | skip.", type=str, default="error",
                      choices=("error", "skip")),
    "num_samples": Option("Samples generated together as one batch.", type=int, default=1, min=1, max=4096),
    "separator": Option("Written between samples (\\n allowed).", type=str, default="\\n\\n"),
    "as_json": Option("One JSON line per sample.", type=bool, default=False, flags=("--json",)),
    "beam_width": Option("Beam search for the most likely continuation.", type=int, min=1, max=1024),
    "fmt": Option("text (streamed; default) | fountain (cleaned into valid Fountain) | html | pdf | fdx (typeset "
                  "screenplay; needs pip install 'charrnn[screenplay]'). Default: from -o's suffix, else text.",
                  type=str, flags=("--format",), choices=("text", "fountain", "html", "pdf", "fdx")),
    "output": Option("Write to this file (atomically) instead of stdout; pdf needs it when stdout is a terminal.",
                     type=Path, flags=("--output", "-o")),
    "title": Option("Title for the screenplay's title page (a format other than text).", type=str),
    "author": Option("Author for the title page.", type=str),
    "adapt": Option("First adapt a copy of the model to this text (repeatable; - for stdin); without --prime the "
                    "sample continues its last line.", type=list[str], default=[]),
    "adapt_steps": Option("At most this many update steps of --adapt (default 300, over at most 3 passes).",
                          type=int),
    "save_adapted": Option("Also write the adapted model to this checkpoint file.", type=Path),
}
# Every option of ``charrnn sample``, in the order its --help lists them.
SAMPLE_OPTIONS = command_options(
    ("checkpoint_path", "length", "temp", "greedy", "top_k", "top_p", "seed", "prime", "prime_file", "unknown",
     "stops", "keep_stop", "num_samples", "separator", "as_json", "beam_width", "fmt", "output", "title", "author",
     "adapt", "adapt_steps", "save_adapted", "precision"),
    options_of(SampleOptions, defaults=True), _RUN_OPTIONS)
