"""``charrnn serve``: the OpenAI-compatible HTTP side, one function per endpoint.

The event loop only parses, routes and writes: every model runs in its ``Engine``'s worker
thread, which posts each tick's text to the requests' mailboxes (``charrnn.serving.mailbox``) and wakes
the loop, with one ``call_soon_threadsafe``, only for readers that are waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from charrnn.data.vocab import encode_prime
from charrnn.errors import CharrnnError
from charrnn.serving import memory
from charrnn.serving.admission import admit
from charrnn.serving.crosssite import CrossSite
from charrnn.serving.engine import FAILED, Engine, Job
from charrnn.serving.guard import CONNECTION
from charrnn.serving.log import RequestLog
from charrnn.serving.mailbox import Mailbox, deliver
from charrnn.serving.models import Served, ServerState, injected_fault
from charrnn.serving.openai import ApiError, CompletionRequest, choice, completion, parse_completion, sse, usage
from charrnn.serving.playground import PAGE

MAX_BODY = 1 << 20
EVENT_INTERVAL = 0.02  # seconds: 50 events a second per stream, smoother than a reader sees


def create_app(state: ServerState) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        for served in state.models.values():
            fault = injected_fault(served.vocab)
            served.engine = Engine(
                served.model, served.vocab, _sink(loop), state.device, state.threads, fault, _behind, memory.release
            )
            state.engines.append(served.engine)
        yield
        for engine in state.engines:
            engine.close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.charrnn = state
    if state.allow_origins:  # pages on these sites may call the API from the browser
        app.add_middleware(
            CORSMiddleware,
            allow_origins=state.allow_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(CrossSite, bound=state.host, origins=state.allow_origins)
    app.add_middleware(RequestLog, quiet=state.quiet)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.get("/", response_class=HTMLResponse)(page)
    app.get("/health")(health)
    app.get("/v1/models")(models)
    app.post("/v1/completions")(completions)
    app.post("/v1/chat/completions")(chat)
    return app


def _behind(job: Job) -> bool:
    """Whether a job's reader has fallen behind its text (the engine parks it meanwhile)."""
    box: Mailbox = job.listener
    return box.behind


def _sink(loop: asyncio.AbstractEventLoop):
    def sink(events) -> None:
        deliver(loop, ((job.listener, (job.index, text, finish)) for job, text, finish in events))

    return sink


async def page() -> HTMLResponse:
    return HTMLResponse(PAGE)


async def health(request: Request) -> JSONResponse:
    """``ok``, or 503 ``failed`` with why once a model's worker has stopped (the process is then
    exiting, for its supervisor to restart it). ``parked_rows``: rows not stepped while their
    client reads none of their text."""
    state: ServerState = request.app.state.charrnn
    engines = [(s.name, s.engine) for s in state.models.values() if s.engine is not None]
    rows = sum(engine.active for _, engine in engines)
    parked = sum(len(engine.parked.rows) for _, engine in engines)
    body = {
        "status": "ok",
        "models": list(state.models),
        "active_requests": state.active,
        "active_rows": rows,
        "parked_rows": parked,
    }
    dead = [f"{name}: {engine.dead}" for name, engine in engines if engine.dead is not None]
    if dead:
        return JSONResponse({**body, "status": "failed", "error": "; ".join(dead)}, 503)
    return JSONResponse(body)


async def models(request: Request) -> dict:
    state = _authorized(request)
    data = [
        {"id": s.name, "object": "model", "created": s.created, "owned_by": "charrnn"} for s in state.models.values()
    ]
    return {"object": "list", "data": data}


async def chat(request: Request) -> JSONResponse:
    _authorized(request)
    raise ApiError(
        400,
        "charrnn models continue text; they do not chat. Use POST /v1/completions with a prompt "
        "(the openai client's completions.create).",
        code="unsupported_endpoint",
    )


async def completions(request: Request):
    state = _authorized(request)
    raw = await _body(request)
    # Parsing and encoding grow with the prompt: a thread's work, so the event loop goes on.
    req, served, groups, prompt_tokens = await asyncio.to_thread(_prepare, state, raw)
    jobs = [job for group in groups for job in group]
    engine = served.engine
    if engine is None:  # only before the app's start has made the engines
        raise ApiError(503, "the server is starting; retry shortly", code="starting", kind="server_error")
    slot = admit(state, len(jobs))
    box = Mailbox(asyncio.get_running_loop())
    for job in jobs:
        job.listener = box
    for group in groups:
        engine.submit(group)
    log = request.scope["charrnn.log"]

    def release() -> None:
        engine.cancel(jobs)
        slot.free()

    head = (f"cmpl-{secrets.token_hex(12)}", int(time.time()), served.name)
    if req.stream:
        connection = request.scope.get(CONNECTION)
        if connection is not None:  # a full server may close it if its client stops reading
            slot.streams_on(connection, release)
        return _Stream(_stream(req, head, jobs, box, prompt_tokens, log), release)
    try:
        result = await _until_disconnect(request, _collect(jobs, box))
    finally:
        release()
    if result is None:
        return Response(status_code=499)  # nginx's "client closed request": nobody reads it
    texts, finishes = result
    log["chars"] = sum(len(t) for t in texts.values())
    # With echo every choice repeats its prompt: built in a thread too.
    body = await asyncio.to_thread(_completion_body, req, head, jobs, texts, finishes, prompt_tokens)
    return Response(body, media_type="application/json")


def _prepare(state: ServerState, raw: bytes) -> tuple[CompletionRequest, Served, list[list[Job]], int]:
    """The request checked, its model, its jobs grouped by prompt and its prompt tokens."""
    req = parse_completion(raw, state.max_tokens, state.max_prompt)
    served = _model(state, req.model)
    return (req, served, *_jobs(req, served))


def _completion_body(
    req: CompletionRequest,
    head: tuple[str, int, str],
    jobs: list[Job],
    texts: dict[int, str],
    finishes: dict[int, str],
    prompt_tokens: int,
) -> bytes:
    """The completion object as JSONResponse writes one."""
    choices = [
        choice(job.index, (req.prompts[job.index // req.n] if req.echo else "") + texts[job.index], finishes[job.index])
        for job in jobs
    ]
    obj = completion(*head, choices, usage(prompt_tokens, sum(job.tokens for job in jobs)))
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _authorized(request: Request) -> ServerState:
    state: ServerState = request.app.state.charrnn
    if state.api_key is not None:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {state.api_key}".encode()):
            raise ApiError(401, "missing or wrong API key: send Authorization: Bearer KEY", code="invalid_api_key")
    return state


async def _body(request: Request) -> bytes:
    """The body, refused with 413 past 1 MB whether or not it says its length up front, and
    with 408 if it takes over ``--read-timeout`` seconds to arrive. The 413 says that the body
    is counted in bytes and the prompt in characters, two limits a client can confuse."""
    max_prompt = request.app.state.charrnn.max_prompt
    too_big = ApiError(
        413,
        f"the request body is over {MAX_BODY} bytes; its prompts may hold at most {max_prompt} characters "
        "(--max-prompt, characters rather than tokens)",
        code="request_too_large",
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise too_big
    body = bytearray()

    async def read() -> None:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > MAX_BODY:
                raise too_big

    seconds = request.app.state.charrnn.read_timeout
    try:
        await asyncio.wait_for(read(), seconds)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {seconds:g} s", code="request_timeout") from None
    return bytes(body)


def _model(state: ServerState, name: str | None) -> Served:
    if name is None:
        return next(iter(state.models.values()))
    if name not in state.models:
        raise ApiError(
            404,
            f"the model {name!r} does not exist; served here: {', '.join(state.models)}",
            "model",
            code="model_not_found",
        )
    return state.models[name]


def _jobs(req: CompletionRequest, served: Served) -> tuple[list[list[Job]], int]:
    """A job per choice, grouped by prompt (a group reads its prompt once), and the prompt tokens."""
    groups, prompt_tokens = [], 0
    for p, prompt in enumerate(req.prompts):
        try:
            ids = encode_prime(served.vocab, prompt, "skip" if req.skip_unknown else "error", "the prompt")
        except CharrnnError as e:
            raise ApiError(
                400, str(e).replace("use --unknown skip", 'send "unknown": "skip"'), "prompt", code="unknown_characters"
            ) from None
        prompt_tokens += len(ids)
        group = []
        for j in range(req.n):
            index = p * req.n + j
            seed = req.seed + index if req.seed is not None else secrets.randbits(62)
            group.append(Job(ids, req.max_tokens, seed, req.temperature, req.top_k, req.top_p, req.stops, index=index))
        groups.append(group)
    return groups, prompt_tokens


async def _collect(jobs: list[Job], box: Mailbox) -> tuple[dict[int, str], dict[int, str]]:
    texts = {job.index: "" for job in jobs}
    finishes: dict[int, str] = {}
    while len(finishes) < len(jobs):
        await box.wait()
        for index, text, finish in box.take():
            if finish == FAILED:
                raise _failed()
            texts[index] += text
            if finish is not None:
                finishes[index] = finish
    return texts, finishes


def _failed() -> ApiError:
    """A request whose rows' tick raised (the server goes on)."""
    return ApiError(500, "the model's worker failed while generating this text; retry", kind="server_error")


async def _until_disconnect(request: Request, work):
    """Await ``work``, or None at once if the client hangs up (its rows are then cancelled)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait([task, watch], return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if not task.done():
        task.cancel()
        return None
    return task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _stream(
    req: CompletionRequest, head: tuple[str, int, str], jobs: list[Job], box: Mailbox, prompt_tokens: int, log: dict
) -> AsyncIterator[str]:
    """The chunks as the worker sends text: the first at once, then at most one event per
    EVENT_INTERVAL carrying one chunk per choice with all the text since the last. An event
    costs the event loop far more than a step costs the model, and on a shared CPU every
    event per character halved the characters per second."""
    if req.echo:
        yield await asyncio.to_thread(_echoes, req, head, jobs)
    left, sent = len(jobs), 0.0
    while left:
        await box.wait()
        items = box.take()
        wait = sent + EVENT_INTERVAL - time.perf_counter()
        if wait > 0 and all(finish is None for _, _, finish in items):
            await asyncio.sleep(wait)  # text that comes meanwhile joins this event
            items += box.take()
        sent = time.perf_counter()
        if any(finish == FAILED for _, _, finish in items):
            yield sse(_failed().body())  # as OpenAI streams an error; its client raises it
            return
        merged: dict[int, list] = {}
        for index, text, finish in items:
            entry = merged.setdefault(index, ["", None])
            entry[0] += text
            entry[1] = finish or entry[1]
            log["chars"] += len(text)
        left -= sum(finish is not None for _, finish in merged.values())
        yield "".join(sse(completion(*head, [choice(i, t, f)])) for i, (t, f) in merged.items())
    if req.include_usage:
        yield sse(completion(*head, [], usage(prompt_tokens, sum(job.tokens for job in jobs))))
    yield sse("[DONE]")


def _echoes(req: CompletionRequest, head: tuple[str, int, str], jobs: list[Job]) -> str:
    """A stream's first event with echo: each choice's prompt."""
    return "".join(sse(completion(*head, [choice(j.index, req.prompts[j.index // req.n], None)])) for j in jobs)


class _Stream(StreamingResponse):
    """Server-sent events whose ``release`` runs however the response ends, even when the
    client left before the first chunk."""

    def __init__(self, chunks, release) -> None:
        super().__init__(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.release = release

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:
            pass  # the client hung up: its rows go at the next tick
        finally:
            self.release()


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)  # registered for ApiError only
    return JSONResponse(exc.body(), exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)  # registered for HTTPException only
    what = {
        404: f"no such endpoint: {request.method} {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }
    return await _api_error(request, ApiError(exc.status_code, what.get(exc.status_code, str(exc.detail))))
