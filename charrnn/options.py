"""How one setting is offered to a user: its flag, type, range and help, declared once.

``Option`` is declared on the fields of ``SampleOptions`` and ``TrainConfig`` (and in tables beside
them), so ``charrnn.cli`` builds its typer options from them and ``charrnn.api`` checks keywords
with them: the command line and the API cannot drift apart. Nothing here imports torch, so
``--help`` stays instant.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        found[f.name] = dataclasses.replace(
            f.metadata["option"], name=f.name, type=_not_none(hints[f.name]), default=default
        )
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
