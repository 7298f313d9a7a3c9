"""Samples as screenplays: cleaned Fountain, or typeset as HTML, PDF or Final Draft's FDX.

screenplain (MIT) parses the Fountain and lays out the pages; it is an optional extra, imported
only when a typeset format is asked for, so plain sampling never pays for it. Every format starts
from ``fountain.clean``: a parser given a sample as it comes renders an unclosed parenthetical
as swallowing the dialogue after it, and a few characters (controls, screenplain's own private
markers) would make the XML invalid or crash its parser.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

from charrnn.errors import CharrnnError
from charrnn.runtime.files import write_atomic
from charrnn.screenplay.fountain import clean

FORMATS = ("text", "fountain", "html", "pdf", "fdx")
TYPESET = ("html", "pdf", "fdx")
BINARY = ("pdf",)
SUFFIXES = {".fountain": "fountain", ".html": "html", ".htm": "html", ".pdf": "pdf", ".fdx": "fdx"}
INSTALL = "pip install 'charrnn[screenplay]'"
_CHAR = 7.2  # Courier is 10 characters to the inch at 12 pt
# The layout screenplay software uses (US Letter, from the page's left edge): action at 1.5",
# dialogue 2.5"-6.0", parentheticals 3.1"-5.6", character cues at 3.7"; screenplain's frame starts
# at 1.5" and is 61 characters wide, so these are offsets into it in characters.
_CUE_INDENT, _DIALOGUE, _PAREN = 22, (10, 45), (16, 41)
_TITLE_CSS = ".title-page{text-align:center;margin-bottom:48pt}.title-page .title{font-size:24pt;margin-bottom:12pt}"


def format_for(fmt: str | None, output: Path | None) -> str:
    """The format asked for, or the one the output file's suffix names, or text."""
    if fmt is None:
        return SUFFIXES.get(output.suffix.lower(), "text") if output is not None else "text"
    if fmt not in FORMATS:
        raise CharrnnError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    return fmt


def require(fmt: str) -> None:
    """The typeset formats need the screenplay extra; say how to get it in one line."""
    if fmt not in TYPESET:
        return
    try:
        import reportlab  # noqa: F401  (screenplain's PDF export needs it; the extra brings both)
        import screenplain  # noqa: F401
    except ImportError:
        raise CharrnnError(f"--format {fmt} needs screenplain and reportlab: {INSTALL}") from None


def title_page(title: str | None, author: str | None) -> str:
    """A Fountain title page (empty without a title or author), values kept to one line each."""
    lines = []
    for key, value in (("Title", title), ("Author", author)):
        if value is not None:
            value = " ".join(value.split())
            if not value:
                raise CharrnnError(f"--{key.lower()} must not be empty")
            lines.append(f"{key}: {value}")
            if key == "Title" and author is not None:
                lines.append("Credit: Written by")
    return "\n".join(lines) + "\n\n" if lines else ""


def to_fountain(text: str, title: str | None = None, author: str | None = None) -> str:
    """The sample as a valid Fountain document, with a title page when one is given."""
    body = clean(text)
    return title_page(title, author) + body if title is not None or author is not None else body


def render(text: str, fmt: str, title: str | None = None, author: str | None = None) -> bytes:
    """Any text as a document in ``fmt``; whatever the model wrote, this does not fail."""
    source = to_fountain(text, title, author) if fmt != "text" else text
    if fmt in ("text", "fountain"):
        return source.encode("utf-8")
    require(fmt)
    from screenplain.parsers import fountain as parser

    play = parser.parse(io.StringIO(source))
    return {"html": _html, "pdf": _pdf, "fdx": _fdx}[fmt](play)


def _title_lines(play: Any) -> list[tuple[str, Any]]:
    return [
        (key, line)
        for key in ("Title", "Credit", "Author", "Authors", "Source")
        for line in play.get_rich_attribute(key)
    ]


def _html(play) -> bytes:
    """screenplain's HTML body and stylesheet, in a page of our own that carries the title page
    (screenplain's own page leaves it out)."""
    from html import escape

    from screenplain.export import html

    body = io.StringIO()
    html.convert_bare(play, body)
    with open(Path(html.__file__).with_name("default.css"), encoding="utf-8") as f:
        css = f.read()
    lines = _title_lines(play)
    cover = "".join(f'<p class="{key.lower()}">{line.to_html()}</p>' for key, line in lines)
    name = " ".join(str(line) for key, line in lines if key == "Title") or "Screenplay"
    page = (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{escape(name)}</title>'
        f"<style>{css}{_TITLE_CSS}</style></head><body>"
        f'<div id="wrapper" class="screenplay">\n'
        + (f'<div class="title-page">{cover}</div>\n' if cover else "")
        + body.getvalue()
        + "</div></body></html>\n"
    )
    return page.encode("utf-8")


def _fdx(play) -> bytes:
    """Final Draft XML from screenplain, with the title page Final Draft keeps apart."""
    from xml.sax.saxutils import escape

    from screenplain.export.fdx import to_fdx

    out = io.StringIO()
    to_fdx(play, out)
    doc = out.getvalue()
    lines = _title_lines(play)
    if lines:
        paragraphs = "".join(
            f'      <Paragraph Alignment="Center" Type="Action">\n        <Text>{escape(str(line))}</Text>\n'
            "      </Paragraph>\n"
            for _, line in lines
        )
        cover = f"  <TitlePage>\n    <Content>\n{paragraphs}    </Content>\n  </TitlePage>\n"
        doc = doc.replace("</FinalDraft>", cover + "</FinalDraft>")
    return doc.encode("utf-8")


def _pdf(play) -> bytes:
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.platypus import Spacer
    from screenplain.export import pdf

    settings = pdf.Settings()  # Courier Prime 12 pt, US Letter, 1.5" left and 1" top margins
    width = settings.frame_width

    def columns(style: ParagraphStyle, left: int, right: int | None = None) -> ParagraphStyle:
        extra = {"rightIndent": width - right * _CHAR} if right is not None else {}
        return ParagraphStyle(style.name, style, leftIndent=left * _CHAR, **extra)

    settings.character_style = columns(settings.character_style, _CUE_INDENT)
    settings.dialog_style = columns(settings.dialog_style, *_DIALOGUE)
    settings.parenthentical_style = columns(settings.parenthentical_style, *_PAREN)

    class Template(pdf.DocTemplate):
        """Keeps a heading or cue with what follows only when it fits on half a page: reportlab
        loops forever keeping a paragraph taller than the page with the next one (the pieces it
        splits into take the style's keepWithNext, so the style is what must change)."""

        def build(self, flowables, *args, **kwargs):
            if not flowables:  # nothing printable (only sections, notes or boneyard): one blank page
                flowables.append(Spacer(0, 0))
            for i, f in enumerate(flowables):
                if f.getKeepWithNext() and f.wrap(width, settings.frame_height)[1] > settings.frame_height / 2:
                    # A heading with scene numbers cannot split across pages: it goes plain.
                    f = flowables[i] = getattr(f, "slug_paragraph", f)
                    f.style = ParagraphStyle(f.style.name, f.style, keepWithNext=0)
            super().build(flowables, *args, **kwargs)

    out = io.BytesIO()
    pdf.to_pdf(play, out, template_constructor=Template, settings=settings)
    return out.getvalue()


class Writer:
    """Collects a sample and, at close, writes it in its format to a file or to stdout.

    Built (and checked) before the model loads, so a bad --format, a PDF for a terminal or a
    missing extra is reported at once, not after minutes of generation.
    """

    def __init__(self, fmt: str, output: Path | None, title: str | None, author: str | None) -> None:
        if fmt == "text" and (title is not None or author is not None):
            raise CharrnnError("--title and --author fill a title page: give --format fountain, html, pdf or fdx")
        if fmt in BINARY and output is None and sys.stdout.isatty():
            raise CharrnnError(f"--format {fmt} is binary and stdout is a terminal: give -o FILE")
        if output is not None and output.is_dir():
            raise CharrnnError(f"-o {output}: is a directory")
        require(fmt)
        title_page(title, author)
        self.fmt, self.output, self.title, self.author = fmt, output, title, author
        self.parts: list[str] = []

    def write(self, text: str) -> None:
        self.parts.append(text)

    def close(self) -> None:
        data = render("".join(self.parts), self.fmt, self.title, self.author)
        if self.output is not None:
            write_atomic(self.output, data)
            print(f"wrote {self.output}", file=sys.stderr)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()


def writer(fmt: str | None, output: Path | None, title: str | None, author: str | None) -> Writer | None:
    """The writer for ``charrnn sample``'s --format/-o, or None for text streamed to stdout."""
    fmt = format_for(fmt, output)
    if fmt == "text" and output is None and title is None and author is None:
        return None
    return Writer(fmt, output, title, author)
