"""glibc's allocator set for training on the CPU: big tensors reuse freed memory.

A training step allocates and frees the same multi-megabyte tensors every step (the MLPs'
[N, 64] activations and their gradients, encodings, sample buffers). With glibc's defaults,
blocks above the mmap threshold get pages of their own that are unmapped on free, and
freed memory at the top of the heap goes back to the system once it exceeds the trim
threshold (twice the threshold glibc last raised the mmap one to): so every step writes to
fresh pages again, one page fault per 4 KiB. Here that was about 12% of a CPU NeRF step
(`scripts/bench_nerf_step.py` with GLIBC_TUNABLES against without, three runs each:
95/93/98 ms against 107/101/113 ms median per step).

`keep_freed_memory()` raises the mmap threshold to its maximum (32 MiB on 64-bit: larger
blocks are still mapped apart) and the trim threshold to 1 GiB. The cost: up to 1 GiB of
freed memory stays with the process until it is reused. Not glibc (macOS, Windows, musl):
nothing changes.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1     # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20           # glibc's upper bound for it on 64-bit
TRIM_THRESHOLD = 1 << 30


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Apply the settings above once per process; True where they took effect."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        ok = (libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
              and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    except (OSError, AttributeError) as e:
        log.debug("mallopt unavailable: %s", e)
        return False
    log.debug("glibc malloc: mmap threshold %d, trim threshold %d: %s",
              MMAP_THRESHOLD, TRIM_THRESHOLD, ok)
    return ok
