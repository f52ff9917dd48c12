"""glibc's allocator set for training on the CPU: big tensors reuse freed memory.

A training step allocates and frees the same multi-megabyte tensors every step (the MLPs'
[N, 64] activations and their gradients, encodings, sample buffers, the hash table's
gradient). With glibc's defaults, blocks above the mmap threshold get pages of their own
that are unmapped on free, and freed memory at the top of the heap goes back to the system
once it exceeds the trim threshold (twice the threshold glibc last raised the mmap one to):
so every step writes to fresh pages again, one page fault per 4 KiB. Here that was about
12% of a CPU NeRF step (`scripts/bench_nerf_step.py` with GLIBC_TUNABLES against without,
three runs each: 95/93/98 ms against 107/101/113 ms median per step).

`keep_freed_memory()` (a CPU task calls it) raises the mmap threshold to 256 MiB and the
trim threshold to 1 GiB, for the whole process. mallopt(3) gives 32 MiB
(DEFAULT_MMAP_THRESHOLD_MAX on 64-bit) as the threshold's upper limit, but glibc 2.36 takes
and applies larger values; where a glibc refuses 256 MiB, 32 MiB is set instead
(`mmap_threshold` says which took). Above 32 MiB lie the `instant-ngp` presets' buffers:
the T=2^19 table gradient (49 MB) and [2^18, 32] encodings. At 32 MiB the `instant-ngp`
NeRF step faulted 33-95 thousand pages a step and took about 11% longer
(`scripts/bench_nerf_step.py --preset instant-ngp`, processes alternating with GLIBC_TUNABLES
giving the 32 MiB setting: README, "NeRF training step on the CPU").

The cost: while training, freed blocks stay with the process (at the heap's top up to
1 GiB, and any free block between live ones) for the next step to reuse;
`release_freed_memory()` (after each training run: the service's process lives on) gives
them back with malloc_trim. Where GLIBC_TUNABLES already sets malloc options, the user's
settings stand. Not glibc (macOS, Windows, musl): nothing changes.
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
MMAP_THRESHOLD = 256 << 20
DOCUMENTED_MMAP_MAX = 32 << 20      # mallopt(3)'s upper limit on 64-bit (see above)
TRIM_THRESHOLD = 1 << 30

mmap_threshold: int | None = None
"""The mmap threshold keep_freed_memory set (None: none set)."""


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
    global mmap_threshold
    libc = _glibc()
    if libc is None or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        return False
    for value in (MMAP_THRESHOLD, DOCUMENTED_MMAP_MAX):
        if libc.mallopt(M_MMAP_THRESHOLD, value) == 1:
            mmap_threshold = value
            break
    ok = mmap_threshold is not None
    log.debug("glibc malloc: mmap threshold %s, trim threshold %d: %s",
              mmap_threshold, TRIM_THRESHOLD, ok)
    return ok


def release_freed_memory() -> None:
    """Give the memory freed while training back to the system (where keep_freed_memory
    kept it): the heap's free top and free pages between live blocks."""
    if keep_freed_memory.cache_info().currsize and keep_freed_memory():
        _glibc().malloc_trim(0)  # type: ignore[union-attr]
