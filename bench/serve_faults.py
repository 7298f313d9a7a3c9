"""Serving under hostile clients: a real `charrnn serve` (default flags, `--port 0`) while 16
well-behaved clients stream completions, and in turn: nothing (the quiet baseline), 64 clients
that never read their stream, 500 slowloris sockets (half a request each), ten ~1 MB prompts,
ten floods of characters the vocabulary lacks, and worker faults injected with the server's
test hook (`CHARRNN_FAULT`, a prompt prefix whose every tick raises).

The model is the tiny preset trained for a few steps on the bundled demo screenplay (speed does
not depend on what it learned). The good clients are threads on http.client, each streaming
requests of --max-tokens characters one after another; a phase's window counts the characters
they received in it and the gaps between their chunks (the first chunk's wait after a request
is reported apart). Per phase one JSON line: the good clients' aggregate chars/s and its ratio
to the quiet phase, p50/p99 gap between chunks, the slowest first chunk, how every hostile
request ended, the good streams that ended in an error, the server's RSS (VmRSS of its
/proc/PID/status) at the phase's start and a second after it, /health's slowest answer and
whether every poll got a 200, and the most rows parked at once with when 90% of that many first
were (the time a client that never reads has its rows stepped). A last line: the goals of issue
42 checked, RSS among them as it was before the first phase and after the last, under the good
clients' load and idle (the good clients paused until the server's idle hook, which gives memory
back, has run): the idle pair decides the goal, since what a row in flight holds at the instant
of a reading varies.
The quiet phase and the hostile ones run in turn --rounds times on the same server; each phase's
line gives its ratio to its own round's quiet phase, and the goals take each hostile phase's
mean over the rounds against the quiet phases' mean (on a shared 2-core host one round alone
read the same phase at 0.73x and, minutes later, at 1.21x).
Usage: python bench/serve_faults.py [--seconds 18] [--rounds 3] [--good 16] [--max-tokens 400]
[--run DIR] [--phases never-read,slowloris,prompts,floods,faults] (the quiet phase always runs
first in each round)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, rss_mb  # noqa: E402

from charrnn.serving.engine import IDLE_AFTER  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "charrnn" / "demo" / "demo_screenplay.fountain"
PROMPT = "INT. KITCHEN - NIGHT\n\nShe opens the door. "
FAULT = "FAULT"


def p(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


class Server:
    """`charrnn serve RUN --port 0` with the fault hook; its stderr lines kept as they come."""

    def __init__(self, run: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "CHARRNN_FAULT": FAULT}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "charrnn", "serve", str(run), "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        started = threading.Event()

        def read() -> None:
            for line in self.proc.stderr:
                self.lines.append(line)
                if line.startswith("charrnn serve: http://"):
                    started.set()
            started.set()

        threading.Thread(target=read, daemon=True).start()
        if not started.wait(120) or self.proc.poll() is not None:
            self.proc.kill()
            sys.exit(f"error: the server did not start: {''.join(self.lines)}")
        start = next(line for line in self.lines if line.startswith("charrnn serve: http://"))
        self.port = int(re.search(r"http://[^:]+:(\d+)", start).group(1))

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid)

    def stop(self) -> int | None:
        self.proc.terminate()
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def request_bytes(body: bytes, path: str = "/v1/completions") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    )
    return head.encode() + b"\r\n" + body


class Good(threading.Thread):
    """A client that streams one completion after another and reads every chunk as it comes."""

    def __init__(self, port: int, stop: threading.Event, pause: threading.Event, max_tokens: int) -> None:
        super().__init__(daemon=True)
        self.port, self.stop, self.pause, self.max_tokens = port, stop, pause, max_tokens
        self.between = threading.Event()  # set while paused between requests
        self.chunks: list[tuple[float, int]] = []  # (arrival, characters)
        self.gaps: list[tuple[float, float]] = []  # (arrival, seconds since the previous chunk)
        self.firsts: list[tuple[float, float]] = []  # (arrival, seconds since the request was sent)
        self.errors: list[tuple[float, str]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            if self.pause.is_set():
                self.between.set()
                time.sleep(0.05)
                continue
            self.between.clear()
            try:
                self.one()
            except (OSError, http.client.HTTPException, ValueError) as e:
                self.errors.append((time.perf_counter(), type(e).__name__))
                time.sleep(0.1)

    def one(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        body = json.dumps({"prompt": PROMPT, "max_tokens": self.max_tokens, "stream": True})
        try:
            sent = time.perf_counter()
            conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            if resp.status != 200:
                self.errors.append((time.perf_counter(), f"HTTP {resp.status}"))
                resp.read()
                time.sleep(0.2)
                return
            last = None
            while not self.stop.is_set():
                line = resp.readline()
                if not line:
                    self.errors.append((time.perf_counter(), "closed mid-stream"))
                    return
                if not line.startswith(b"data: "):
                    continue
                payload = line[6:].strip()
                if payload == b"[DONE]":
                    return
                now = time.perf_counter()
                obj = json.loads(payload)
                if "error" in obj:
                    self.errors.append((now, "error event"))
                    return
                self.chunks.append((now, sum(len(c["text"]) for c in obj["choices"])))
                if last is None:
                    self.firsts.append((now, now - sent))
                else:
                    self.gaps.append((now, now - last))
                last = now
        finally:
            conn.close()


class Health(threading.Thread):
    """GET /health every 0.1 s: (sent, seconds, status or the exception's name, parked rows)."""

    def __init__(self, port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.stop = port, stop
        self.polls: list[tuple[float, float, object, int]] = []

    def run(self) -> None:
        while not self.stop.is_set():
            start = time.perf_counter()
            parked = 0
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/health")
                answer = conn.getresponse()
                status: object = answer.status
                parked = json.loads(answer.read()).get("parked_rows", 0)
                conn.close()
            except (OSError, http.client.HTTPException, ValueError) as e:
                status = type(e).__name__
            self.polls.append((start, time.perf_counter() - start, status, parked))
            time.sleep(0.1)


def status_of(data: bytes) -> str | None:
    m = re.match(rb"HTTP/1\.1 (\d{3})", data)
    return m.group(1).decode() if m else None


def drain(sock: socket.socket, seconds: float) -> str:
    """Read what ``sock`` holds until the server closes it or ``seconds`` have passed: its
    status, whether the stream got to [DONE], and how the connection ended."""
    data, end = b"", "open"
    deadline = time.perf_counter() + seconds
    try:
        while (left := deadline - time.perf_counter()) > 0:
            sock.settimeout(left)
            piece = sock.recv(1 << 20)
            if not piece:
                end = "closed"
                break
            data += piece
    except TimeoutError:
        pass
    except ConnectionError:
        end = "reset"
    status = status_of(data) or "no answer"
    done = " [DONE]" if b"data: [DONE]" in data else (" cut" if status == "200" else "")
    return f"{status}{done} {end}"


def never_read(port: int, until: float) -> list[str]:
    """64 clients that ask for a long stream (n 8, 4,096 tokens) and never read it."""
    body = json.dumps({"prompt": PROMPT, "n": 8, "max_tokens": 4096, "stream": True}).encode()
    socks = []
    for _ in range(64):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        s.sendall(request_bytes(body))
        socks.append(s)
    time.sleep(max(0.0, until - time.perf_counter()))
    out = in_threads(drain, [(s, 1.5) for s in socks])
    for s in socks:
        s.close()
    return out


def slowloris(port: int, until: float) -> list[str]:
    """500 sockets that send half a request's headers, then nothing: when each was closed."""
    sel = selectors.DefaultSelector()
    opened = {}
    for _ in range(500):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        opened[s] = time.perf_counter()
    out = []
    while opened and time.perf_counter() < until:
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except ConnectionError:
                data = b""
            what = status_of(data) or "closed, no answer"
            out.append(f"{what} after {time.perf_counter() - opened.pop(s):.0f} s")
            sel.unregister(s)
            s.close()
    for s in opened:
        out.append("open at the phase's end")
        s.close()
    return out


def raw_post(port: int, body: bytes, timeout: float = 30) -> str:
    """One request on a raw socket: the status, or how it failed. The body may be refused
    before it is sent in full."""
    start = time.perf_counter()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(request_bytes(body))
        except TimeoutError:
            return "timeout while sending"
        except ConnectionError:
            pass  # refused before the body was all sent: its answer may still be there
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                piece = s.recv(65536)
                if not piece:
                    break
                data += piece
        except TimeoutError:
            return "timeout"
        except ConnectionError:
            pass
        return f"{status_of(data) or 'closed, no answer'} in {time.perf_counter() - start:.1f} s"
    finally:
        s.close()


def in_threads(fn, args_list: list[tuple]) -> list[str]:
    out: list[str] = [""] * len(args_list)

    def call(i: int, args: tuple) -> None:
        out[i] = fn(*args)

    threads = [threading.Thread(target=call, args=(i, a)) for i, a in enumerate(args_list)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def big_prompts(port: int, until: float) -> list[str]:
    """Ten ~1 MB prompts at once: five of 1,000,000 characters (a body under 1 MiB: past
    --max-prompt) and five of 1,100,000 (a body over 1 MiB)."""
    bodies = [
        json.dumps({"prompt": "A" * (1_000_000 if i % 2 == 0 else 1_100_000), "max_tokens": 16}).encode()
        for i in range(10)
    ]
    out = in_threads(raw_post, [(port, b) for b in bodies])
    time.sleep(max(0.0, until - time.perf_counter()))
    return [f"{len(b) / 1e6:.2f} MB: {o}" for b, o in zip(bodies, out)]


def floods(port: int, until: float) -> list[str]:
    """Ten prompts of 30,000 distinct characters the vocabulary lacks at once: five refused
    (the default "unknown": "error") and five with "unknown": "skip" (a valid request)."""
    prompt = "".join(chr(0x4E00 + i) for i in range(30_000))
    bodies = []
    for i in range(10):
        body: dict = {"prompt": prompt, "max_tokens": 1}
        if i % 2:
            body.update(unknown="skip", echo=True)
        bodies.append(json.dumps(body).encode())
    out = in_threads(raw_post, [(port, b) for b in bodies])
    time.sleep(max(0.0, until - time.perf_counter()))
    return [("skip: " if i % 2 else "error: ") + o for i, o in enumerate(out)]


def faults(port: int, until: float, count: int = 3) -> list[str]:
    """``count`` requests whose prompt starts with the fault hook's prefix, spread over the phase."""
    out = []
    body = json.dumps({"prompt": FAULT + " here", "max_tokens": 20}).encode()
    step = (until - time.perf_counter()) / count
    for i in range(count):
        due = until - (count - i) * step + step / 3
        time.sleep(max(0.0, due - time.perf_counter()))
        out.append(raw_post(port, body))
    time.sleep(max(0.0, until - time.perf_counter()))
    return out


def quiet(port: int, until: float) -> list[str]:
    time.sleep(max(0.0, until - time.perf_counter()))
    return []


def window(goods: list[Good], health: Health, t0: float, t1: float) -> dict:
    chars = sum(n for g in goods for t, n in g.chunks if t0 <= t < t1)
    gaps = [gap * 1000 for g in goods for t, gap in g.gaps if t0 <= t < t1]
    firsts = [f * 1000 for g in goods for t, f in g.firsts if t0 <= t < t1]
    errors = Counter(what for g in goods for t, what in g.errors if t0 <= t < t1)
    polls = [(sec, st) for t, sec, st, _ in health.polls if t0 <= t < t1]
    parked = [(t - t0, n) for t, _, _, n in health.polls if t0 <= t < t1]
    most = max((n for _, n in parked), default=0)
    return {
        "good_chars_per_s": round(chars / (t1 - t0)),
        "gap_p50_ms": round(p(gaps, 0.5), 1) if gaps else None,
        "gap_p99_ms": round(p(gaps, 0.99), 1) if gaps else None,
        "gap_max_ms": round(max(gaps), 1) if gaps else None,
        "first_chunk_max_ms": round(max(firsts), 1) if firsts else None,
        "good_streams_started": len(firsts),
        "good_errors": dict(errors),
        "health_polls": len(polls),
        "health_all_200": all(st == 200 for _, st in polls),
        "health_slowest_ms": round(max(sec for sec, _ in polls) * 1000, 1) if polls else None,
        # How long rows whose clients do not read were stepped: until 90% of the most parked at once.
        "parked_rows_max": most,
        "parked_90pct_after_s": next((round(t, 2) for t, n in parked if n >= 0.9 * most), None) if most else None,
    }


def train(out: Path, steps: int) -> None:
    cmd = [sys.executable, "-m", "charrnn", "train", str(DEMO), "--preset", "tiny", "--steps", str(steps)]
    subprocess.run([*cmd, "--out", str(out), "--quiet"], check=True)


def idle_rss(server: Server, goods: list[Good], pause: threading.Event) -> float:
    """The server's RSS once its good clients have paused and it has gone idle (its ``idle`` hook,
    which gives memory back, runs ``IDLE_AFTER`` seconds after the last tick); they resume."""
    pause.set()
    for good in goods:
        while good.is_alive() and not good.between.is_set():
            time.sleep(0.05)
    time.sleep(IDLE_AFTER + 1.5)
    rss = server.rss_mb()
    pause.clear()
    return rss


PHASES = {
    "never-read": ("64 clients that never read", never_read),
    "slowloris": ("500 slowloris sockets", slowloris),
    "prompts": ("ten ~1 MB prompts", big_prompts),
    "floods": ("ten unknown-character floods", floods),
    "faults": ("worker faults (3)", faults),
}


def run_phase(server: Server, goods: list[Good], health: Health, name: str, action, seconds: float) -> dict:
    """One phase: its hostile clients (none for the quiet one) beside the good ones, then what
    the good clients got in its window and how each hostile request ended."""
    rss_before = server.rss_mb()
    t0 = time.perf_counter()
    outcomes = action(server.port, t0 + seconds)
    t1 = t0 + seconds
    time.sleep(max(0.0, t1 + 1 - time.perf_counter()))
    row = {
        "phase": name,
        **window(goods, health, t0, t1),
        "hostile": dict(Counter(re.sub(r" (in|after) [\d.]+ s$", "", o) for o in outcomes)),
        "hostile_detail": outcomes if len(outcomes) <= 10 else None,
        "rss_mb_before": round(rss_before, 1),
        "rss_mb_after": round(server.rss_mb(), 1),
        "server_alive": server.proc.poll() is None,
    }
    if name == "500 slowloris sockets":
        closed = [float(re.search(r"after ([\d.]+) s$", o).group(1)) for o in outcomes if "after" in o]
        row["slowloris_closed_after_s_max"] = max(closed) if closed else None
    time.sleep(2)  # the next phase starts after this one's leftovers are gone
    return row


def goals(results: list[dict], rss: tuple[float, float, float, float], errors: list[str], code: int | None) -> dict:
    """Issue 42's goals over every round: each hostile phase's throughput as its mean over the
    rounds against the quiet phases' mean (on a shared 2-core host the good clients' chars/s moves
    by +-12% between 10-second windows of one quiet run, so one round's ratio says little), every
    other goal over every phase of every round."""
    speeds: dict[str, list[float]] = {}
    for r in results:
        speeds.setdefault(r["phase"], []).append(r["good_chars_per_s"])
    quiet = max(statistics.mean(speeds.pop("quiet")), 1)
    pooled = {name: round(statistics.mean(v) / quiet, 3) for name, v in speeds.items()}
    start_rss, end_rss, idle_start_rss, idle_end_rss = rss
    return dict(
        summary="goals (issue 42)",
        ratio_to_quiet_over_rounds=pooled,
        ratio_to_quiet_by_round={name: [r["ratio_to_quiet"] for r in results if r["phase"] == name] for name in pooled},
        min_ratio_to_quiet_over_rounds=min(pooled.values(), default=None),
        throughput_goal_met=all(v >= 0.8 for v in pooled.values()),
        max_gap_p99_ms=max(r["gap_p99_ms"] or 0 for r in results),
        gap_goal_met=all((r["gap_p99_ms"] or 1e9) < 250 for r in results),
        rss_mb_start=round(start_rss, 1),
        rss_mb_end=round(end_rss, 1),
        rss_change_pct=round(100 * (end_rss / start_rss - 1), 1),
        rss_idle_mb_start=round(idle_start_rss, 1),
        rss_idle_mb_end=round(idle_end_rss, 1),
        rss_idle_change_pct=round(100 * (idle_end_rss / idle_start_rss - 1), 1),
        rss_goal_met=abs(idle_end_rss / idle_start_rss - 1) <= 0.05,
        health_always_200=all(r["health_all_200"] for r in results),
        alive_throughout=all(r["server_alive"] for r in results),
        server_error_lines=len(errors),
        server_error_first=errors[:1],
        exit_code_on_sigterm=code,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=18, help="each phase's length")
    ap.add_argument("--rounds", type=int, default=3, help="times the quiet phase and the hostile ones run, in turn")
    ap.add_argument("--good", type=int, default=16, help="well-behaved streaming clients")
    ap.add_argument("--max-tokens", type=int, default=400, help="characters per good request")
    ap.add_argument("--steps", type=int, default=30, help="training steps of the tiny model")
    ap.add_argument("--run", type=Path, help="serve this run directory instead of training one")
    ap.add_argument(
        "--phases", default=",".join(PHASES), help="the hostile phases to run after the quiet one, in order"
    )
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be 1 or more")
    chosen = args.phases.split(",")
    if unknown := set(chosen) - set(PHASES):
        ap.error(f"unknown phase(s) {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}")

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = Path(tmp) / "tiny"
            start = time.perf_counter()
            train(run, args.steps)
            emit(
                setup="model",
                preset="tiny",
                steps=args.steps,
                corpus=DEMO.name,
                seconds=round(time.perf_counter() - start, 1),
            )
        server = Server(run)
        stop, pause = threading.Event(), threading.Event()
        goods = [Good(server.port, stop, pause, args.max_tokens) for _ in range(args.good)]
        health = Health(server.port, stop)
        for t in [*goods, health]:
            t.start()
        time.sleep(3)  # the clients' first requests: not part of any phase
        start_rss = server.rss_mb()
        idle_start_rss = idle_rss(server, goods, pause)
        phases = [("quiet", quiet), *(PHASES[key] for key in chosen)]
        results = []
        for round_ in range(1, args.rounds + 1):
            base = None
            for name, action in phases:
                row = run_phase(server, goods, health, name, action, args.seconds)
                base = base or max(row["good_chars_per_s"], 1)  # a silent quiet phase: ratios stay finite
                row = {"round": round_, **row, "ratio_to_quiet": round(row["good_chars_per_s"] / base, 3)}
                emit(**row)
                results.append(row)
        stop.set()
        for t in [*goods, health]:
            t.join(35)
        end_rss = server.rss_mb()
        idle_end_rss = idle_rss(server, goods, pause)
        errors = [line.rstrip() for line in server.lines if line.startswith("error")]
        code = server.stop()
        emit(**goals(results, (start_rss, end_rss, idle_start_rss, idle_end_rss), errors, code))


if __name__ == "__main__":
    main()
