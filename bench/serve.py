"""Serving speed: `charrnn serve` with 1, 4, 16 and 64 streaming clients against `charrnn
sample`'s own generation loop at batch 1, 16 and 64, in the same run.

The model is the default preset's shape (LSTM 2x512, vocabulary 65) with random weights: speed
does not depend on what the weights learned. Clients are raw asyncio sockets (HTTP/1.1,
chunked server-sent events) so the client side costs as little CPU as possible: on a 2-core
machine it shares the cores with the server. Per result one JSON line: aggregate and
per-client characters/s, time to the first character, p50/p99 gap between events, and the
ratio to the matching `charrnn sample` batch. Then the server's RSS at the 1,000th and the
N-th short request (--rss-requests, default 10,000; 0 skips it).
Usage: python bench/serve.py [--chars 1500] [--clients 1,4,16,64] [--distinct-prompts] [--threads default,1]
       [--rss-requests 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, rss_mb  # noqa: E402

from charrnn.data.vocab import CharVocab  # noqa: E402
from charrnn.model import checkpoint  # noqa: E402
from charrnn.model.network import CharRNN, ModelConfig  # noqa: E402
from charrnn.sampling.generate import generate  # noqa: E402
from charrnn.sampling.options import SampleOptions

PROMPT = (
    "INT. LIGHTHOUSE - NIGHT\n\nThe lamp turns. ANNA climbs the stairs, a letter in her hand.\n\n"
    "ANNA\n(quietly)\nYou kept the light burning all these years.\n\nBORIS\nSomeone had to.\n\nShe"
)[:200]


def make_checkpoint(path: Path) -> tuple[CharRNN, CharVocab]:
    torch.manual_seed(0)
    vocab = CharVocab("\n" + "".join(chr(c) for c in range(32, 127)))
    model = CharRNN(ModelConfig(vocab_size=vocab.size, layers=2, hidden=512, embed=512, dropout=0.0)).eval()
    checkpoint.save(
        {"model_config": model.cfg.to_dict(), "vocab": vocab.to_state(), "state_dict": model.state_dict()}, path
    )
    return model, vocab


def cli_rate(model, vocab, batch: int, chars: int) -> float:
    """`charrnn sample --num-samples B`'s generation (its own loop, without process start-up)."""
    opts = SampleOptions(length=chars, temp=0.8, seed=0)
    start = time.perf_counter()
    total = sum(len(piece) for _, piece in generate(model, vocab, opts, vocab.encode(PROMPT).tolist(), batch))
    return total / (time.perf_counter() - start)


async def stream(port: int, body: dict) -> dict:
    """One streaming request; arrival times of its events and the characters in each."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode()
    start = time.perf_counter()
    writer.write(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(data), data)
    )
    await reader.readuntil(b"\r\n\r\n")
    times, sizes, buffer = [], [], b""
    while True:
        size = int((await reader.readline()).strip(), 16)  # chunked transfer encoding
        if size == 0:
            break
        buffer += await reader.readexactly(size + 2)
        buffer = buffer[:-2] if buffer.endswith(b"\r\n") else buffer
        *events, buffer = buffer.split(b"\n\n")
        now = time.perf_counter()
        for e in events:
            if e.startswith(b"data: {"):
                n = sum(len(c["text"]) for c in json.loads(e[6:])["choices"])
                if n:
                    times.append(now)
                    sizes.append(n)
    writer.close()
    return {"start": start, "times": times, "sizes": sizes}


async def clients(port: int, count: int, chars: int, distinct: bool = False) -> list[dict]:
    """``count`` clients at once, each with the 200-character prompt (or, ``distinct``, its own
    rotation of it: identical prompts arriving together are read once)."""
    body = {"max_tokens": chars, "stream": True, "temperature": 0.8}
    prompts = [PROMPT[i:] + PROMPT[:i] if distinct else PROMPT for i in range(count)]
    return await asyncio.gather(*(stream(port, {**body, "prompt": p, "seed": i}) for i, p in enumerate(prompts)))


def summarise(
    results: list[dict], count: int, reference: float, reference_batch: int, threads: str, distinct: bool
) -> None:
    total = sum(sum(r["sizes"]) for r in results)
    wall = max(r["times"][-1] for r in results) - min(r["start"] for r in results)
    per_client = [sum(r["sizes"]) / (r["times"][-1] - r["start"]) for r in results]
    gaps = sorted(g for r in results for g in (b - a for a, b in zip(r["times"], r["times"][1:])))
    first = [r["times"][0] - r["start"] for r in results]
    emit(
        bench="serve",
        server_threads=threads,
        clients=count,
        prompts="distinct" if distinct else "same",
        aggregate_chars_per_s=round(total / wall, 1),
        per_client_chars_per_s=round(statistics.median(per_client), 1),
        first_char_ms_median=round(1000 * statistics.median(first), 1),
        first_char_ms_max=round(1000 * max(first), 1),
        gap_ms_p50=round(1000 * gaps[len(gaps) // 2], 2),
        gap_ms_p99=round(1000 * gaps[int(len(gaps) * 0.99)], 2),
        chars_per_event=round(total / sum(len(r["sizes"]) for r in results), 2),
        reference=f"charrnn sample --num-samples {reference_batch}",
        reference_chars_per_s=round(reference, 1),
        vs_reference=round(total / wall / reference, 3),
    )


async def short_requests(port: int, count: int, pid: int, concurrency: int = 8) -> dict[int, float]:
    """``count`` short streamed requests, ``concurrency`` at a time; RSS at the 1,000th and last."""
    marks, done = {}, 0

    async def worker(k: int) -> None:
        nonlocal done
        while done < count:
            done += 1
            i = done
            await stream(port, {"prompt": PROMPT[: 5 + i % 16], "max_tokens": 8 + i % 24, "stream": True, "seed": i})
            if i in (1000, count):
                marks[i] = rss_mb(pid)

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return marks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--chars", type=int, default=1500, help="characters per client")
    ap.add_argument("--rss-requests", type=int, default=10_000)
    ap.add_argument("--threads", default="default,1", help="OMP_NUM_THREADS settings of the server to compare")
    ap.add_argument(
        "--distinct-prompts",
        action="store_true",
        help="each client its own prompt (a rotation of the 200 characters), so no two share a prompt read",
    )
    ap.add_argument(
        "--clients",
        default="1,4,16,64",
        help="concurrent client counts to measure (16 and 64 compare "
        "against --num-samples 16 and 64, the others against batch 1)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "lstm-2x512" / "best.pt"
        ckpt.parent.mkdir()
        model, vocab = make_checkpoint(ckpt)
        counts = [int(c) for c in args.clients.split(",")]
        batches = sorted({1} | {c for c in counts if c >= 16})
        refs = {b: cli_rate(model, vocab, b, args.chars if b == 1 else args.chars // 2) for b in batches}
        for b, rate in refs.items():
            emit(
                bench="serve",
                who=f"charrnn sample --num-samples {b} (generation loop)",
                chars_per_s=round(rate, 1),
                threads=torch.get_num_threads(),
            )
        for k, threads in enumerate(args.threads.split(",")):
            measure_server(ckpt, args, counts, refs, threads, rss=k == 0 and args.rss_requests > 0)


def measure_server(ckpt: Path, args, counts: list[int], refs: dict[int, float], threads: str, rss: bool) -> None:
    env = {**os.environ, **({"OMP_NUM_THREADS": threads} if threads != "default" else {})}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "charrnn",
            "serve",
            str(ckpt.parent),
            "--port",
            "0",
            "--quiet",
            "--max-tokens",
            "100000",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        port = int(re.search(r":(\d+) ", server.stderr.readline()).group(1))
        asyncio.run(clients(port, 1, 50))  # warm: first-request costs out of the measurement
        for count in counts:
            chars = args.chars if count < 16 else args.chars // 2
            results = asyncio.run(clients(port, count, chars, args.distinct_prompts))
            ref_batch = 1 if count < 16 else count
            summarise(results, count, refs[ref_batch], ref_batch, threads, args.distinct_prompts)
        idle = [asyncio.run(clients(port, 1, 1))[0] for _ in range(5)]
        emit(
            bench="serve",
            server_threads=threads,
            who="idle server, 200-character prompt, 5 requests",
            first_char_ms=[round(1000 * (r["times"][0] - r["start"]), 1) for r in idle],
        )
        if rss:
            count = max(args.rss_requests, 1001)
            marks = asyncio.run(short_requests(port, count, server.pid))
            emit(
                bench="serve",
                who="server RSS",
                requests=count,
                rss_mb_at_1000=round(marks[1000], 1),
                rss_mb_at_last=round(marks[count], 1),
                growth=round(marks[count] / marks[1000] - 1, 4),
            )
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
