"""What reduced-precision sampling costs in quality: bits per character of a validation split read
by the sampler's step in float32 and in each reduced precision this machine steps in (bfloat16,
int8), beside charrnn eval's full-sequence forward.

The split runs as eval's rows (2,048 tokens each, every row after the first read from 256
tokens earlier), stepped one token at a time through ``Stepper`` for each precision, so the
numbers are the sampler's own predictions. Usage:
python bench/sample_precision.py CHECKPOINT [CORPUS: a file or folder (default tinyshakespeare)]
[--val-frac 0.1]; characters outside the model's vocabulary are left out of the split.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import corpus, emit  # noqa: E402

from charrnn.data.batches import val_streams  # noqa: E402
from charrnn.data.corpus import open_sources, read_text, resolve  # noqa: E402
from charrnn.data.prepare import split_point  # noqa: E402
from charrnn.evaluation.bpc import BURN_IN, MAX_STREAMS, TOKENS_PER_STREAM, evaluate  # noqa: E402
from charrnn.model import checkpoint  # noqa: E402
from charrnn.model.network import select_state  # noqa: E402
from charrnn.model.stepper import Stepper  # noqa: E402
from charrnn.runtime.precision import step_unavailable  # noqa: E402


@torch.no_grad()
def stepped_nats(stepper: Stepper, model, ids: np.ndarray) -> float:
    """Total cross-entropy of every prediction of ``ids``, one step at a time over eval's rows."""
    streams = max(1, min(MAX_STREAMS, (len(ids) - 1) // TOKENS_PER_STREAM))
    inputs, targets, burn_in, tail_in, tail_tgt = val_streams(ids, streams, BURN_IN)
    inputs, targets = (torch.from_numpy(a.astype(np.int64)) for a in (inputs, targets))
    state = model.init_state(inputs.shape[0])
    total = 0.0
    for t in range(inputs.shape[1]):
        logits, state = stepper.step(inputs[:, t], state)
        losses = F.cross_entropy(logits.float(), targets[:, t], reduction="none").double()
        if t < burn_in:
            losses[1:] = 0  # rows after the first only build their state here
        total += float(losses.sum())
    state = select_state(state, slice(-1, None))
    for x, y in zip(tail_in.tolist(), tail_tgt.tolist()):
        logits, state = stepper.step(torch.tensor([x]), state)
        total += float(F.cross_entropy(logits.float(), torch.tensor([y]), reduction="sum"))
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("corpus", nargs="?", default=None)
    ap.add_argument("--val-frac", type=float, default=0.1)
    args = ap.parse_args()
    path = Path(args.corpus) if args.corpus else corpus("tinyshakespeare.txt")
    model, vocab = checkpoint.build_model(checkpoint.load(args.checkpoint))
    text = read_text(open_sources(resolve([str(path)])))
    split = text[split_point(len(text), args.val_frac) :]
    unknown = set(vocab.missing(split))
    ids = vocab.encode("".join(c for c in split if c not in unknown))
    chars = vocab.count_chars(ids[1:])
    start = time.perf_counter()
    reference = evaluate(model, ids, torch.device("cpu"), chars=chars).bpc
    emit(
        bench="sample_precision",
        who="charrnn eval (full-sequence forward, float32)",
        bpc=round(reference, 5),
        seconds=round(time.perf_counter() - start, 1),
        tokens=len(ids),
    )
    bpcs = {}
    reduced = [p for p in ("bfloat16", "int8") if step_unavailable(p, model.cfg.model) is None]
    for precision in ("float32", *reduced):
        start = time.perf_counter()
        bpcs[precision] = stepped_nats(Stepper(model, precision), model, ids) / math.log(2) / chars
        emit(
            bench="sample_precision",
            who=f"sampler step, {precision}",
            bpc=round(bpcs[precision], 5),
            vs_eval=round(bpcs[precision] - reference, 5),
            seconds=round(time.perf_counter() - start, 1),
        )
    for precision in reduced:
        emit(
            bench="sample_precision",
            who=f"{precision} - float32",
            corpus=path.name,
            bpc_change=round(bpcs[precision] - bpcs["float32"], 5),
        )


if __name__ == "__main__":
    main()
