"""Training throughput: charrnn's train step vs a plain PyTorch loop, same model, same run.

Prints one JSON line per (model, implementation) with chars/s, achieved GFLOP/s and the ratio to
the plain loop, plus the machine's measured float32 matrix-multiply peak; charrnn also runs with
bfloat16 autocast where the CPU computes bfloat16 (AVX-512-BF16 or AMX), beside the bfloat16
matrix-multiply peak (on a CPU with AMX that row is charrnn's default, ``--precision auto``);
then peak RSS and RSS drift (median over steps 100-200 vs 900-1,000 of the tiny preset), and a
table of step time against hidden size and sequence length, in float32 and in bfloat16 where
the CPU computes it. With ``--device cuda`` the same models run on the GPU (cuDNN), charrnn also under
float16 and bfloat16 autocast, the plain loop also through torch.compile, and the memory line is
the GPU's peak allocation. Usage: python bench/train_speed.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PlainLSTM, corpus, emit, plain_step, sync  # noqa: E402

from charrnn.data.prepare import prepare  # noqa: E402
from charrnn.runtime.precision import cpu_computes, cpu_has_amx  # noqa: E402
from charrnn.training.config import make_config  # noqa: E402
from charrnn.training.trainer import Trainer  # noqa: E402


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of a square matrix product big enough to fill the device (float32 on CUDA is TF32
    where PyTorch allows it, as cuDNN's LSTM does by default)."""
    n = 1024 if device.type == "cpu" else 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps, start = 20, time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return reps * 2 * n**3 / (time.perf_counter() - start) / 1e9


def flops_per_char(layers: int, hidden: int, embed: int, vocab: int) -> float:
    """Matrix-multiply FLOPs of one training character: forward (2 per MAC) x 3 for backward."""
    macs = 4 * hidden * (embed + hidden) + (layers - 1) * 4 * hidden * 2 * hidden + hidden * vocab
    return 3 * 2 * macs


def plain_loop(
    ids: np.ndarray,
    vocab: int,
    layers: int,
    hidden: int,
    embed: int,
    batch: int,
    seq: int,
    steps: int,
    device: torch.device = torch.device("cpu"),
    compile: bool = False,
) -> float:
    torch.manual_seed(0)
    model = PlainLSTM(vocab, layers, hidden, embed).to(device)
    params = list(model.parameters())
    run = torch.compile(model) if compile else model
    opt = torch.optim.Adam(params, lr=2e-3)
    per = (len(ids) - 1) // batch
    xs = torch.from_numpy(ids[: batch * per].astype(np.int64).reshape(batch, per)).to(device)
    ys = torch.from_numpy(ids[1 : batch * per + 1].astype(np.int64).reshape(batch, per)).to(device)
    state, times = None, []
    for step in range(steps):
        k = step % (per // seq)  # wrap around: a GPU's step count can outrun the text
        start = time.perf_counter()
        x, y = xs[:, k * seq : (k + 1) * seq], ys[:, k * seq : (k + 1) * seq]
        loss, state = plain_step(run, params, opt, x, y, state, vocab)
        loss.item()
        times.append(time.perf_counter() - start)
    # Compiling takes the first steps (and recompiles once the carried state appears).
    return batch * seq / statistics.median(times[len(times) // 2 if compile else 2 :])


def charrnn_loop(
    path: Path,
    layers: int,
    hidden: int,
    embed: int,
    batch: int,
    seq: int,
    steps: int,
    precision: str = "float32",
    device: str = "cpu",
) -> tuple[float, list]:
    cfg = make_config(
        None,
        dict(
            layers=layers,
            hidden=hidden,
            embed=embed,
            dropout=0.2,
            batch_size=batch,
            seq_len=seq,
            steps=steps,
            eval_every=10**9,
            log_every=5,
            val_frac=0.01,
            precision=precision,
            device=device,
        ),
    )
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg, prepare([str(path)], None, cfg.val_frac), Path(out), quiet=True)
        trainer.fit()
        lines = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(line["chars_per_s"] for line in (lines[1:-1] or lines[1:] or lines)), lines


def rss_mb() -> float:
    """Current resident memory (Linux /proc), to see drift rather than the high-water mark."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer steps and no scaling table")
    ap.add_argument("--skip-speed", action="store_true", help="only the memory check and the scaling table")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args()
    device = torch.device(args.device)
    path = corpus("tinyshakespeare.txt")
    data = prepare([str(path)], None, 0.1)
    vocab = data.vocab.size
    peak = matmul_peak(device)
    emit(bench="train_speed", device=args.device, what="matmul_peak_gflops", value=round(peak, 1))
    models = [(2, 512, 512, 64, 100), (2, 128, 128, 50, 50)]
    if device.type == "cuda":
        emit(
            bench="train_speed",
            device=args.device,
            what="matmul_peak_gflops bfloat16",
            value=round(matmul_peak(device, torch.bfloat16), 1),
            gpu=torch.cuda.get_device_name(device),
        )
        # The shapes of the small (default) and large presets too: a GPU is where large is meant to run.
        models += [(2, 512, 128, 32, 100), (3, 1024, 256, 128, 200)]
        precisions = ["float16", "bfloat16"]
    else:
        # bfloat16 autocast needs a CPU that computes bfloat16 (AVX-512-BF16, AMX): oneDNN has no
        # bfloat16 LSTM without it.
        precisions = ["bfloat16"] if cpu_computes(torch.bfloat16) else []
        if not precisions:
            emit(bench="train_speed", who="charrnn --precision bfloat16", skipped="this CPU has no AVX-512-BF16 or AMX")
        else:
            peak_bf16 = matmul_peak(device, torch.bfloat16)
            emit(
                bench="train_speed",
                device=args.device,
                what="matmul_peak_gflops bfloat16",
                value=round(peak_bf16, 1),
                amx=cpu_has_amx(),
            )
    steps = (8 if args.quick else 25) * (4 if device.type == "cuda" else 1)
    for layers, hidden, embed, batch, seq in () if args.skip_speed else models:
        name = f"lstm {layers}x{hidden} embed {embed} seq {seq} batch {batch}"
        row = dict(bench="train_speed", device=args.device, model=name)
        plain = plain_loop(np.asarray(data.train), vocab, layers, hidden, embed, batch, seq, steps, device)
        ours, _ = charrnn_loop(path, layers, hidden, embed, batch, seq, steps * 2, device=args.device)
        fpc = flops_per_char(layers, hidden, embed, vocab)
        emit(**row, who="plain", chars_per_s=round(plain), gflops=round(plain * fpc / 1e9, 1))
        emit(
            **row,
            who="charrnn",
            chars_per_s=round(ours),
            gflops=round(ours * fpc / 1e9, 1),
            vs_plain=round(ours / plain, 3),
            peak_gflops=round(peak, 1),
        )
        for prec in precisions:
            fast, _ = charrnn_loop(
                path, layers, hidden, embed, batch, seq, steps * 2, precision=prec, device=args.device
            )
            emit(
                **row,
                who=f"charrnn --precision {prec}",
                chars_per_s=round(fast),
                gflops=round(fast * fpc / 1e9, 1),
                vs_plain=round(fast / plain, 3),
                vs_float32=round(fast / ours, 3),
                **({"peak_gflops": round(peak_bf16, 1)} if device.type == "cpu" else {}),
            )
        if device.type == "cuda":
            compiled = plain_loop(
                np.asarray(data.train), vocab, layers, hidden, embed, batch, seq, steps * 2, device, compile=True
            )
            emit(**row, who="plain + torch.compile", chars_per_s=round(compiled), vs_plain=round(compiled / plain, 3))
    # Memory: RSS must not grow over a long run. The allocator moves it up and down by ~10% from
    # step to step (oneDNN's scratch buffers come and go), so a single reading at step 100 and at
    # step 1,000 can differ either way without a leak: compare the medians of the readings taken
    # over steps 100-200 and 900-1,000 (sampled by a thread as the steps pass).
    last = 100 if args.quick else 1000
    cfg = make_config("tiny", dict(steps=last, eval_every=10**9, log_every=10, val_frac=0.01, device=args.device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg, prepare([str(path)], None, 0.01), Path(out), quiet=True)
        readings: list[tuple[int, float]] = []
        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.05):
                readings.append((trainer.position.step, rss_mb()))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        trainer.fit()
        done.set()
        watcher.join()

    def median_rss(lo: int, hi: int) -> float:
        return statistics.median([mb for step, mb in readings if lo <= step <= hi] or [0.0])

    early, late = median_rss(last // 10, last // 5), median_rss(last - last // 10, last)
    emit(
        bench="train_speed",
        what="rss_mb",
        steps=f"{last // 10}-{last // 5} vs {last - last // 10}-{last}",
        early_median=round(early, 1),
        late_median=round(late, 1),
        growth=round(late / max(1e-9, early) - 1, 4),
        max_mb=round(max(mb for _, mb in readings), 1),
        peak_rss_mb=round(peak_rss_mb(), 1),
        **({"gpu_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)} if device.type == "cuda" else {}),
    )
    if args.quick:
        return
    for prec in ("float32", *precisions):
        for hidden in (128, 256, 512, 1024):
            ours, _ = charrnn_loop(path, 2, hidden, 128, 64, 100, 12, precision=prec, device=args.device)
            emit(
                bench="train_speed",
                table="hidden",
                precision=prec,
                hidden=hidden,
                seq=100,
                batch=64,
                ms_per_step=round(64 * 100 / ours * 1000, 1),
                chars_per_s=round(ours),
            )
        for seq in (50, 100, 200, 400):
            ours, _ = charrnn_loop(path, 2, 512, 128, 64, seq, 10, precision=prec, device=args.device)
            emit(
                bench="train_speed",
                table="seq_len",
                precision=prec,
                hidden=512,
                seq=seq,
                batch=64,
                ms_per_step=round(64 * seq / ours * 1000, 1),
                chars_per_s=round(ours),
            )


if __name__ == "__main__":
    main()
