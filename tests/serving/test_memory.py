"""The server's allocator settings and its release after a burst, on glibc (what Linux servers run)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from charrnn.runtime import kernels
from charrnn.serving import memory

glibc = pytest.mark.skipif(memory._LIBC is None, reason="not glibc's allocator")


def _rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


@glibc
def test_release_gives_back_what_a_burst_freed_inside_the_heap():
    """Blocks freed between live ones stay resident after ``free``; ``release`` returns them."""
    memory.release()
    start = _rss_mb()
    blocks = [bytearray(48 * 1024) for _ in range(4000)]  # ~190 MB under the mmap threshold: heap
    for block in blocks:
        block[::4096] = b"x" * len(block[::4096])  # touch every page
    keep = blocks[::16]  # live blocks pin the heap: only trimming can hand back what lies between
    del blocks
    held = _rss_mb()
    assert held - start > 150
    assert memory.release()
    assert _rss_mb() - start < 0.25 * (held - start)
    del keep


@glibc
def test_settle_sets_every_parameter(monkeypatch):
    monkeypatch.delenv(memory.PRIMITIVE_CACHE_ENV, raising=False)  # and restored after
    assert memory.settle()
    assert os.environ[memory.PRIMITIVE_CACHE_ENV] == str(memory.PRIMITIVE_CACHE)


@pytest.mark.skipif(kernels.blas_buffered_bytes() is None, reason="this torch has no MKL")
def test_release_gives_back_the_buffers_mkl_pooled_for_a_big_product():
    """A 400-row batch's product leaves MKL's packing buffers pooled (megabytes a server may not
    need again); ``release`` frees them."""
    torch.randn(400, 512) @ torch.randn(512, 2048)
    assert kernels.blas_buffered_bytes() > 1_000_000
    memory.release()
    assert kernels.blas_buffered_bytes() == 0


_READS = """
import re, sys, torch
from pathlib import Path
from charrnn.model.network import CharRNN, ModelConfig
from charrnn.sampling.generate import read_chunks
from charrnn.serving import memory
if sys.argv[1] == "settled":
    memory.settle()
rss = lambda: int(re.search(r"VmRSS:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024
model = CharRNN(ModelConfig(vocab_size=60, hidden=64, layers=2)).eval()
with torch.no_grad():
    list(read_chunks(model, [1] * 10))
    start = rss()
    for n in range(1, 129):
        list(read_chunks(model, [1] * n))
print(rss() - start)
"""


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")
def test_prompts_of_many_lengths_do_not_grow_a_settled_server():
    """Each prompt length a client sends builds a oneDNN primitive for its read; a settled
    process keeps few of them, where torch's default keeps 1,024 (~0.4 MB each)."""
    env = {k: v for k, v in os.environ.items() if k != memory.PRIMITIVE_CACHE_ENV}
    grown = {}
    for how in ("default", "settled"):
        read = subprocess.run([sys.executable, "-c", _READS, how], env=env, capture_output=True, text=True, check=True)
        grown[how] = float(read.stdout)
    assert grown["default"] > 10, grown  # what 128 lengths cost without the cap (52 MB on a Zen 3)
    assert grown["settled"] < grown["default"] / 2, grown
