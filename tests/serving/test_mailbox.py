"""A request's mailbox says its reader is behind once its text has waited untaken for
``BEHIND_AFTER`` (the engine then parks its rows), and not once the reader has taken it."""

import asyncio
import time

from charrnn.serving import mailbox
from charrnn.serving.mailbox import Mailbox


def test_text_left_untaken_makes_a_reader_behind_after_a_while(monkeypatch):
    monkeypatch.setattr(mailbox, "BEHIND_AFTER", 0.05)
    loop = asyncio.new_event_loop()
    box = Mailbox(loop)
    assert not box.behind
    box.post((0, "a", None))
    assert not box.behind
    time.sleep(0.1)
    assert box.behind
    assert box.take() == [(0, "a", None)] and not box.behind
    loop.close()
