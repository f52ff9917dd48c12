"""A CPU task makes glibc's allocator keep freed memory for reuse (ngp_engine/cpu_allocator.py):
a step's multi-megabyte tensors then land on pages already mapped instead of faulting in
fresh ones every step. Measured in a fresh interpreter by its own page-fault count."""
from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from conftest import ROOT

SCRIPT = r"""
import ctypes, json, resource, sys
import numpy as np, torch
from ngp_engine.config import IMAGE_PRESETS
from ngp_engine.tasks.image import ImageTask

def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

def faults_per_cycle():
    def cycle():                      # four 16 MiB tensors written, then freed together
        ts = [torch.empty(4 << 20).fill_(1.0) for _ in range(4)]
        del ts
    for _ in range(3):
        cycle()
    f0 = faults()
    for _ in range(10):
        cycle()
    return (faults() - f0) / 10

# glibc's starting values (128 KiB each): how far it has raised them by itself by now
# depends on what the imports freed, which varies from run to run.
libc = ctypes.CDLL(None)
assert libc.mallopt(-3, 128 << 10) == 1 and libc.mallopt(-1, 128 << 10) == 1
before = faults_per_cycle()
ImageTask((np.zeros((8, 8, 3), np.float32), ""), IMAGE_PRESETS["seed"], torch.device("cpu"))
print(json.dumps({"before": before, "after": faults_per_cycle()}))
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                    reason="the allocator settings are glibc's (Linux); elsewhere nothing changes")
def test_a_cpu_task_makes_freed_tensors_reusable_without_page_faults():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    faults = json.loads(proc.stdout.strip().splitlines()[-1])
    # glibc's defaults: each 16 MiB block is mapped apart and unmapped on free, so every
    # cycle faults its pages in again (thousands); after the task's settings, none.
    assert faults["before"] > 1000, faults
    assert faults["after"] < 20, faults
