"""The server's log: one line per request on stderr, and a bug's 500 in the API's own form."""

from __future__ import annotations

import sys
import time

from fastapi.responses import JSONResponse

from charrnn.serving.openai import ApiError


class RequestLog:
    """One line per request on stderr (method, path, status, characters generated,
    milliseconds), and a bare 500 for a bug: never a traceback in a response."""

    def __init__(self, app, quiet: bool) -> None:
        self.app, self.quiet = app, quiet

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status, log = time.perf_counter(), [0], {"chars": 0}
        scope["charrnn.log"] = log
        # The path as sent (%0A stays %0A: a decoded one could forge log lines), printable only.
        path = _printable(scope.get("raw_path", b"").decode("latin-1") or scope["path"])

        async def logged_send(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        except Exception as e:  # noqa: BLE001 - a bug must still answer in the API's own format
            what = _printable(f"{type(e).__name__}: {e}")
            print(f"error: {scope['method']} {path}: {what}", file=sys.stderr, flush=True)
            if not status[0]:
                await JSONResponse(ApiError(500, "internal server error", kind="server_error").body(), 500)(
                    scope, receive, logged_send
                )
        finally:
            if not self.quiet:
                ms = (time.perf_counter() - start) * 1000
                print(
                    f"{scope['method']} {path} {status[0]} {log['chars']} chars {ms:.0f} ms",
                    file=sys.stderr,
                    flush=True,
                )


def _printable(text: str) -> str:
    """``text`` for one log line: every character that is not printable as its escape."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
