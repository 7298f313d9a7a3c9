"""A row's text as its tokens arrive: decoded, cut at the first stop string, ended at a length.

One class for ``charrnn sample`` (a length in characters) and the server (a length in tokens,
``max_tokens``, and the reason a text ended), so a seeded request's text is the sample's.
"""

from __future__ import annotations

import codecs

# Why a row's text ended: it reached its length, or a stop string.
LENGTH, STOP = "length", "stop"


class StopCutter:
    """Emits a row's text as it grows, holding back only what could still begin a stop string."""

    def __init__(self, stops: list[str], keep: bool) -> None:
        self.stops = stops
        self.keep = keep
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.pending = ""
        self.done = False

    def feed(self, text: str) -> str:
        self.pending += text
        if self.stops:
            hits = [(self.pending.find(s), s) for s in self.stops if s in self.pending]
            if hits:
                pos, stop = min(hits)
                self.done = True
                out = self.pending[: pos + (len(stop) if self.keep else 0)]
                self.pending = ""
                return out
        if self.hold == 0:
            out, self.pending = self.pending, ""
        else:
            out, self.pending = self.pending[: -self.hold], self.pending[-self.hold :]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class RowText:
    """One row's text: token bytes decoded as they complete a character (a subword's byte pieces
    may split one), cut at the first stop string (``keep_stop`` keeps it), and ended after
    ``length`` characters, or ``length`` tokens with ``per_token``.

    A character count cuts mid-token and drops a character still incomplete at the cut, which
    has not been counted; a token count ends on a whole token, so what its bytes left
    incomplete is flushed as U+FFFD rather than lost.
    """

    def __init__(self, length: int, stops: list[str], keep_stop: bool = False, per_token: bool = False) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.cutter = StopCutter(stops, keep_stop) if stops else None
        self.length = length
        self.per_token = per_token
        self.count = 0

    def add(self, token_bytes: bytes) -> tuple[str, str | None]:
        """The text this token adds, and why the row ended (``LENGTH``, ``STOP``) if it did."""
        piece = self.decoder.decode(token_bytes)
        if self.per_token:
            self.count += 1
        else:
            piece = piece[: self.length - self.count]
            self.count += len(piece)
        finish = LENGTH if self.count >= self.length else None
        if finish is not None and self.per_token:
            piece += self.decoder.decode(b"", final=True)
        if self.cutter is not None:
            piece = self.cutter.feed(piece)
            if self.cutter.done:
                finish = STOP
            elif finish is not None:
                piece += self.cutter.flush()
        return piece, finish
