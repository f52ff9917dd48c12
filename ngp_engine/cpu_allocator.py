"""glibc's allocator set for training on the CPU: big tensors reuse freed memory.

A training step allocates and frees the same multi-megabyte tensors every step (the MLPs'
[N, 64] activations and their gradients, encodings, sample buffers). With glibc's defaults,
blocks above the mmap threshold get pages of their own that are unmapped on free, and
freed memory at the top of the heap goes back to the system once it exceeds the trim
threshold (twice the threshold glibc last raised the mmap one to): so every step writes to
fresh pages again, one page fault per 4 KiB. Here that was about 12% of a CPU NeRF step
(`scripts/bench_nerf_step.py` with GLIBC_TUNABLES against without, three runs each:
95/93/98 ms against 107/101/113 ms median per step).

`keep_freed_memory()` (a CPU task calls it) raises the mmap threshold to its maximum
(32 MiB on 64-bit: larger blocks are still mapped apart) and the trim threshold to 1 GiB,
for the whole process. The cost: while training, freed blocks stay with the process (at
the heap's top up to 1 GiB, and any free block between live ones) for the next step to
reuse; `release_freed_memory()` (after each training run: the service's process lives on)
gives them back with malloc_trim. Where GLIBC_TUNABLES already sets malloc options, the
user's settings stand. Not glibc (macOS, Windows, musl): nothing changes.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1     # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20           # glibc's upper bound for it on 64-bit
TRIM_THRESHOLD = 1 << 30


@functools.lru_cache(maxsize=None)
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (its mallopt and malloc_trim), else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt, libc.malloc_trim       # noqa: B018 (AttributeError if missing)
    except (OSError, AttributeError) as e:
        log.debug("glibc's mallopt unavailable: %s", e)
        return None
    return libc


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Apply the settings above once per process; True where they took effect."""
    libc = _glibc()
    if libc is None or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    ok = (libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
          and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    log.debug("glibc malloc: mmap threshold %d, trim threshold %d: %s",
              MMAP_THRESHOLD, TRIM_THRESHOLD, ok)
    return ok


def release_freed_memory() -> None:
    """Give the memory freed while training back to the system (where keep_freed_memory
    kept it): the heap's free top and free pages between live blocks."""
    if keep_freed_memory.cache_info().currsize and keep_freed_memory():
        _glibc().malloc_trim(0)  # type: ignore[union-attr]
