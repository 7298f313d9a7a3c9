"""The server's memory going back to the system after a burst (glibc's allocator; elsewhere a no-op).

A hostile phase (a thousand connections, 1 MB prompts, hundreds of rows) makes glibc grow its
heaps, and glibc keeps what it grew: freed chunks stay in the process, one heap per thread that
ever contended for the allocator, and its mmap threshold rises to the largest block freed so far,
so later big buffers (prompt text, batch tensors) land in the heap too. The server ends up holding
its peak, and a long-lived process that an attacker can push to its peak at will should not.
Three settings fix the layout once, at start: big blocks always mapped (given back on free), a
fixed trim threshold, few heaps; and ``release`` hands free heap pages back when the engine goes
idle, with the product buffers MKL pools for itself (kept by the process as glibc's are).
"""

from __future__ import annotations

import ctypes
import os
import sys

from charrnn.runtime import kernels

# mallopt's parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

# Blocks of this size or more are mapped on their own and unmapped on free; fixing it stops glibc
# raising it after each big free. Freed heap space past TRIM at the top goes back at once.
MMAP_THRESHOLD = 256 * 1024
TRIM_THRESHOLD = 1024 * 1024
# The event loop, the engine's worker and uvicorn's helper threads share this many heaps.
ARENAS = 2
_SETTINGS = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_ARENA_MAX, ARENAS))
# oneDNN keeps each primitive it builds, one per shape, up to 1,024 by default: reading a prompt
# of each new length built one (~0.4 MB of JIT code and reordered weights), so prompts of 256
# lengths grew a process by 107 MB, for good (2x512 LSTM, 2-core AMD EPYC Zen 3); with 32 kept,
# by 22 MB, and the reads took no longer (rebuilding costs what building did). A client picks
# its prompt's length: the cache must not grow with what clients send.
PRIMITIVE_CACHE = 32
PRIMITIVE_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _glibc()


def settle() -> bool:
    """Set the allocator's layout for a long-lived server, and the size of oneDNN's cache of
    primitives (unless ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` is set); call before the server's
    threads start and before any model runs (oneDNN reads it once, building its first primitive).
    False where the allocator is not glibc's (its layout unchanged)."""
    os.environ.setdefault(PRIMITIVE_CACHE_ENV, str(PRIMITIVE_CACHE))
    if _LIBC is None:
        return False
    return all([_LIBC.mallopt(param, value) for param, value in _SETTINGS])


def release() -> bool:
    """Give back what the allocators hold free: MKL's pooled product buffers, then the heaps' free
    pages (``malloc_trim``); True if any went back. It walks every free list with the allocator
    locked (0.2-6 ms): call it when idle or between the engine's ticks, not within one."""
    blas = kernels.free_blas_buffers()
    if _LIBC is None:
        return blas
    return bool(_LIBC.malloc_trim(0)) or blas
