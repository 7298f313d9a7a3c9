"""bench/pretrain.py's unwrapping: Gutenberg's filled paragraphs become one line each, as
screenplays and drafts write them, while verse, cues and indented lines keep their breaks."""

import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from pretrain import unwrap  # noqa: E402

PROSE = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the "
    "age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the "
    "season of Light, it was the season of Darkness."
)
VERSE = "Thus trolls our fortune in by land and sea,\nAnd thus are we on every side enrich'd:\n"


def test_a_filled_paragraph_becomes_its_one_line_and_verse_keeps_its_breaks():
    filled = textwrap.fill(PROSE, width=72)
    assert filled.count("\n") >= 2
    text = f"{filled}\n\n{VERSE}\nNORA. [sitting] Yes.\nHELMER. No.\n\n{filled}\n"
    assert unwrap(text) == f"{PROSE}\n\n{VERSE}\nNORA. [sitting] Yes.\nHELMER. No.\n\n{PROSE}\n"


def test_indented_lines_and_lines_that_left_room_stay():
    filled = textwrap.fill(PROSE, width=72)
    quote = "    An indented line of a quotation that runs on\n    and on."
    short = "A line that ends early.\nThe next one starts its own thought."
    text = f"{filled}\n{quote}\n\n{short}\n"
    assert unwrap(text) == f"{PROSE}\n{quote}\n\n{short}\n"
    assert unwrap("") == "" and unwrap("one line") == "one line"


def test_a_line_broken_at_a_hyphen_or_a_dash_joins_without_a_space():
    prose = (
        "The well-known house stood--so the neighbours said--on a hill-top above the river, "
        "half-hidden by old-fashioned hedges, where the long-suffering housekeeper kept a "
        "never-ending watch over the self-satisfied cat and its ever-growing family of kittens."
    )
    filled = textwrap.fill(prose, width=52, break_on_hyphens=True)  # breaks after "said--" and "old-"
    assert any(line.endswith("-") for line in filled.split("\n")), filled
    assert unwrap(f"{filled}\n\n{filled}\n") == f"{prose}\n\n{prose}\n"
