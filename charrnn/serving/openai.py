"""The OpenAI completions API as data: a request body checked field by field, and the objects
and errors sent back, shaped exactly as OpenAI's own so its clients need nothing special.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_STOPS = 4
MAX_STOP_CHARS = 200  # a stream holds back up to this many characters, in case they begin a stop
MAX_CHOICES = 128
SEED_MAX = 2**63 - 1


class ApiError(Exception):
    """An error response: the HTTP status and OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class CompletionRequest:
    model: str | None
    prompts: list[str]
    max_tokens: int
    temperature: float
    top_p: float | None
    top_k: int | None
    stops: list[str]
    seed: int | None
    n: int
    stream: bool
    echo: bool
    skip_unknown: bool
    include_usage: bool = False


def parse_completion(raw: bytes, max_tokens_cap: int, max_prompt: int) -> CompletionRequest:
    """The request, or an ``ApiError`` naming the first field that is wrong. Unknown fields are
    ignored, as OpenAI's server ignores them. ``max_prompt`` caps the prompts' characters
    together, before any work that grows with them."""
    body = parse_json(raw)
    prompts = _prompts(body.get("prompt", ""), max_prompt)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _type("model", "a string")
    max_tokens = _integer(body, "max_tokens", min(256, max_tokens_cap), 0, max_tokens_cap)
    temperature = _number(body, "temperature", 0.8, 0.0)
    top_p = _number(body, "top_p", None, 0.0, 1.0, open_low=True)
    top_k = _integer(body, "top_k", None, 1, None)
    n = _integer(body, "n", 1, 1, MAX_CHOICES)
    if n * len(prompts) > MAX_CHOICES:
        raise ApiError(
            400, f"n times the number of prompts must be at most {MAX_CHOICES} (got {n * len(prompts)})", "n"
        )
    seed = _integer(body, "seed", None, 0, SEED_MAX - n * len(prompts))
    stops = _stops(body.get("stop"))
    unknown = body.get("unknown", "error")
    if unknown not in ("error", "skip"):
        raise ApiError(400, f"unknown must be 'error' or 'skip' (got {json.dumps(unknown)})", "unknown")
    if body.get("logprobs") not in (None, False):  # OpenAI's are per-token log probabilities
        raise ApiError(400, "logprobs are not supported: charrnn serve returns text only", "logprobs")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise _type("stream_options", "an object")
    return CompletionRequest(
        model=model,
        prompts=prompts,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        stops=stops,
        seed=seed,
        n=n,
        stream=_bool(body, "stream"),
        echo=_bool(body, "echo"),
        skip_unknown=unknown == "skip",
        include_usage=bool(options.get("include_usage")),
    )


def parse_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object. Python's own limits are the client's error too: an integer
    of over 4,300 digits (a ValueError) and brackets nested past the recursion limit."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ApiError(400, f"the request body is not valid JSON ({e.__class__.__name__}: {str(e)[:80]})") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def _prompts(prompt: Any, max_prompt: int) -> list[str]:
    """The prompts, at most ``max_prompt`` characters together and each encodable as UTF-8 (a
    lone surrogate, which JSON can spell, cannot be echoed back or named in an error)."""
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise ApiError(
            400, "prompt must be a string or a non-empty list of strings (token ids are not accepted)", "prompt"
        )
    size = sum(len(p) for p in prompts)
    if size > max_prompt:
        raise ApiError(
            400,
            f"the prompt is {size} characters; this server reads at most {max_prompt} characters "
            "(--max-prompt, which counts characters, not tokens)",
            "prompt",
            code="context_length_exceeded",
        )
    for p in prompts:
        try:
            p.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ApiError(
                400, f"the prompt holds a lone surrogate (U+{ord(p[e.start]):04X}), which is not text", "prompt"
            ) from None
    return prompts


def _type(name: str, what: str) -> ApiError:
    return ApiError(400, f"{name} must be {what}", name)


def _number(body: dict, name: str, default, low: float, high: float | None = None, open_low: bool = False):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise _type(name, "a number")
    if value < low or (open_low and value == low) or (high is not None and value > high):
        bounds = f"{'(' if open_low else '['}{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise ApiError(400, f"{name} must be {'in ' if high is not None else ''}{bounds} (got {value})", name)
    return float(value)


def _integer(body: dict, name: str, default, low: int, high: int | None):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type(name, "an integer")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ApiError(400, f"{name} must be {bounds} (got {value})", name)
    return value


def _bool(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _type(name, "true or false")
    return value


def _stops(value) -> list[str]:
    stops = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _type("stop", "a string or a list of strings")
    if len(stops) > MAX_STOPS:
        raise ApiError(400, f"stop takes at most {MAX_STOPS} strings (got {len(stops)})", "stop")
    if any(s == "" for s in stops):
        raise ApiError(400, "stop strings must not be empty", "stop")
    if any(len(s) > MAX_STOP_CHARS for s in stops):
        raise ApiError(400, f"a stop string is at most {MAX_STOP_CHARS} characters", "stop")
    return stops


def completion(ident: str, created: int, model: str, choices: list[dict], usage: dict | None = None) -> dict:
    """A completion object (or, with one choice and no usage, a streamed chunk of one)."""
    obj = {"id": ident, "object": "text_completion", "created": created, "model": model, "choices": choices}
    if usage is not None:
        obj["usage"] = usage
    return obj


def choice(index: int, text: str, finish: str | None) -> dict:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def sse(obj: dict | str) -> str:
    """One server-sent event as OpenAI frames them: ``data: {...}`` and a blank line."""
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, separators=(',', ':'))}\n\n"
