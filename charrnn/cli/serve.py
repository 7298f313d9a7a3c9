"""``charrnn serve``: an OpenAI-compatible HTTP API over trained models (``charrnn.serving``)."""

from __future__ import annotations

import sys
from typing import Any

import typer

from charrnn.cli.errors import fail
from charrnn.errors import CharrnnError, ServerFailed


def serve(
    checkpoints: list[str] = typer.Argument(
        None,
        metavar="[CHECKPOINT|RUN_DIR]...",
        help="Models to serve, each named by its run directory (default: the newest run under ./checkpoints).",
    ),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback only unless asked)."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on (0: any free port, shown on start)."),
    api_key: str | None = typer.Option(
        None,
        envvar="CHARRNN_API_KEY",
        help="Require Authorization: Bearer KEY on /v1 requests (or set CHARRNN_API_KEY).",
    ),
    allow_origins: list[str] = typer.Option(
        [],
        "--allow-origin",
        help="A web origin (https://example.com) whose pages may call the API (repeatable); others get 403.",
    ),
    max_tokens: int = typer.Option(4096, min=1, max=10**7, help="The most tokens one completion may ask for."),
    max_prompt: int = typer.Option(
        32_768,
        min=1,
        max=10**7,
        help="The most prompt characters, not tokens, one request may send (all its prompts together); more is a 400.",
    ),
    max_concurrent: int = typer.Option(
        64, min=1, max=100_000, help="Requests served at once; more are answered 429 with Retry-After."
    ),
    max_rows: int = typer.Option(
        512, min=1, max=1_000_000, help="Rows (choices: n times prompts) generated at once, all requests together."
    ),
    max_connections: int = typer.Option(
        1000, min=1, max=1_000_000, help="Open connections; a request past them is answered 503."
    ),
    read_timeout: float = typer.Option(
        5.0, min=0.1, max=3600, help="Seconds a request's headers, and then its body, may take to arrive."
    ),
    stall_timeout: float = typer.Option(
        10.0, min=0.1, max=3600, help="Seconds a stream may wait on a client that does not read before it is ended."
    ),
    device: str = typer.Option("cpu", help="cpu | cuda | mps | auto."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No line per request on stderr (the start line stays)."),
) -> None:
    """Serve models over an OpenAI-compatible API (POST /v1/completions), with a playground page at /."""
    options = dict(locals())  # the parameters, named as ServerState's settings
    try:
        _serve(**options)
    except ServerFailed as e:
        fail(str(e), code=1)
    except CharrnnError as e:
        fail(str(e))


def _serve(checkpoints: list[str] | None, device: str, host: str, port: int, **settings: Any) -> None:
    try:
        from charrnn.serving.listen import run
        from charrnn.serving.models import ServerState, load_models
    except ImportError as e:
        if (e.name or "").split(".")[0] not in ("fastapi", "uvicorn", "starlette"):
            raise
        raise CharrnnError("charrnn serve needs the serve extra: pip install 'charrnn[serve]'") from None
    from charrnn.model.checkpoint import default_model
    from charrnn.runtime.device import pick_device

    if not checkpoints:
        path, note = default_model()
        if note:
            print(note, file=sys.stderr)
        checkpoints = [str(path)]
    state = ServerState(load_models(checkpoints), device=str(pick_device(device)), host=host, **settings)
    run(state, host, port)
