"""`charrnn serve` against clients that send too much, send nonsense or never read: each is
refused or ended with an OpenAI error body while everyone else is served."""

import json
import socket
import threading
import time

import httpx
import pytest
from servers import Server, ascii_run

from charrnn.serving import admission


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Server(ascii_run(tmp_path_factory.mktemp("hostile") / "ascii"), "--quiet") as s:
        yield s


def post(server, body, **kw):
    return httpx.post(f"{server.url}/v1/completions", json=body, timeout=60, **kw)


def test_a_prompt_past_max_prompt_is_refused_before_it_is_read(server):
    start = time.perf_counter()
    r = post(server, {"prompt": "A" * 500_000, "n": 128, "echo": True, "max_tokens": 0})
    assert r.status_code == 400 and time.perf_counter() - start < 2
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "prompt"
    assert "500000 characters" in error["message"] and "at most 32768 characters" in error["message"]
    r = post(server, {"prompt": ["A" * 20_000, "B" * 20_000], "max_tokens": 1})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    r = post(server, {"prompt": "A" * 32_768, "max_tokens": 1, "echo": True})
    assert r.status_code == 200 and len(r.json()["choices"][0]["text"]) == 32_769


def test_max_prompt_is_a_flag(tmp_path):
    with Server(ascii_run(tmp_path / "ascii"), "--max-prompt", "10", "--quiet") as s:
        assert post(s, {"prompt": "A" * 10, "max_tokens": 1}).status_code == 200
        r = post(s, {"prompt": "A" * 11, "max_tokens": 1})
        assert r.status_code == 400 and "at most 10 " in r.json()["error"]["message"]


def test_a_flood_of_unknown_characters_stalls_nobody(server):
    """30,000 distinct characters the vocabulary lacks, skipped: filtered in linear time and off
    the event loop (a set rebuilt per character took 31 s, and /health waited for it)."""
    prompt = "".join(chr(0x4E00 + i) for i in range(30_000))
    done = {}

    def flood():
        start = time.perf_counter()
        r = post(server, {"prompt": prompt, "unknown": "skip", "max_tokens": 1, "echo": True})
        done["status"], done["seconds"] = r.status_code, time.perf_counter() - start

    thread = threading.Thread(target=flood)
    thread.start()
    slowest = 0.0
    while thread.is_alive():
        start = time.perf_counter()
        assert httpx.get(f"{server.url}/health", timeout=30).status_code == 200
        slowest = max(slowest, time.perf_counter() - start)
    thread.join()
    assert done["status"] == 200 and done["seconds"] < 5 and slowest < 1


BAD_BODIES = [
    (b'{"prompt": "A", "max_tokens": ' + b"1" * 5000 + b"}", "integer of 5,000 digits"),
    (b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "100,000 nested brackets"),
    (b'{"prompt": "A\\ud800", "echo": true, "unknown": "skip", "max_tokens": 1}', "a lone surrogate, echoed"),
]


@pytest.mark.parametrize("raw, what", BAD_BODIES, ids=[what for _, what in BAD_BODIES])
def test_bodies_that_broke_python_are_a_400(server, raw, what):
    r = httpx.post(
        f"{server.url}/v1/completions", content=raw, headers={"Content-Type": "application/json"}, timeout=60
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error" and "Traceback" not in r.text


def test_a_tiny_temperature_is_greedy(server):
    texts = [
        post(server, {"prompt": "INT. ", "max_tokens": 40, "temperature": t, "seed": 3}).json()["choices"][0]["text"]
        for t in (0, 1e-40, 1e-300)
    ]
    assert texts[0] == texts[1] == texts[2] and texts[0] != "\n" * 40


def test_a_failed_tick_is_a_500_and_three_in_a_row_stop_the_server(tmp_path):
    env = {"CHARRNN_FAULT": "FAULT"}
    with Server(ascii_run(tmp_path / "ascii"), "--quiet", env=env) as s:
        r = post(s, {"prompt": "FAULT here", "max_tokens": 50, "n": 2})
        assert r.status_code == 500 and "Traceback" not in r.text
        assert r.json()["error"]["type"] == "server_error" and "worker failed" in r.json()["error"]["message"]
        body = {"prompt": "FAULT", "max_tokens": 50, "stream": True}
        with httpx.stream("POST", f"{s.url}/v1/completions", json=body, timeout=30) as streamed:
            events = streamed.read().decode().split("\n\n")
        assert events[-2].startswith('data: {"error"') and "[DONE]" not in events
        assert post(s, {"prompt": "INT. ", "max_tokens": 20}).status_code == 200  # it goes on
        assert httpx.get(f"{s.url}/health").json()["status"] == "ok"
        for _ in range(3):
            assert post(s, {"prompt": "FAULT", "max_tokens": 5}).status_code == 500
        health = httpx.get(f"{s.url}/health")
        assert health.status_code == 503 and health.json()["status"] == "failed"
        assert s.proc.wait(10) == 1
    lines = [line for line in s.lines if line.startswith("error: ")]
    assert len(lines) == 7 and all("Traceback" not in line for line in s.lines)
    assert lines[-1].startswith("error: the model's worker stopped (") and lines[-1].endswith("exiting for a restart\n")


class Streamer(threading.Thread):
    """A client that streams one completion and reads every event as it comes: its text, and
    ``started`` once the first text has arrived."""

    def __init__(self, url: str, body: dict) -> None:
        super().__init__()
        self.url, self.body = url, {**body, "stream": True}
        self.started = threading.Event()
        self.text, self.finish, self.error = "", None, None

    def run(self) -> None:
        with httpx.stream("POST", f"{self.url}/v1/completions", json=self.body, timeout=60) as r:
            for line in r.iter_lines():
                if not line.startswith("data: {"):
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    self.error = event["error"]
                    return
                self.text += event["choices"][0]["text"]
                self.finish = event["choices"][0]["finish_reason"] or self.finish
                self.started.set()


GOOD = [{"prompt": "INT. KITCHEN", "max_tokens": 5000, "seed": seed, "temperature": 1.1} for seed in (41, 42, 43, 44)]


def test_a_faulty_request_fails_alone_beside_good_streams(tmp_path):
    """A request whose every step raises gets its 500; the good streams stepped in the same
    ticks go on to the end with the text they have without it."""
    with Server(
        ascii_run(tmp_path / "ascii"), "--max-tokens", "100000", "--quiet", env={"CHARRNN_FAULT": "FAULT"}
    ) as s:
        quiet = [post(s, body).json()["choices"][0]["text"] for body in GOOD]
        goods = [Streamer(s.url, body) for body in GOOD]
        for g in goods:
            g.start()
        assert all(g.started.wait(30) for g in goods)
        r = post(s, {"prompt": "FAULT here", "max_tokens": 50})
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
        assert any(g.is_alive() for g in goods)  # the fault came while good rows were stepping
        for g in goods:
            g.join(60)
        assert [g.error for g in goods] == [None] * 4 and [g.finish for g in goods] == ["length"] * 4
        assert [g.text for g in goods] == quiet
        assert httpx.get(f"{s.url}/health").json()["status"] == "ok"
    failed = [line for line in s.lines if line.startswith("error: a tick")]
    assert len(failed) == 1 and "1 rows ended, 4 went on" in failed[0]


def test_a_client_that_never_reads_is_parked_not_stepped(tmp_path):
    """A stream whose client reads nothing is parked (/health's parked_rows) once its connection's
    buffers fill, until the stall timeout ends it; a good client beside it keeps its text."""
    flags = ("--stall-timeout", "30", "--max-tokens", "1000000", "--quiet")
    with Server(ascii_run(tmp_path / "ascii"), *flags) as s:
        body = GOOD[0]
        quiet = post(s, body).json()["choices"][0]["text"]
        reader = _never_reader(s.port, 2)
        assert _health_within(s.url, lambda h: h["parked_rows"] == 2, 20)["active_rows"] == 2
        good = Streamer(s.url, body)
        good.start()
        polls = []
        while good.is_alive():
            polls.append(httpx.get(f"{s.url}/health").json())
            time.sleep(0.05)
        # Every poll while the good client streamed: both never-read rows parked, not stepped.
        assert len(polls) > 3 and all(h["parked_rows"] == 2 for h in polls)
        assert good.error is None and good.text == quiet
        reader.close()  # its rows leave the parked set at once
        assert _health_within(s.url, lambda h: h["active_rows"] == 0, 10)["parked_rows"] == 0


def _never_reader(port: int, n: int) -> socket.socket:
    """A streaming request whose client reads nothing (a 4 kB receive buffer fills at once)."""
    reader = socket.socket()
    reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    reader.connect(("127.0.0.1", port))
    raw = b'{"prompt": "A", "n": %d, "max_tokens": 1000000, "stream": true}' % n
    reader.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n")
    reader.sendall(b"Content-Length: %d\r\n\r\n%s" % (len(raw), raw))
    return reader


def test_a_full_server_takes_a_stalled_streams_place_for_a_client_that_reads(tmp_path):
    """Clients that never read cannot hold every place until the stall timeout: once their writes
    have waited ``admission.EVICT_AFTER`` (a quarter of a second), a new request takes the
    longest-stalled stream's place (that stream is closed) instead of getting 429."""
    flags = ("--max-concurrent", "2", "--stall-timeout", "60", "--max-tokens", "1000000", "--quiet")
    with Server(ascii_run(tmp_path / "ascii"), *flags) as s:
        first = _never_reader(s.port, 1)
        assert _health_within(s.url, lambda h: h["parked_rows"] == 1, 20)["parked_rows"] == 1
        time.sleep(0.5)
        second = _never_reader(s.port, 1)
        assert _health_within(s.url, lambda h: h["parked_rows"] == 2, 20)["parked_rows"] == 2
        time.sleep(admission.EVICT_AFTER + 0.5)
        r = post(s, {"prompt": "A", "max_tokens": 5})
        assert r.status_code == 200, r.text
        assert _closed(first, 5)  # the longest stalled gave its place up
        health = _health_within(s.url, lambda h: h["parked_rows"] == 1, 10)
        assert health["active_requests"] == 1 and health["parked_rows"] == 1  # the other still holds its own
        second.close()
        # The request's place goes at once; its parked row when the worker next polls the parked.
        health = _health_within(s.url, lambda h: h["active_requests"] == 0 and h["active_rows"] == 0, 10)
        assert health["active_requests"] == 0 and health["active_rows"] == 0


def _health_within(url, done, seconds) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        health = httpx.get(f"{url}/health").json()
        if done(health) or time.monotonic() > deadline:
            return health
        time.sleep(0.1)


def _stream_until(url, body, ready: threading.Event, stop: threading.Event):
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as r:
        for _ in r.iter_lines():
            ready.set()
            if stop.is_set():
                return


def test_rows_are_capped_across_requests_and_stops_in_length(tmp_path, server):
    r = post(server, {"prompt": "A", "stop": ["x" * 201]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "stop"
    with Server(ascii_run(tmp_path / "ascii"), "--max-rows", "8", "--max-tokens", "1000000", "--quiet") as s:
        r = post(s, {"prompt": "A", "n": 9, "max_tokens": 1})
        assert r.status_code == 400 and r.json()["error"]["param"] == "n" and "--max-rows" in r.text
        ready, stop = threading.Event(), threading.Event()
        body = {"prompt": "A", "n": 6, "max_tokens": 1_000_000, "stream": True}
        holder = threading.Thread(target=_stream_until, args=(s.url, body, ready, stop))
        holder.start()
        try:
            assert ready.wait(20)
            r = post(s, {"prompt": "A", "n": 3, "max_tokens": 1})
            assert r.status_code == 429 and "rows" in r.json()["error"]["message"] and r.headers["retry-after"] == "1"
            assert post(s, {"prompt": "A", "n": 2, "max_tokens": 1}).status_code == 200
        finally:
            stop.set()
            holder.join(30)


def _closed(sock, seconds: float) -> bool:
    """Whether the server closes ``sock`` within ``seconds`` (what it sent before is skipped)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


def test_slow_clients_are_cut_off(tmp_path):
    flags = ("--read-timeout", "1", "--stall-timeout", "1", "--max-connections", "40", "--max-tokens", "1000000")
    with Server(ascii_run(tmp_path / "ascii"), *flags, "--quiet") as s:
        half = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(30)]
        for sock in half:  # slowloris: headers that never end
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        # Past the cap of 40 open connections: a 503 in OpenAI's form.
        extra = [socket.create_connection(("127.0.0.1", s.port)) for _ in range(12)]
        answers = [sock.recv(4096) for sock in extra[10:]]
        assert all(a.startswith(b"HTTP/1.1 503") and b'"too_many_connections"' in a for a in answers)
        assert all(_closed(sock, 3) for sock in half + extra[:10])
        # A body that stops halfway: 408.
        slow = socket.create_connection(("127.0.0.1", s.port))
        slow.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"prompt"'
        )
        assert slow.recv(4096).startswith(b"HTTP/1.1 408")
        # A stream whose client never reads: ended, its rows freed.
        reader = _never_reader(s.port, 4)
        rows = [_rows_within(s.url, lambda n: n == 4, 10), _rows_within(s.url, lambda n: n == 0, 20)]
        assert rows == [4, 0]
        for sock in [*half, *extra, slow, reader]:
            sock.close()


def _rows_within(url, done, seconds):
    deadline = time.monotonic() + seconds
    while True:
        rows = httpx.get(f"{url}/health").json()["active_rows"]
        if done(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def test_other_sites_cannot_drive_the_server(server):
    url, body = f"{server.url}/v1/completions", b'{"prompt": "A", "max_tokens": 3}'
    evil = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    r = httpx.post(url, content=body, headers=evil)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_origin"
    r = httpx.post(url, content=body, headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(url, content=body, headers={"Host": "rebound.example:80", "Content-Type": "application/json"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_host"
    # The playground's own requests: same origin, JSON.
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "application/json" in page.text
    own = {"Origin": server.url, "Content-Type": "application/json"}
    assert httpx.post(url, content=body, headers=own).status_code == 200
    local = {"Host": f"localhost:{server.port}", "Origin": f"http://localhost:{server.port}"}
    assert httpx.post(url, content=body, headers={**local, "Content-Type": "application/json"}).status_code == 200


def test_allowed_origins_and_the_exposed_warning(tmp_path):
    run = ascii_run(tmp_path / "ascii")
    with Server(run, "--allow-origin", "https://ok.example", "--quiet") as s:
        url, ok = f"{s.url}/v1/completions", {"Origin": "https://ok.example"}
        r = httpx.post(url, json={"prompt": "A", "max_tokens": 3}, headers=ok)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://ok.example"
        preflight = {**ok, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        assert httpx.options(url, headers=preflight).status_code == 200
        assert httpx.post(url, json={"prompt": "A"}, headers={"Origin": "https://no.example"}).status_code == 403
        assert not s.log_lines("^warning:")
    with Server(run, "--host", "0.0.0.0", "--quiet") as s:
        assert s.log_lines("^warning: listening on 0.0.0.0 without --api-key")


def test_log_lines_cannot_be_forged_and_logprobs_are_refused(tmp_path):
    with Server(ascii_run(tmp_path / "ascii")) as s:
        with socket.create_connection(("127.0.0.1", s.port)) as sock:
            forged = b"/nope%0APOST%20/v1/completions%20200%200%20chars%201%20ms"
            sock.sendall(b"GET " + forged + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 404")
        r = post(s, {"prompt": "A", "logprobs": 2})
        assert r.status_code == 400 and r.json()["error"]["param"] == "logprobs"
        time.sleep(0.2)
        assert s.log_lines(r"^GET /nope%0APOST%20/v1/completions%20200%200%20chars%201%20ms 404 ")
        assert not s.log_lines(r"^POST /v1/completions 200 0 chars 1 ms")
