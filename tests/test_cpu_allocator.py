"""A CPU task makes glibc's allocator keep freed memory for reuse (ngp_engine/cpu_allocator.py):
a step's multi-megabyte tensors then land on pages already mapped instead of faulting in
fresh ones every step; after training the kept memory goes back to the system. Measured in
a fresh interpreter by its own page-fault count and resident size."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from conftest import ROOT
from ngp_engine import cpu_allocator

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the allocator settings are glibc's (Linux); elsewhere nothing changes")

SCRIPT = r"""
import ctypes, json, os, resource, sys
import numpy as np, torch
from ngp_engine import cpu_allocator
from ngp_engine.config import IMAGE_PRESETS
from ngp_engine.tasks.image import ImageTask

libc = ctypes.CDLL(None)
# Transparent huge pages would fault 2 MiB at a time and blur the counts: off for this
# process (PR_SET_THP_DISABLE).
assert libc.prctl(41, 1, 0, 0, 0) == 0

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def resident_mib():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def cycle():                          # four 16 MiB tensors written, then freed together
    ts = [torch.empty(4 << 20).fill_(1.0) for _ in range(4)]
    del ts

def big_cycle():                      # one 48 MiB tensor (an instant-ngp table gradient's size)
    t = torch.empty(12 << 20).fill_(1.0)
    del t

def faults_per_cycle(cycle=cycle):
    for _ in range(3):
        cycle()
    f0 = faults()
    for _ in range(10):
        cycle()
    return (faults() - f0) / 10

# glibc's starting values (128 KiB each): how far it has raised them by itself by now
# depends on what the imports freed, which varies from run to run.
assert libc.mallopt(-3, 128 << 10) == 1 and libc.mallopt(-1, 128 << 10) == 1
before = faults_per_cycle()
ImageTask((np.zeros((8, 8, 3), np.float32), ""), IMAGE_PRESETS["seed"], torch.device("cpu"))
after = faults_per_cycle()
big_after = faults_per_cycle(big_cycle)
kept = resident_mib()
cpu_allocator.release_freed_memory()
print(json.dumps({"before": before, "after": after, "big_after": big_after,
                  "applied": cpu_allocator.keep_freed_memory(),
                  "mmap_threshold": cpu_allocator.mmap_threshold,
                  "released_mib": kept - resident_mib()}))
"""


def _run(env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_cpu_task_makes_freed_tensors_reusable_without_page_faults_then_releases_them():
    result = _run()
    # glibc's defaults: each 16 MiB block is mapped apart and unmapped on free, so every
    # cycle faults its 16,384 pages in again; after the task's settings, none.
    assert result["applied"] is True
    assert result["before"] > 10_000, result
    assert result["after"] < 20, result
    # Blocks above 32 MiB (mallopt's documented limit for the threshold): reused too where
    # this glibc took the larger threshold, each cycle's 12,288 pages faulted in where not.
    if result["mmap_threshold"] == cpu_allocator.MMAP_THRESHOLD:
        assert result["big_after"] < 20, result
    else:
        assert result["mmap_threshold"] == cpu_allocator.DOCUMENTED_MMAP_MAX, result
        assert result["big_after"] > 10_000, result
    # The 64 MiB the 16 MiB cycles freed stayed with the process until released.
    assert result["released_mib"] > 48, result


def test_the_users_own_glibc_malloc_settings_stand():
    env = {**os.environ, "GLIBC_TUNABLES": "glibc.malloc.trim_threshold=268435456"}
    result = _run(env)
    assert result["applied"] is False
    assert result["after"] > 10_000, result       # glibc's starting values, as set above
    assert result["mmap_threshold"] is None, result
