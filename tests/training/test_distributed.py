"""Data-parallel training with torchrun on CPU (gloo): the same model as one process."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import TINY, run_cli

from charrnn.errors import CharrnnError
from charrnn.model import checkpoint
from charrnn.runtime import distributed

# Two ranks x 4 streams against one process x 8 streams; dropout is off in TINY. float32: under
# bfloat16 (what --precision auto picks on an AMX CPU) a batch split in two rounds differently.
FLAGS = [*TINY, "--steps", "12", "--eval-every", "6", "--device", "cpu", "--precision", "float32", "--quiet"]


def torchrun(nproc: int, *args, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(nproc),
        "-m",
        "charrnn",
        "train",
        *map(str, args),
    ]
    return subprocess.run(cmd, capture_output=True, env=env, timeout=timeout)


def _state(path):
    return checkpoint.load(path)["state_dict"]


def test_two_ranks_match_one_process(tmp_path, repetitive_corpus):
    one, two = tmp_path / "one", tmp_path / "two"
    r = run_cli("train", repetitive_corpus, *FLAGS, "--out", one)
    assert r.exit_code == 0, r.stderr
    p = torchrun(2, repetitive_corpus, *FLAGS, "--out", two)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    a, b = _state(one / "last.pt"), _state(two / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    # validation is sharded over the ranks and summed: the same whole-split bpc
    m1 = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    m2 = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in m1] == [line["step"] for line in m2]
    for x, y in zip(m1, m2):
        assert abs(x["train_bpc"] - y["train_bpc"]) < 1e-4
        assert (x["val_bpc"] is None) == (y["val_bpc"] is None)
        if x["val_bpc"] is not None:
            assert abs(x["val_bpc"] - y["val_bpc"]) < 1e-4
    # Resuming the 2-rank run in one process (same global batch) continues it.
    r = run_cli("train", "--resume", two, "--steps", "16", "--quiet")
    assert r.exit_code == 0, r.stderr
    assert checkpoint.load(two / "last.pt")["step"] == 16
    # ... and a one-process run resumes on two ranks and matches one process throughout.
    r = run_cli("train", "--resume", one, "--steps", "16", "--quiet")
    assert r.exit_code == 0, r.stderr
    split = tmp_path / "split"
    r = run_cli("train", repetitive_corpus, *FLAGS, "--out", split)
    assert r.exit_code == 0, r.stderr
    p = torchrun(2, "--resume", split, "--steps", "16", "--quiet")
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    a, b = _state(one / "last.pt"), _state(split / "last.pt")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k


def test_batch_must_divide_over_ranks(tmp_path, repetitive_corpus):
    p = torchrun(
        2,
        repetitive_corpus,
        *TINY,
        "--batch-size",
        "7",
        "--steps",
        "2",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        tmp_path / "o",
    )
    assert p.returncode != 0
    assert b"must divide evenly over 2 ranks" in p.stderr


def test_each_rank_takes_its_own_gpu_and_more_ranks_than_gpus_is_refused(monkeypatch):
    # Seen on a 1-GPU machine: a second rank died in set_device(cuda:1) with a traceback.
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    world = distributed.World(rank=1, size=2, local_rank=1, local_size=2)
    with pytest.raises(CharrnnError, match="started 2 processes on this machine but it has 1 GPU"):
        distributed.rank_device(world, torch.device("cuda"))
    with pytest.raises(CharrnnError):  # rank 0 refuses too, rather than wait for rank 1 forever
        distributed.rank_device(distributed.World(rank=0, size=2, local_rank=0, local_size=2), torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.rank_device(world, torch.device("cuda")) == torch.device("cuda", 1)
    assert distributed.rank_device(world, torch.device("cpu")) == torch.device("cpu")
