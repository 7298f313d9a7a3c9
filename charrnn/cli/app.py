"""The ``charrnn`` command line: one typer app with the commands of this package, and ``main``.

Torch is imported inside the commands, never at module level, so ``charrnn --help`` is instant.
Every user error ends as one line ``error: ...`` on stderr with exit code 2.
"""

from __future__ import annotations

import sys

import typer

from charrnn.cli.errors import detach_stdout
from charrnn.cli.examine import evaluate, export, info, plot, viz
from charrnn.cli.sample import sample
from charrnn.cli.serve import serve
from charrnn.cli.train import train

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rendering it with rich costs ~0.2 s of imports per call
    help="Train character-level recurrent language models on any text and sample from them.",
)
app.command()(train)
app.command()(sample)
app.command()(serve)
app.command()(info)
app.command("eval")(evaluate)
app.command("export")(export)
app.command()(plot)
app.command()(viz)

# Click's UsageError, whether Typer uses click itself or (newer Typer) its vendored copy.
UsageError: type[typer.TyperException] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


def _show_version(value: bool) -> None:
    if value:
        from charrnn._version import __version__

        print(f"charrnn {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_show_version, help="Show the version and exit."
    ),
) -> None:
    """Train character-level recurrent language models on any text and sample from them."""


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
        detach_stdout()
        code = 0
    sys.exit(code if isinstance(code, int) else 0)
