"""Fountain, the plain-text screenplay markup: cleaning generated text into a valid document, and
scoring how much of a screenplay's structure a text keeps.

A character model writes Fountain that is almost right: a parenthetical whose ``)`` never comes, a
character cue whose dialogue was cut off by ``--length``, a scene heading glued to the line
before it. A Fountain parser reads such text without complaint but renders it wrongly (an unclosed
parenthetical swallows the dialogue after it; a heading without blank lines around it is read
as action or as dialogue). ``clean`` repairs exactly those defects and leaves everything else, so
an already valid document comes back unchanged, and cleaning twice is cleaning once.

The rules follow the Fountain spec (fountain.io/syntax) as screenplain parses it: paragraphs are
separated by blank lines ('' or a single space); a scene heading is a one-line paragraph starting
INT/EXT/EST/INT./EXT/I/E; a character cue is the upper-case first line of a paragraph with more
lines after it; lines starting with '(' inside dialogue are parentheticals; a transition is a
one-line upper-case paragraph ending in TO:.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

# Characters no screenplay holds and some exporters cannot write: C0/C1 controls (XML 1.0 forbids
# them in FDX), U+E700-E706 (screenplain's private emphasis markers: a stray end marker crashes
# its parser), non-characters and lone surrogates.
_UNWRITABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ue700-\ue706\ufffe\uffff\ud800-\udfff]")
_HEADING = re.compile(r"(?:INT\.?/EXT\.?|INT|EXT|EST|I/E)[ .]")
# A line the model meant as a heading: the prefix, not the start of a word like INTO or ESTATE.
_HEADING_LIKE = re.compile(r"(?:INT|EXT|EST|I/E)(?![A-Za-z])")
# A character name as Fountain scripts write one: capitals, optional extensions such as (V.O.)
# or (CONT'D), and a trailing ^ for dual dialogue. Strict on purpose: it decides where a cue that
# lost its blank line begins, and an upper-case line of action (BANG!) must not qualify.
_CUE = re.compile(r"[A-Z][A-Z0-9 .'&\-]{0,38}[A-Z0-9](?: *\([^()\n]*\)?)* *\^?")
_PAGE_BREAK = re.compile(r"={3,}")
_SECTION = re.compile(r"#{1,6}\s*[^#]")
# Upper-case lines of action that read like names: INSERT - THE LEDGER is ruled out by its " - ".
_NOT_CUES = {"BACK TO SCENE", "THE END", "FADE IN", "FADE OUT", "END FLASHBACK", "END OF FLASHBACK", "CONTINUOUS"}
_TITLE_KEY = re.compile(r"([^:]+):\s*(.*)")
_TITLE_VALUE = re.compile(r"(?:\s{3,}|\t)(.+)")


def _blank(line: str) -> bool:
    return line in ("", " ")


def _is_heading(line: str) -> bool:
    """A scene heading with a place after its prefix (a Fountain parser also takes a bare INT.)."""
    text = line.strip()
    return bool(_HEADING.match(text.upper())) and len(text) > 4


def _is_transition(line: str) -> bool:
    """CUT TO: and the like (checked without a regex: generated lines run to 10,000 characters)."""
    text = line.strip()
    return text.endswith(" TO:") and text[:-3].isupper()


def _stands_alone(line: str) -> bool:
    """An upper-case heading, transition or page break: a paragraph of its own in Fountain."""
    return line == line.upper() and (_is_heading(line) or _is_transition(line) or bool(_PAGE_BREAK.fullmatch(line)))


def _is_cue(line: str) -> bool:
    text = line.strip()
    return bool(_CUE.fullmatch(text)) and " - " not in text and text not in _NOT_CUES and not _stands_alone(line)


def _is_dialogue_block(lines: list[str]) -> bool:
    """Whether screenplain reads a paragraph as dialogue: an upper-case first line with more
    lines after it, unless forced action, a run of sections or centred lines."""
    first = lines[0]
    if len(lines) < 2 or first.endswith("  ") or first.startswith("!"):
        return False
    if _SECTION.match(first) and all(_SECTION.match(line) or line.startswith("=") for line in lines):
        return False
    if all(line.strip().startswith(">") and line.strip().endswith("<") for line in lines):  # > centred <
        return False
    if first.startswith("@") and len(first) >= 2:
        return True
    return first.split("(", 1)[0].isupper()


def _depth(line: str) -> int:
    """Parentheses left open at the end of ``line`` (closing ones with none open are ignored)."""
    depth = 0
    for ch in line:
        if ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
    return depth


def _close_parenthetical(line: str) -> list[str]:
    """A parenthetical as lines that each end with ')' (else the parser reads the speech after
    it as parenthetical too): closed at the end of its line if left open, then split after each
    closed group that more text follows on the same line."""
    if _depth(line):
        line = line.rstrip() + ")" * _depth(line)
    out: list[str] = []
    while True:
        end = _group_end(line)
        if end is None:
            return out + [line]
        rest = line[end + 1 :].strip()
        if not rest:
            return out + [line]
        out.append(line[: end + 1])
        if not rest.startswith("("):
            return out + [rest]
        line = rest


def _group_end(line: str) -> int | None:
    """Index of the ')' that closes the line's first '(' (None if it never closes)."""
    depth = 0
    for i, ch in enumerate(line):
        if ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
            if depth == 0:
                return i
    return None


def _fix_dialogue(lines: list[str]) -> list[str]:
    """Close the cue's and the parentheticals' parentheses; a cue left with no line of speech
    after it becomes action (forced with '!')."""
    cue = lines[0]
    if _depth(cue):
        cue = cue.rstrip() + ")" * _depth(cue)
    body: list[str] = []
    for line in lines[1:]:
        body.extend(_close_parenthetical(line) if line.strip().startswith("(") else [line])
    spoken = any(line.strip() and not line.strip().startswith("(") for line in body)
    return [cue if spoken else "!" + cue.removeprefix("@"), *body]


def _split_paragraph(lines: list[str]) -> list[list[str]]:
    """Paragraphs that ran together, apart: a heading, transition or page break on a line of its
    own, and a cue that has a line of speech after it starts a paragraph (except right after
    another cue: that line is shouted dialogue)."""
    if len(lines) < 2 or lines[0].startswith("!"):
        return [lines]
    out: list[list[str]] = [[]]
    for i, line in enumerate(lines):
        if _stands_alone(line):
            out += [[line], []]
        elif (
            out[-1]
            and i + 1 < len(lines)
            and _is_cue(line)
            and not _is_cue(lines[i + 1])
            and not _stands_alone(lines[i + 1])
            and not (len(out[-1]) == 1 and _is_cue(out[-1][0]))
        ):
            out.append([line])
        else:
            out[-1].append(line)
    return [p for p in out if p]


def _title_page_end(lines: list[str]) -> int:
    """Lines of the title page at the top (key: value lines up to the first empty line), or 0."""
    end = next((i for i, line in enumerate(lines) if line == ""), len(lines))
    block, found, i = lines[:end], False, 0
    while i < len(block):
        match = _TITLE_KEY.match(block[i])
        if not match:
            return 0
        i += 1
        if match.group(2):
            found = True
            continue
        while i < len(block) and _TITLE_VALUE.match(block[i]):
            found, i = True, i + 1
    return end if found else 0


def _repair(para: list[str]) -> list[list[str]]:
    """A paragraph as the paragraphs it should be, each repaired. A repair can expose another
    break (the speech split off a parenthetical's line may be a cue), so a repaired piece that
    splits again is repaired again; a piece that does not is final, which makes cleaning
    idempotent."""
    pieces = []
    for piece in _split_paragraph(para):
        fixed = _fix_dialogue(piece) if _is_dialogue_block(piece) else piece
        pieces.extend([fixed] if fixed == piece or len(_split_paragraph(fixed)) == 1 else _repair(fixed))
    return pieces


def clean(text: str) -> str:
    """``text`` as valid Fountain: defects repaired, everything else (wording, spacing, title page,
    notes) kept as it was. Idempotent; a valid document is returned unchanged."""
    lines = _UNWRITABLE.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).split("\n")
    start = _title_page_end(lines)
    out, para = lines[:start], []
    for line in [*lines[start:], None]:
        if line is not None and not _blank(line):
            para.append(line)
            continue
        for n, piece in enumerate(_repair(para) if para else []):
            out.extend([""] * (n > 0) + piece)
        para.clear()
        if line is not None:
            out.append(line)
    return "\n".join(out)


@dataclass
class Structure:
    """How well a text keeps a screenplay's shape. Shares are in [0, 1] (None when the text has
    nothing to count); mean_scene_chars is the mean distance between consecutive headings."""

    chars: int
    cues: int
    cues_with_dialogue: float | None
    parentheticals: int
    parentheticals_closed: float | None
    headings: int
    headings_parsed: float | None
    mean_scene_chars: float | None

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _share(hits: int, total: int) -> float | None:
    return hits / total if total else None


def structure(text: str) -> Structure:
    """Score raw text (not cleaned: cleaning would repair what is measured).

    - a cue is a name-like upper-case line after a blank line; it is followed by dialogue when
      a line of speech comes before the next blank line (parentheticals may come between);
    - a parenthetical is any line starting with '('; closed when that '(' closes on its line;
    - a heading is any line starting INT/EXT/EST/I/E; it parses when it is a paragraph of its own
      (blank lines around it) with a place after the prefix, as a Fountain parser requires;
    - scenes are measured between parsed headings, in characters.
    """
    text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    offsets, pos = [], 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    blank = [_blank(line) for line in lines] + [True]
    cues = spoken = parens = closed = heads = parsed = 0
    starts: list[int] = []
    for i, line in enumerate(lines):
        before = i == 0 or blank[i - 1]
        stripped = line.strip()
        if before and not blank[i] and _is_cue(line):
            cues += 1
            j = i + 1
            while not blank[j] and lines[j].strip().startswith("("):
                j += 1
            spoken += not blank[j]
        if stripped.startswith("("):
            parens += 1
            closed += _first_paren_closes(stripped)
        if _HEADING_LIKE.match(stripped):
            heads += 1
            if before and blank[i + 1] and _is_heading(stripped):
                parsed += 1
                starts.append(offsets[i])
    scene = (starts[-1] - starts[0]) / (len(starts) - 1) if len(starts) > 1 else None
    return Structure(
        len(text), cues, _share(spoken, cues), parens, _share(closed, parens), heads, _share(parsed, heads), scene
    )


def _first_paren_closes(line: str) -> bool:
    depth = 0
    for ch in line:
        depth += (ch == "(") - (ch == ")")
        if depth == 0:
            return True
    return False
