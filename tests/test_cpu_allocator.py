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

def faults_per_cycle():
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
kept = resident_mib()
cpu_allocator.release_freed_memory()
print(json.dumps({"before": before, "after": after, "applied": cpu_allocator.keep_freed_memory(),
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
    # The 64 MiB the last cycle freed stayed with the process until released.
    assert result["released_mib"] > 48, result


def test_the_users_own_glibc_malloc_settings_stand():
    env = {**os.environ, "GLIBC_TUNABLES": "glibc.malloc.trim_threshold=268435456"}
    result = _run(env)
    assert result["applied"] is False
    assert result["after"] > 10_000, result       # glibc's starting values, as set above
