"""A row's text as its tokens arrive: UTF-8 across byte pieces, stop strings across tokens, and
the two lengths (characters for charrnn sample, tokens for the server)."""

from charrnn.sampling.text import LENGTH, STOP, RowText, StopCutter

E_ACUTE = "é".encode()  # two bytes


def _feed(text: RowText, tokens: list[bytes]) -> list[tuple[str, str | None]]:
    out = []
    for token in tokens:
        out.append(text.add(token))
        if out[-1][1] is not None:
            break
    return out


def test_stop_cutter_cuts_exactly_while_streaming():
    text = "abc\n\nINT. HOUSE\nmore"
    for keep, want in ((False, "abc"), (True, "abc\n\nINT.")):
        cut = StopCutter(["\n\nINT."], keep)
        out = ""
        for ch in text:
            out += cut.feed(ch)
            if cut.done:
                break
        assert cut.done and out == want


def test_stop_split_across_tokens_and_inside_a_character():
    # The stop "xé!" begins in one token, its é is split between two, and it ends in a fourth.
    tokens = [b"abx", E_ACUTE[:1], E_ACUTE[1:] + b"!", b"zzz"]
    for per_token in (False, True):
        got = _feed(RowText(100, ["xé!"], per_token=per_token), tokens)
        assert "".join(t for t, _ in got) == "ab" and got[-1][1] == STOP and len(got) == 3
        kept = _feed(RowText(100, ["xé!"], keep_stop=True, per_token=per_token), tokens)
        assert "".join(t for t, _ in kept) == "abxé!" and kept[-1][1] == STOP


def test_text_held_for_a_stop_comes_out_at_the_length():
    # "xy" could begin the stop "xyz" when the length ends the row: it is the row's, not lost.
    got = _feed(RowText(4, ["xyz"]), [b"abx", b"yq"])
    assert got == [("a", None), ("bxy", LENGTH)]
    got = _feed(RowText(2, ["xyz"], per_token=True), [b"abx", b"yq"])
    assert got == [("a", None), ("bxyq", LENGTH)]


def test_a_character_length_cuts_mid_token_and_drops_a_split_character():
    got = _feed(RowText(3, []), [b"ab", b"c" + E_ACUTE[:1], E_ACUTE[1:]])
    assert got == [("ab", None), ("c", LENGTH)]
    # A character completed by the next token counts as one, where it completes.
    got = _feed(RowText(2, []), [b"a" + E_ACUTE[:1], E_ACUTE[1:] + b"b"])
    assert got == [("a", None), ("é", LENGTH)]


def test_a_token_length_ends_on_a_whole_token_and_flushes_a_split_character():
    text = RowText(2, [], per_token=True)
    assert _feed(text, [b"ab", b"c" + E_ACUTE[:1], E_ACUTE[1:]]) == [("ab", None), ("c\ufffd", LENGTH)]
    assert text.count == 2


def test_length_zero_ends_at_once():
    assert RowText(0, ["x"]).add(b"abc") == ("", LENGTH)
