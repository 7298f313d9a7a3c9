"""The ``charrnn`` command line: typer commands that parse flags, call the library and print."""

from charrnn.cli.app import main

__all__ = ["main"]
