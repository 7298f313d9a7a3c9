"""MkDocs hook: pages the site builds from the repository instead of keeping copies in docs/.

- ``cli.md``: the command-line reference, generated from the typer app at build time by typer's
  own docs generator, so its flags, ranges and help cannot drift from the code. (mkdocs-click
  checks options against click's own classes; typer 0.29 builds its commands on a vendored copy
  of click, so mkdocs-click lists no options for them.)
- ``index.md`` and ``changelog.md``: README.md and CHANGELOG.md, their ``docs/`` links made
  relative to the site.

And on every page, a code fence's words after its language (```` ```sh no-test ````, which
tests/test_docs.py reads) are dropped before Markdown sees them: Markdown takes a fence with more
than a language for text, and the rest of the page with it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def cli_reference() -> str:
    import typer.cli
    import typer.main
    import typer.models

    from charrnn.cli.app import app

    command = typer.main.get_command(app)
    ctx = typer.models.Context(command, info_name="charrnn")
    text = typer.cli.get_docs_for_click(obj=command, ctx=ctx, name="charrnn", title="Command-line reference")
    intro = (
        "Every command and option, generated from the command line's own declarations when this site "
        "is built. `charrnn COMMAND --help` prints the same.\n\n"
    )
    heading, _, rest = text.partition("\n")
    return heading + "\n\n" + intro + re.sub(r"^\* \n", "", rest, flags=re.M)


def _site_links(text: str) -> str:
    text = re.sub(r"\]\(docs/", "](", text)
    return re.sub(r"\]\(CHANGELOG\.md", "](changelog.md", text)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return re.sub(r"^(\s*```[\w+-]+)[ \t]+[^\n{]*$", r"\1", markdown, flags=re.M)


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    pages = {
        "index.md": _site_links((ROOT / "README.md").read_text(encoding="utf-8")),
        "changelog.md": _site_links((ROOT / "CHANGELOG.md").read_text(encoding="utf-8")),
        "cli.md": cli_reference(),
    }
    for name, content in pages.items():
        files.append(File.generated(config, name, content=content))
    return files
