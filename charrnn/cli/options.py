"""typer parameters from the library's option tables (``charrnn.training.config.TRAIN_OPTIONS``,
``charrnn.sampling.options.SAMPLE_OPTIONS``), so a command's flags, defaults, ranges and help are
the ones the library declares and the Python API checks with."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, get_origin

import typer

from charrnn.options import Option

F = TypeVar("F", bound=Callable[..., Any])


def takes(options: Mapping[str, Option]) -> Callable[[F], F]:
    """A decorator: the command's parameters are ``options``, in their order. typer reads a
    command's parameters with ``inspect.signature``, which returns a function's ``__signature__``;
    the command receives them as keywords."""

    def decorate(command: F) -> F:
        signature = inspect.Signature([parameter(o) for o in options.values()])
        command.__signature__ = signature  # type: ignore[attr-defined]
        return command

    return decorate


def parameter(option: Option) -> inspect.Parameter:
    """One option as a typer parameter: an Argument, or an Option with its declarations and
    range; typed Optional where its default is None (not given), as typer expects."""
    if option.argument:
        info = typer.Argument(option.default, metavar=option.metavar, help=option.help)
    else:
        info = typer.Option(option.default, *option.flags, min=option.min, max=option.max, help=option.help)
    optional = option.default is None and get_origin(option.type) is not list
    annotation = option.type | None if optional else option.type
    return inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)
