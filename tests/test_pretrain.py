"""bench/pretrain.py's rewrites of the books. Unwrapping: Gutenberg's filled paragraphs become
one line each, as screenplays and drafts write them, while verse, cues and indented lines keep
their breaks. Cue layout: a play's ``NAME. Speech`` becomes a screenplay's cue over its speech."""

import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from pretrain import cue_layout, unwrap  # noqa: E402

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


PLAY = """ACT I.

A room. NORA comes in.

Nora. Is that my little lark twittering out there?

Mrs. Linde (shyly). How do you do, Nora?

Nora. Yes; odds and ends, needlework,
crotchet-work, and that kind of thing.

Mrs. Linde. You spent a whole year in Italy.

Nora. Oh yes.

Mrs. Linde. So I should think.

     KROGSTAD. Hum,--all the Jews in Malta must be there!
     Ay, like enough.

KROGSTAD.

[Rising.] Yes, the young couple.

KROGSTAD. No.

Yes. She goes out. Yes. Yes. Yes.

Yes. Then the door.

Yes. Then the curtain.

A MAN. Once only.
"""


LAID_OUT = """ACT I.

A room. NORA comes in.

NORA
Is that my little lark twittering out there?

MRS. LINDE
(shyly)
How do you do, Nora?

NORA
Yes; odds and ends, needlework,
crotchet-work, and that kind of thing.

MRS. LINDE
You spent a whole year in Italy.

NORA
Oh yes.

MRS. LINDE
So I should think.

     KROGSTAD
     Hum,--all the Jews in Malta must be there!
     Ay, like enough.

KROGSTAD
[Rising.] Yes, the young couple.

KROGSTAD
No.

Yes. She goes out. Yes. Yes. Yes.

Yes. Then the door.

Yes. Then the curtain.

A MAN. Once only.
"""


def test_a_plays_cues_go_on_their_own_line_over_the_speech():
    assert cue_layout(PLAY) == LAID_OUT


def test_text_without_cues_is_left_as_it_is():
    prose = textwrap.fill(PROSE, width=72) + "\n\nMr. Lorry. He said so.\n"
    assert cue_layout(prose) == prose
    assert cue_layout("") == ""
