"""Listening: the socket bound up front (a port in use is one error line), uvicorn serving the app,
and signals that end every open stream with a last chunk before the process exits."""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
from collections.abc import Iterator
from types import FrameType

import uvicorn

from charrnn.errors import CharrnnError, ServerFailed
from charrnn.serving import memory
from charrnn.serving.crosssite import exposed_warning
from charrnn.serving.guard import guarded_protocol
from charrnn.serving.http import create_app
from charrnn.serving.models import ServerState

# Seconds an idle keep-alive connection stays open (uvicorn's own default, stated here).
KEEP_ALIVE = 5


class _Server(uvicorn.Server):
    """uvicorn, but a signal first ends every open stream with a last chunk, and the process
    then exits 0 (uvicorn re-raises the signal after a graceful stop)."""

    def __init__(self, config: uvicorn.Config, state: ServerState, url: str) -> None:
        super().__init__(config)
        self.charrnn, self.url = state, url
        self.dead_ticks = 0

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        for engine in self.charrnn.engines:
            engine.finish_all()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    async def on_tick(self, counter: int) -> bool:
        """Stop (gracefully, as on a signal) a second after a model's worker has stopped for
        good: meanwhile /health answers 503 and the failed requests' answers go out."""
        if any(engine.dead is not None for engine in self.charrnn.engines):
            self.dead_ticks += 1  # uvicorn calls on_tick every 0.1 s
            if self.dead_ticks > 10:
                return True
        return await super().on_tick(counter)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(f"charrnn serve: {self.url} (models: {', '.join(self.charrnn.models)})", file=sys.stderr, flush=True)


def run(state: ServerState, host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM, or until a model's worker stops (``ServerFailed``). The
    socket is bound here, so a port in use is one error line and ``--port 0`` reports the port
    it got."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise CharrnnError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    exposed_warning(host, state.api_key)
    memory.settle()  # before uvicorn's and the engines' threads start
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    url = f"http://{shown}:{sock.getsockname()[1]}"
    config = uvicorn.Config(
        create_app(state),
        http=guarded_protocol(state.max_connections, state.read_timeout, state.stall_timeout),
        timeout_keep_alive=KEEP_ALIVE,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
        lifespan="on",
    )
    _Server(config, state, url).run(sockets=[sock])
    dead = [engine.dead for engine in state.engines if engine.dead is not None]
    if dead:
        raise ServerFailed(f"the model's worker stopped ({dead[0]}); exiting for a restart")
