"""Connections that cannot hold the server: uvicorn's h11 protocol with a deadline for a
request's headers and one for a client that stops reading its stream.

uvicorn closes an idle keep-alive connection (``timeout_keep_alive``), but a connection that
sends half its headers, or a stream whose client never reads, it keeps for as long as the
client likes, and its cap on connections (``limit_concurrency``) answers in plain text. The
body's deadline is the app's (``charrnn.serving.http``), which can answer it with a 408.
"""

from __future__ import annotations

import asyncio
import json
import socket

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

# The key of a request's scope that holds its connection (for admission to evict a stalled stream).
CONNECTION = "charrnn.connection"
# Bytes a connection may hold unsent, in the kernel and in the transport, before its writes
# pause: a stream whose client does not read pauses within this much of its text, and its rows
# are parked half a second later. At 64 KiB the fault bench's 48 never-read streams were parked
# 2.2-2.4 s after they were sent and the good clients kept 0.72-0.90x of their quiet throughput;
# at 16 KiB 1.2-1.4 s and 0.81-1.03x (2-core AMD EPYC Zen 3, interleaved runs). A stream sends
# at most 50 events a second of ~190 bytes a choice, so 16 KiB still carries a one-choice
# stream over round trips of up to about a second, and one of eight choices up to ~100 ms.
SEND_BUFFER = 16 * 1024


def _full(max_connections: int) -> bytes:
    """The whole response to a connection past the cap: a 503 in OpenAI's error form."""
    error = {
        "message": f"the server is at its limit of {max_connections} open connections; retry shortly",
        "type": "server_error",
        "param": None,
        "code": "too_many_connections",
    }
    body = json.dumps({"error": error}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Guarded(H11Protocol):
    """uvicorn's h11 protocol with the limits ``guarded_protocol`` sets on a subclass."""

    max_connections = 1000
    read_timeout = 5.0
    stall_timeout = 10.0
    headers_due: asyncio.TimerHandle | None = None
    stalled: asyncio.TimerHandle | None = None
    paused_at: float | None = None  # loop.time() when writes last paused on the client

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.write(_full(self.max_connections))
            transport.close()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER // 2)
        transport.set_write_buffer_limits(high=SEND_BUFFER // 2)
        self.headers_due = self.loop.call_later(self.read_timeout, self.too_slow)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self.cancel()
            if self.scope is not None:  # None until a request parsed (a malformed first one never does)
                self.scope[CONNECTION] = self  # type: ignore[literal-required]  # read before the app runs

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.cancel()
            self.headers_due = self.loop.call_later(self.read_timeout, self.too_slow)

    def too_slow(self) -> None:
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()

    def pause_writing(self) -> None:
        super().pause_writing()
        self.paused_at = self.loop.time()
        self.stalled = self.loop.call_later(self.stall_timeout, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        self.paused_at = None
        if self.stalled is not None:
            self.stalled.cancel()
            self.stalled = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel()
        if self.stalled is not None:
            self.stalled.cancel()
        super().connection_lost(exc)

    def stalled_for(self) -> float:
        """Seconds this connection's writes have waited on its client (0 while they flow)."""
        return 0.0 if self.paused_at is None else self.loop.time() - self.paused_at

    def evict(self) -> None:
        """Close the connection now, as the stall timeout would: its stream ends as a hang-up."""
        self.transport.abort()

    def cancel(self) -> None:
        if self.headers_due is not None:
            self.headers_due.cancel()
            self.headers_due = None


def guarded_protocol(max_connections: int, read_timeout: float, stall_timeout: float) -> type[Guarded]:
    """The protocol class for uvicorn's ``http``: past ``max_connections`` open connections a
    new one is answered 503 and closed; a request's headers must arrive within
    ``read_timeout`` seconds of its connection opening (or of its last response), and a
    connection whose writes have waited on the client for ``stall_timeout`` seconds is closed
    (its stream then ends as a hang-up does: its rows are freed at the next tick)."""
    limits = {"max_connections": max_connections, "read_timeout": read_timeout, "stall_timeout": stall_timeout}
    return type("Guarded", (Guarded,), limits)
