"""Cross-site protection: a web page the user visits must not drive a server on their machine.

A page can post to ``http://127.0.0.1:8000`` (a "simple" request with ``Content-Type:
text/plain`` needs no preflight), and a DNS name rebound to 127.0.0.1 makes the page's own
origin the server's. So, as Ollama does: a request whose ``Host`` does not name the address the
server is bound to, or whose ``Origin`` is another site's (unless listed with
``--allow-origin``), is refused with 403, and a JSON endpoint takes only ``application/json``.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi.responses import JSONResponse

from charrnn.serving.openai import ApiError

Scope = MutableMapping[str, Any]
Asgi = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]
# Names that reach a loopback address without DNS.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposed_warning(host: str, api_key: str | None) -> None:
    """A warning on stderr when the server listens beyond this machine with no key."""
    if api_key is None and not loopback(host):
        print(
            f"warning: listening on {host} without --api-key: anyone who can reach this address can use the models",
            file=sys.stderr,
            flush=True,
        )


def allowed_hosts(bound: str) -> set[str] | None:
    """The names a request's Host may give: the bound address (and the loopback names, bound
    to loopback); None, any, when bound to every address (0.0.0.0, ::)."""
    if bound in ("0.0.0.0", "::", ""):
        return None
    return {bound, *LOOPBACK_NAMES} if loopback(bound) else {bound}


def _host_name(host: str) -> str:
    """A Host header without its port: ``[::1]:8000`` is ``::1``, ``a:80`` is ``a``."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class CrossSite:
    """The ASGI middleware that applies the rules above to every HTTP request."""

    def __init__(self, app: Asgi, bound: str, origins: list[str]) -> None:
        self.app, self.hosts, self.origins = app, allowed_hosts(bound), set(origins)

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]], send: Any) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                return await JSONResponse(refusal.body(), refusal.status)(scope, receive, send)
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> ApiError | None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self.hosts is not None and _host_name(host).lower() not in self.hosts:
            return ApiError(403, f"the Host {host!r} does not name this server", code="forbidden_host")
        origin = headers.get("origin")
        if origin is not None and origin != f"{scope.get('scheme', 'http')}://{host}" and origin not in self.origins:
            return ApiError(
                403, f"requests from the origin {origin!r} are refused (see --allow-origin)", code="forbidden_origin"
            )
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if scope["method"] == "POST" and kind != "application/json":
            return ApiError(415, "the request body must be JSON, sent with Content-Type: application/json")
        return None
