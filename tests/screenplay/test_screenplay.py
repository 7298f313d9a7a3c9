"""Samples as screenplays: Fountain cleaning, the structure score, and the typeset formats
(HTML, PDF, FDX) read back the way a user's tools would read them."""

import io
import os
import pty
import random
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import TINY, run_cli

from charrnn.screenplay.fountain import clean, structure
from charrnn.screenplay.typeset import render

pytest.importorskip("screenplain")
pypdf = pytest.importorskip("pypdf")
from screenplain.parsers import fountain as screenplain_parser  # noqa: E402
from screenplain.types import Action, Dialog, Slug  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = sorted([*ROOT.glob("charrnn/demo/*.fountain"), *ROOT.glob("corpora/*.fountain")])
PRIME = "INT. KITCHEN - NIGHT\n\nRain on the window.\n\nMARGARET\n(quietly)\nHello.\n\nCUT TO:\n\n"


def parse(text: str):
    return list(screenplain_parser.parse(io.StringIO(text)))


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_bundled_screenplays_are_valid_fountain_and_left_as_they_are(path):
    text = path.read_text(encoding="utf-8")
    assert clean(text) == text
    score = structure(text)
    assert score.parentheticals_closed == 1.0 and score.headings_parsed == 1.0
    assert score.cues_with_dialogue > 0.8


@pytest.mark.parametrize(
    "raw, cleaned",
    [
        ("MARGARET\n(quietly\nGo home.\n", "MARGARET\n(quietly)\nGo home.\n"),
        ("BOB\n((a) b\nhi", "BOB\n((a) b)\nhi"),
        ("DEVON (V.O.\nHello.", "DEVON (V.O.)\nHello."),
        ("DEVON\n(softly) Hello.\n", "DEVON\n(softly)\nHello.\n"),
        ("She waits.\n\nMARGARET\n(beat", "She waits.\n\n!MARGARET\n(beat)"),
        ("She sits.\nINT. KITCHEN - NIGHT\nThe kettle.", "She sits.\n\nINT. KITCHEN - NIGHT\n\nThe kettle."),
        ("She sits.\nDEVON\nHello.", "She sits.\n\nDEVON\nHello."),
        ("MARGARET\nGo.\nDEVON\nNo.", "MARGARET\nGo.\n\nDEVON\nNo."),
        ("He leaves.\nCUT TO:\nEXT. ROAD - DAY\n", "He leaves.\n\nCUT TO:\n\nEXT. ROAD - DAY\n"),
        ("A\x00B\x1b\ue701C\r\nD", "ABC\nD"),
        ("MARGARET\nGET OUT\nNow.", "MARGARET\nGET OUT\nNow."),  # shouted speech, not a new cue
        ("She opens it.\nBANG!\nSilence.", "She opens it.\nBANG!\nSilence."),
    ],
)
def test_clean_repairs_half_formed_fountain_and_is_idempotent(raw, cleaned):
    assert clean(raw) == cleaned
    assert clean(cleaned) == cleaned


def test_cleaned_fountain_parses_as_the_writer_meant():
    play = parse(clean("INT. LAB - NIGHT\nMARGARET\n(whispering\nIt moved.\nDEVON\n(beat"))
    assert [type(p) for p in play] == [Slug, Dialog, Action]
    assert [(paren, str(line)) for paren, line in play[1].blocks] == [(True, "(whispering)"), (False, "It moved.")]
    assert [str(line) for line in play[2].lines] == ["DEVON", "(beat)"]  # a cue with no speech: action


def test_structure_score_counts_what_a_parser_would_read():
    text = (
        "INT. HOUSE - DAY\n\n"  # parsed heading, at offset 0
        "BOB\n(quietly\nHi.\n\n"  # cue with speech; parenthetical left open
        "ANNA\n\n"  # cue with nothing after it
        "EXT. YARD - NIGHT\nMore.\n\n"  # heading glued to action: does not parse
        "CARL\n(fine)\n(still fine)\n\n"  # cue with only parentheticals; two closed
        "INT. SHED - DAY\n\n"  # parsed heading
        "INTO the dark.\n"
    )  # not a heading at all
    s = structure(text)
    assert (s.cues, s.cues_with_dialogue) == (3, pytest.approx(1 / 3))
    assert (s.parentheticals, s.parentheticals_closed) == (3, pytest.approx(2 / 3))
    assert (s.headings, s.headings_parsed) == (3, pytest.approx(2 / 3))
    assert s.mean_scene_chars == text.index("INT. SHED")
    assert structure("no screenplay here").as_dict()["cues_with_dialogue"] is None


FRAGMENTS = [
    "INT. ",
    "EXT. HARBOUR - NIGHT",
    "INT./EXT. CAR - DAY",
    "I/E VAN",
    ".FLASHBACK",
    "int. kitchen - day",
    "MARGARET",
    "DEVON (V.O.",
    "@McCLANE",
    "BARNABY ^",
    "(quietly)",
    "(quietly",
    "((nested)",
    "(a (b) c",
    ")(",
    "CUT TO:",
    "> THE END <",
    ">BURN TO WHITE",
    "===",
    "# ACT ONE",
    "= synopsis",
    "Title: X",
    "Author:",
    "   value",
    "!FORCED",
    "~lyric",
    "[[note",
    "]]",
    "/*",
    "*/",
    "*italic",
    "**bold**",
    "_under",
    "\\*",
    "  ",
    " ",
    "\t",
    "She walks in.",
    "BANG!",
    "\ue701",
    "\x00\x07",
    "\r\n",
    "\r",
    "\u2028",
    "\ufffe",
    "😀",
    "\u0301",
]


def fuzz_document(rng: random.Random) -> str:
    """Random and half-formed Fountain: fragments in any order, runs of random code points,
    lines of 10,000 characters, texts with no newline at all, and a cue at the very end."""
    kind = rng.random()
    if kind < 0.15:
        return "".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(1, 2000)))
    if kind < 0.25:
        return " ".join(rng.choice(FRAGMENTS) for _ in range(rng.randrange(1, 300)))
    parts = []
    for _ in range(rng.randrange(1, 60)):
        r = rng.random()
        if r < 0.03:
            parts.append(rng.choice(["x", "(", "INT. ", "BOB ", "(a) "]) * (10_000 // rng.choice([1, 5])))
        elif r < 0.1:
            parts.append("".join(chr(rng.randrange(0x110000)) for _ in range(rng.randrange(1, 40))))
        else:
            parts.append(rng.choice(FRAGMENTS))
        parts.append(rng.choice(["\n", "\n", "\n\n", "", " "]))
    return "".join(parts) + rng.choice(["", "\n\nMARGARET", "\nDEVON\n(whisp"])


def check_document(data: bytes, fmt: str) -> None:
    if fmt == "pdf":
        reader = pypdf.PdfReader(io.BytesIO(data))
        assert len(reader.pages) >= 1
        reader.pages[-1].extract_text()
    elif fmt == "fdx":
        assert ET.fromstring(data).tag == "FinalDraft"
    elif fmt == "html":
        page = data.decode("utf-8")
        assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    else:
        assert clean(data.decode("utf-8")) == data.decode("utf-8")


def test_any_text_renders_in_every_format():
    rng = random.Random(25)
    for _ in range(40):
        text = fuzz_document(rng)
        assert clean(clean(text)) == clean(text)
        structure(text)
        title = rng.choice([None, "T & <x>"])
        for fmt in ("fountain", "html", "pdf", "fdx"):
            check_document(render(text, fmt, title=title, author=rng.choice([None, "A"])), fmt)


# --- through the command line, from a model trained on the bundled screenplay ---


@pytest.fixture(scope="module")
def fountain_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fountain-run")
    r = run_cli("train", *BUNDLED, *TINY, "--steps", "150", "--eval-every", "150", "--out", out, "--quiet")
    assert r.exit_code == 0, r.stderr
    return out


def sample(run: Path, *args: str):
    return run_cli("sample", run, "--prime", PRIME, "--length", "1500", "--seed", "3", *args)


def test_sampled_text_cleans_to_what_fountain_format_writes(fountain_run):
    text = sample(fountain_run).stdout
    r = sample(fountain_run, "--format", "fountain")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == clean(text) and clean(r.stdout) == r.stdout
    wild = run_cli("sample", fountain_run, "--temp", "3", "--length", "3000", "--seed", "1").stdout
    assert clean(clean(wild)) == clean(wild)
    for fmt in ("html", "pdf", "fdx"):
        check_document(render(wild, fmt), fmt)


def text_layer(path: Path) -> tuple[int, list[tuple[float, float, str, str]]]:
    """Page count and (x, font size, font, line) of every line drawn on the pages after the first."""
    reader = pypdf.PdfReader(path)
    lines = []
    for page in reader.pages[1:]:
        page.extract_text(
            visitor_text=lambda text, cm, tm, font, size: (
                text.strip()
                and lines.append(
                    (round(cm[4] + tm[4], 1), size, font.get("/BaseFont", "") if font else "", text.strip())
                )
            )
        )
    return len(reader.pages), lines


def test_pdf_is_a_typeset_screenplay(fountain_run, tmp_path):
    out = tmp_path / "scene.pdf"
    r = sample(fountain_run, "--format", "pdf", "-o", out, "--title", "Gull Point", "--author", "A. Writer")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "" and f"wrote {out}" in r.stderr
    assert "Gull Point" in pypdf.PdfReader(out).pages[0].extract_text()  # the title page
    pages, lines = text_layer(out)
    assert pages >= 2
    at: dict[str, float] = {}
    for x, _, _, line in lines:
        at.setdefault(line, x)
    # Screenplay layout from the page's left edge: action and headings 1.5", dialogue 2.5",
    # parentheticals 3.1", character cues 3.7"; Courier 12 pt throughout.
    assert at["INT. KITCHEN - NIGHT"] == 108.0 and at["Rain on the window."] == 108.0
    assert (at["MARGARET"], at["(quietly)"], at["Hello."]) == (266.4, 223.2, 180.0)
    assert {size for _, size, _, _ in lines} == {12.0}
    assert all("Courier" in font for _, _, font, _ in lines)
    fountain = sample(fountain_run, "--format", "fountain").stdout
    cues = {str(p.character) for p in parse(fountain) if isinstance(p, Dialog)}
    assert "MARGARET" in cues
    assert {c for c in cues if len(c) < 30 and c.isascii()} <= set(at)  # longer ones wrap


class Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.found: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        self.open.append(dict(attrs).get("class") or tag)

    def handle_endtag(self, tag):
        self.open.pop()

    def handle_data(self, data):
        if self.open and data.strip():
            self.found.append((self.open[-1], data.strip()))


def test_html_holds_the_elements_fountain_defines(fountain_run, tmp_path):
    out = tmp_path / "scene.html"
    assert sample(fountain_run, "-o", out, "--title", "Gull Point").exit_code == 0  # format from the suffix
    page = Elements()
    page.feed(out.read_text(encoding="utf-8"))
    found = page.found
    for element in [
        ("h6", "INT. KITCHEN - NIGHT"),
        ("p", "Rain on the window."),
        ("character", "MARGARET"),
        ("parenthetical", "(quietly)"),
        ("p", "Hello."),
        ("transition", "CUT TO:"),
    ]:
        assert element in found
    assert '<div class="title-page"><p class="title">Gull Point</p>' in out.read_text(encoding="utf-8")


def test_fdx_is_final_draft_xml(fountain_run, tmp_path):
    out = tmp_path / "scene.fdx"
    assert sample(fountain_run, "--format", "fdx", "-o", out, "--author", "A. Writer").exit_code == 0
    root = ET.parse(out).getroot()
    paragraphs = [
        (p.get("Type"), "".join(t.text or "" for t in p.iter("Text")).strip())
        for p in root.find("Content").iter("Paragraph")
    ]
    for element in [
        ("Scene Heading", "INT. KITCHEN - NIGHT"),
        ("Action", "Rain on the window."),
        ("Character", "MARGARET"),
        ("Parenthetical", "(quietly)"),
        ("Dialogue", "Hello."),
        ("Transition", "CUT TO:"),
    ]:
        assert element in paragraphs
    assert "A. Writer" in [t.text for t in root.find("TitlePage").iter("Text")]


def test_pdf_goes_to_a_pipe_and_replaces_a_file_atomically(fountain_run, tmp_path):
    r = sample(fountain_run, "--format", "pdf")
    assert r.exit_code == 0 and r.stdout_bytes.startswith(b"%PDF")
    out = tmp_path / "scene.pdf"
    out.write_text("old")
    assert sample(fountain_run, "--format", "pdf", "-o", out).exit_code == 0
    assert out.read_bytes().startswith(b"%PDF") and [p.name for p in tmp_path.iterdir()] == ["scene.pdf"]


def test_pdf_is_never_written_to_a_terminal(fountain_run):
    leader, follower = pty.openpty()
    try:
        r = subprocess.run(
            [sys.executable, "-m", "charrnn", "sample", str(fountain_run), "--format", "pdf"],
            stdout=follower,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        os.set_blocking(leader, False)
        try:
            written = os.read(leader, 1 << 16)
        except BlockingIOError:
            written = b""
    finally:
        os.close(leader)
        os.close(follower)
    assert r.returncode == 2 and written == b""
    assert r.stderr.decode().splitlines() == ["error: --format pdf is binary and stdout is a terminal: give -o FILE"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--format", "docx"], "--format must be one of text, fountain, html, pdf, fdx (got 'docx')"),
        (["--title", "T"], "--title and --author fill a title page"),
        (["--format", "pdf", "--json", "-o", "x.pdf"], "--json writes JSON lines to stdout"),
        (["--format", "html", "--title", "  "], "--title must not be empty"),
        (["-o", "."], "-o .: is a directory"),
        (["--format", "fdx", "-o", "no/such/dir/x.fdx"], "cannot write no/such/dir/x.fdx"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(fountain_run, args, message):
    r = run_cli("sample", fountain_run, "--length", "20", *args)
    assert r.exit_code == 2
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: " + message)
    assert r.stdout == ""


def test_missing_extra_names_it(fountain_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "screenplain", None)  # as if not installed
    r = run_cli("sample", fountain_run, "--format", "html")
    assert r.exit_code == 2
    assert r.stderr == "error: --format html needs screenplain and reportlab: pip install 'charrnn[screenplay]'\n"
    assert run_cli("sample", fountain_run, "--length", "10", "--format", "fountain").exit_code == 0
