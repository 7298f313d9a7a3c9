"""How often does a seeded request's text change because it ran in a busy batch?

A seeded request is meant to give the text a lone `charrnn sample --seed S` gives, but a
matrix product over 64 rows may round differently from one over a single row, and a rounding
difference can flip a draw, after which the texts part. This runs N seeded requests through
the server's engine twice: each alone, and all of them in a busy batch (64 at a time, joining
and leaving at different ticks, beside unseeded requests at other temperatures), and prints one
JSON line: how many texts differ, and how many of their characters.
Usage: python bench/seeded_batch.py [--requests 1000] [--length 200] [--hidden 512]
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

from charrnn.data.vocab import CharVocab  # noqa: E402
from charrnn.model.network import CharRNN, ModelConfig  # noqa: E402
from charrnn.serving.engine import Engine, Job  # noqa: E402


class Collector:
    def __init__(self) -> None:
        self.texts: dict[int, str] = {}
        self.done: set[int] = set()
        self.cond = threading.Condition()

    def __call__(self, events) -> None:
        with self.cond:
            for job, text, finish in events:
                self.texts[job.index] = self.texts.get(job.index, "") + text
                if finish is not None:
                    self.done.add(job.index)
            self.cond.notify_all()

    def wait(self, indices) -> None:
        with self.cond:
            self.cond.wait_for(lambda: all(i in self.done for i in indices))


def requests(n: int, length: int, vocab: CharVocab) -> list[dict]:
    rnd = random.Random(0)
    words = ["the", "lamp", "INT.", "ANNA", "sea", "door", "\n", "open", "dark"]
    return [
        {
            "prompt_ids": vocab.encode(" ".join(rnd.choices(words, k=rnd.randint(0, 12)))).tolist(),
            "max_tokens": length,
            "seed": 1000 + i,
            "temp": rnd.choice([0.5, 0.8, 1.0, 1.2]),
            "top_p": rnd.choice([None, 0.9]),
            "index": i,
        }
        for i in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--length", type=int, default=200)
    ap.add_argument("--hidden", type=int, default=512)
    args = ap.parse_args()
    torch.manual_seed(0)
    vocab = CharVocab("\n" + "".join(chr(c) for c in range(32, 127)))
    model = CharRNN(ModelConfig(vocab_size=vocab.size, layers=2, hidden=args.hidden, embed=args.hidden, dropout=0.0))
    specs = requests(args.requests, args.length, vocab)

    alone = Collector()
    engine = Engine(model, vocab, alone)
    start = time.perf_counter()
    for spec in specs:
        engine.submit([Job(**spec)])
        alone.wait([spec["index"]])
    alone_s = time.perf_counter() - start
    engine.close()

    busy = Collector()
    engine = Engine(model, vocab, busy)
    rnd = random.Random(1)
    start = time.perf_counter()
    for k, spec in enumerate(specs):
        engine.submit([Job(**spec)])
        if k % 8 == 7:  # unseeded neighbours of other lengths, so rows join and leave at every tick
            engine.submit(
                [Job(spec["prompt_ids"], rnd.randint(10, 3 * args.length), rnd.randrange(2**62), 1.5, index=-1 - k)]
            )
        while engine.active >= 64:
            time.sleep(0.001)
    busy.wait([s["index"] for s in specs])
    busy_s = time.perf_counter() - start
    engine.close()

    differ = [i for i in range(args.requests) if alone.texts[i] != busy.texts[i]]
    first = [next(j for j, (a, b) in enumerate(zip(alone.texts[i], busy.texts[i])) if a != b) for i in differ]
    emit(
        bench="seeded_batch",
        model=f"lstm 2x{args.hidden}, random weights",
        requests=args.requests,
        length=args.length,
        texts_differing=len(differ),
        fraction=round(len(differ) / args.requests, 4),
        first_difference_at=first[:20],
        alone_s=round(alone_s, 1),
        busy_s=round(busy_s, 1),
    )


if __name__ == "__main__":
    main()
