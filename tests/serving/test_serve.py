"""`charrnn serve` seen from its clients: the official openai package, raw HTTP, many at once."""

import json
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest
from conftest import run_cli
from servers import Server

KEY = "sekret-key"


@pytest.fixture(scope="module")
def server(trained_run):
    with Server(trained_run, "--api-key", KEY, "--max-tokens", "5000") as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def model(server):
    return server.models[0]


def post(server, body, key=KEY, **kw):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.url}/v1/completions", json=body, headers=headers, timeout=30, **kw)


def sample(run, *args):
    r = run_cli("sample", run, *args)
    assert r.exit_code == 0, r.stderr
    return r.stdout[:-1]  # the newline charrnn sample ends with


def test_completion_matches_charrnn_sample(client, model, trained_run):
    r = client.completions.create(model=model, prompt="ANNA", max_tokens=80, seed=5)
    (c,) = r.choices
    assert r.object == "text_completion" and r.model == model and r.id.startswith("cmpl-")
    assert c.finish_reason == "length" and c.index == 0 and c.logprobs is None and len(c.text) == 80
    assert r.usage.prompt_tokens == 4 and r.usage.completion_tokens == 80 and r.usage.total_tokens == 84
    assert "ANNA" + c.text == sample(trained_run, "--seed", "5", "--prime", "ANNA", "--length", "80")


@pytest.mark.parametrize(
    "options, flags",
    [
        ({"temperature": 1.3, "top_p": 0.9}, ["--temp", "1.3", "--top-p", "0.9"]),
        ({"temperature": 0.5, "top_k": 3}, ["--temp", "0.5", "--top-k", "3"]),
        ({"temperature": 0}, ["--greedy"]),
    ],
)
def test_options_match_charrnn_sample(client, model, trained_run, options, flags):
    r = client.completions.create(model=model, prompt="", max_tokens=60, seed=11, extra_body=options)
    assert r.choices[0].text == sample(trained_run, "--seed", "11", "--length", "60", *flags)


def test_streaming_gives_the_same_text(client, model):
    whole = client.completions.create(model=model, prompt="CLARA: the", max_tokens=120, seed=9).choices[0].text
    chunks = list(client.completions.create(model=model, prompt="CLARA: the", max_tokens=120, seed=9, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_n_choices_are_seeds_s_to_s_plus_n(client, model, trained_run):
    r = client.completions.create(model=model, prompt="BORIS", max_tokens=40, seed=20, n=3, echo=True)
    assert [c.index for c in r.choices] == [0, 1, 2]
    rows = run_cli(
        "sample", trained_run, "--prime", "BORIS", "--length", "40", "--seed", "20", "--num-samples", "3", "--json"
    )
    assert [c.text for c in r.choices] == [json.loads(line)["text"] for line in rows.stdout.splitlines()]
    assert r.usage.completion_tokens == 120 and r.usage.prompt_tokens == 5


def test_several_prompts_and_stream_usage(client, model):
    r = client.completions.create(model=model, prompt=["ANNA", "CLARA"], max_tokens=10, n=2, seed=1)
    assert sorted(c.index for c in r.choices) == [0, 1, 2, 3] and r.usage.prompt_tokens == 9
    chunks = list(
        client.completions.create(
            model=model, prompt="ANNA", max_tokens=10, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10


def test_stop_strings(client, model, trained_run):
    r = client.completions.create(model=model, prompt="ANNA", max_tokens=2000, seed=2, stop=["BORIS", "lamp"])
    c = r.choices[0]
    assert c.finish_reason == "stop" and "BORIS" not in c.text and "lamp" not in c.text and len(c.text) < 2000
    assert "ANNA" + c.text == sample(
        trained_run, "--seed", "2", "--prime", "ANNA", "--length", "2000", "--stop", "BORIS", "--stop", "lamp"
    )
    streamed = client.completions.create(
        model=model, prompt="ANNA", max_tokens=2000, seed=2, stop=["BORIS", "lamp"], stream=True
    )
    assert "".join(x.choices[0].text for x in streamed) == c.text


def test_errors_are_the_clients_own_exceptions(server, client, model):
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model=model, prompt="A", temperature=-1)
    with pytest.raises(openai.NotFoundError, match="nosuch"):
        client.completions.create(model="nosuch", prompt="A")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).completions.create(
            model=model, prompt="A"
        )
    with pytest.raises(openai.BadRequestError, match="/v1/completions"):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="'☃'"):
        client.completions.create(model=model, prompt="ANNA ☃")
    assert [m.id for m in client.models.list()] == [model]


def test_sse_framing(server, model):
    body = {"model": model, "prompt": "ANNA", "max_tokens": 30, "stream": True, "echo": True, "seed": 4}
    with httpx.stream(
        "POST", f"{server.url}/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: {") for e in events[:-2])
    assert chunks[0]["choices"][0]["text"] == "ANNA"  # echo: the prompt first
    assert {c["object"] for c in chunks} == {"text_completion"} and len({c["id"] for c in chunks}) == 1
    assert len("".join(c["choices"][0]["text"] for c in chunks)) == 34
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


BAD = [
    (b"{not json", None),
    (b"[1, 2]", None),
    ({"prompt": "A", "temperature": -0.1}, "temperature"),
    ({"prompt": "A", "temperature": "hot"}, "temperature"),
    ({"prompt": "A", "top_p": 0}, "top_p"),
    ({"prompt": "A", "top_p": 1.5}, "top_p"),
    ({"prompt": "A", "top_k": 0}, "top_k"),
    ({"prompt": "A", "max_tokens": -1}, "max_tokens"),
    ({"prompt": "A", "max_tokens": 5001}, "max_tokens"),
    ({"prompt": "A", "max_tokens": "many"}, "max_tokens"),
    ({"prompt": "A", "n": 0}, "n"),
    ({"prompt": "A", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": "A", "stop": ""}, "stop"),
    ({"prompt": "A", "stop": 3}, "stop"),
    ({"prompt": [1, 2, 3]}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": "A", "seed": -1}, "seed"),
    ({"prompt": "A", "stream": "yes"}, "stream"),
    ({"prompt": "A", "unknown": "drop"}, "unknown"),
    ({"prompt": "ANNA ☃ ∑"}, "prompt"),
]


@pytest.mark.parametrize("body, param", BAD)
def test_bad_input_is_a_400_in_openai_form(server, body, param):
    kw = (
        {"content": body, "headers": {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}}
        if isinstance(body, bytes)
        else {}
    )
    r = httpx.post(f"{server.url}/v1/completions", timeout=30, **kw) if kw else post(server, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["param"] == param and "Traceback" not in r.text
    if param == "prompt" and "☃" in str(body):
        assert "'☃'" in error["message"] and "'∑'" in error["message"]


def test_unknown_skip_unknown_fields_and_routes(server, model):
    r = post(
        server,
        {
            "model": model,
            "prompt": "ANNA ☃",
            "unknown": "skip",
            "max_tokens": 5,
            "echo": True,
            "frequency_penalty": 0.5,
            "user": "x",
            "logit_bias": {},
        },
    )
    assert r.status_code == 200 and r.json()["choices"][0]["text"].startswith("ANNA ")
    assert post(server, {"prompt": "A", "max_tokens": 0}).json()["choices"][0] == {
        "text": "",
        "index": 0,
        "logprobs": None,
        "finish_reason": "length",
    }
    for method, path, code in (("GET", "/v1/completions", 405), ("GET", "/nope", 404)):
        r = httpx.request(method, f"{server.url}{path}", headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == code and r.json()["error"]["message"]


def test_limits_and_auth(server):
    r = post(server, {"prompt": "A" * (1 << 20)})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert "1048576 bytes" in r.text and "at most 32768 characters (--max-prompt" in r.text

    def chunked():
        for _ in range(20):
            yield b" " * 100_000

    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    r = httpx.post(f"{server.url}/v1/completions", content=chunked(), headers=headers)
    assert r.status_code == 413
    for key in (None, "wrong", KEY + "x"):
        r = post(server, {"prompt": "A"}, key=key)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{server.url}/v1/models").status_code == 401
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def test_one_log_line_per_request(server):
    post(server, {"prompt": "ANNA", "max_tokens": 17})
    post(server, {"prompt": "ANNA"}, key="wrong")
    time.sleep(0.2)
    assert server.log_lines(r"^POST /v1/completions 200 17 chars \d+ ms$")
    assert server.log_lines(r"^POST /v1/completions 401 0 chars \d+ ms$")


def test_seeded_requests_beside_others_equal_them_alone(server, model):
    seeds = [31, 32, 33, 34, 35]
    alone = [post(server, {"prompt": "ANNA", "max_tokens": 300, "seed": s}).json()["choices"][0]["text"] for s in seeds]
    noise = [
        {"prompt": p, "max_tokens": 600, "temperature": t} for p, t in (("BORIS", 1.5), ("", 0.3), ("CLARA", 1.0))
    ] * 4
    results: dict = {}

    def call(i, body):
        results[i] = post(server, body).json()["choices"][0]["text"]

    threads = [threading.Thread(target=call, args=(f"n{i}", b)) for i, b in enumerate(noise)]
    threads += [
        threading.Thread(target=call, args=(s, {"prompt": "ANNA", "max_tokens": 300, "seed": s})) for s in seeds
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[s] for s in seeds] == alone


def test_clients_arriving_together_with_one_prompt_keep_their_own_seeds(client, model):
    def text(seed, stream):
        r = client.completions.create(model=model, prompt="CLARA", max_tokens=150, seed=seed, stream=stream)
        return "".join(c.choices[0].text for c in r) if stream else r.choices[0].text

    seeds = range(50, 58)
    alone = [text(s, False) for s in seeds]
    together: dict = {}
    threads = [threading.Thread(target=lambda s=s: together.__setitem__(s, text(s, s % 2 == 0))) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [together[s] for s in seeds] == alone and len(set(alone)) == len(alone)


def _stream_lengths(url, lengths):
    got = {}

    def one(i, n):
        body = {"prompt": "ANNA", "max_tokens": n, "stream": True}
        with httpx.stream(
            "POST", f"{url}/v1/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
        ) as r:
            events = r.read().decode().split("\n\n")
        got[i] = sum(len(json.loads(e[6:])["choices"][0]["text"]) for e in events if e.startswith("data: {"))

    threads = [threading.Thread(target=one, args=(i, n)) for i, n in enumerate(lengths)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [got.get(i) for i in range(len(lengths))]


def _idle(url, timeout=5.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        health = httpx.get(f"{url}/health").json()
        if (health["active_requests"], health["active_rows"]) == (0, 0) or time.monotonic() > deadline:
            return health
        time.sleep(0.05)


def test_32_simultaneous_streams_complete(server):
    lengths = [50 + 37 * i for i in range(32)]
    assert _stream_lengths(server.url, lengths) == lengths
    assert _idle(server.url)["active_rows"] == 0


def test_clients_that_hang_up_leave_the_server_idle(server):
    for _ in range(50):
        with httpx.stream(
            "POST",
            f"{server.url}/v1/completions",
            json={"prompt": "ANNA", "max_tokens": 5000, "stream": True},
            headers={"Authorization": f"Bearer {KEY}"},
        ) as r:
            next(r.iter_bytes())
    health = _idle(server.url)
    assert (health["active_requests"], health["active_rows"]) == (0, 0)
    with httpx.Client() as c:  # and a non-streamed request whose client gives up
        with pytest.raises(httpx.ReadTimeout):
            c.post(
                f"{server.url}/v1/completions",
                json={"prompt": "A", "max_tokens": 5000, "n": 8},
                headers={"Authorization": f"Bearer {KEY}"},
                timeout=0.05,
            )
    assert _idle(server.url)["active_rows"] == 0


def _long_stream(url, ready: threading.Event, out: dict):
    body = {"prompt": "ANNA", "max_tokens": 1_000_000, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as r:
        out["status"] = r.status_code
        events = []
        for line in r.iter_lines():
            if line:
                events.append(line)
                ready.set()
        out["events"] = events


def test_busy_server_answers_429_and_stops_on_signal(trained_run):
    with Server(trained_run, "--max-concurrent", "2", "--max-tokens", "1000000") as s:
        ready, outs = [threading.Event(), threading.Event()], [{}, {}]
        threads = [threading.Thread(target=_long_stream, args=(s.url, ready[i], outs[i])) for i in range(2)]
        for t in threads:
            t.start()
        assert all(r.wait(20) for r in ready)
        r = httpx.post(f"{s.url}/v1/completions", json={"prompt": "A"})
        assert (
            r.status_code == 429
            and r.headers["retry-after"] == "1"
            and r.json()["error"]["code"] == "rate_limit_exceeded"
        )
        with pytest.raises(openai.RateLimitError):
            openai.OpenAI(base_url=f"{s.url}/v1", api_key="x", max_retries=0).completions.create(
                model=s.models[0], prompt="A"
            )
        code, seconds = s.stop(signal.SIGTERM)
        for t in threads:
            t.join(5)
        assert code == 0 and seconds < 2
        for out in outs:
            assert out["status"] == 200 and out["events"][-1] == "data: [DONE]"
            assert json.loads(out["events"][-2][6:])["choices"][0]["finish_reason"] == "shutdown"


def test_models_by_run_name_default_newest_and_sigint(tmp_path, trained_run):
    for name in ("older", "newer"):
        shutil.copytree(trained_run, tmp_path / "checkpoints" / name)
        time.sleep(0.05)
        (tmp_path / "checkpoints" / name / "best.pt").touch()
    with Server(cwd=tmp_path) as s:
        assert s.models == ["newer"]
    with Server(tmp_path / "checkpoints" / "older", tmp_path / "checkpoints" / "newer" / "best.pt") as s:
        assert s.models == ["older", "newer"]
        assert (
            httpx.post(f"{s.url}/v1/completions", json={"model": "newer", "prompt": "A", "max_tokens": 3}).status_code
            == 200
        )
        code, seconds = s.stop(signal.SIGINT)
        assert code == 0 and seconds < 2


def test_cli_errors_are_one_line(tmp_path, trained_run):
    holder = Server(trained_run)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "charrnn", "serve", str(trained_run), "--port", str(holder.port)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 2 and r.stderr.startswith("error: cannot listen") and r.stderr.count("\n") == 1
    finally:
        holder.stop()
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['fastapi'] = None; from charrnn.cli.app import main; "
            "sys.argv = ['charrnn', 'serve']; main()",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert (
        r.returncode == 2 and r.stderr == "error: charrnn serve needs the serve extra: pip install 'charrnn[serve]'\n"
    )
    # (With no model named and none trained, serve serves the bundled base: tests/training/test_start.py.)
    r = subprocess.run(
        [sys.executable, "-m", "charrnn", "serve", "no-such-run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "no-such-run" in r.stderr
    assert r.stderr.count("\n") == 1


def test_num_samples_rows_are_lone_runs_with_seeds_s_to_s_plus_n(trained_run):
    rows = run_cli(
        "sample", trained_run, "--length", "120", "--seed", "40", "--num-samples", "3", "--json", "--top-p", "0.95"
    )
    texts = [json.loads(line)["text"] for line in rows.stdout.splitlines()]
    assert texts == [sample(trained_run, "--length", "120", "--seed", str(40 + i), "--top-p", "0.95") for i in range(3)]
    assert len(set(texts)) == 3
