"""Choosing a torch device (never hard-code "cpu") and describing the machine."""
from __future__ import annotations

import collections
import datetime
import functools
import importlib
import os
import platform
from typing import Any

import torch

from .errors import UserError

DEVICES = ("auto", "cpu", "cuda", "mps")


def pick_device(name: str = "auto") -> torch.device:
    """"auto" picks CUDA, then Apple's MPS, then the CPU; a named device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda was asked for but torch sees no CUDA device")
    if name == "mps" and not _mps_available():
        raise UserError("device: mps was asked for but torch sees no MPS device")
    if name not in DEVICES:
        raise UserError(f"device: {name!r} is not one of {', '.join(DEVICES)}")
    return torch.device(name)


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def device_name(device: torch.device | str) -> str:
    """What a person calls the device: the GPU's name, "Apple GPU (MPS)", the CPU's model."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return _cpu_model()


@functools.lru_cache(maxsize=1)
def _cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else platform's words) and core count."""
    name = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "CPU"
    return f"{name}, {os.cpu_count() or 1} threads"


def found_devices() -> dict[str, str]:
    """The devices torch can use here, by type, with their names: {"cpu": ..., "cuda": ...,
    "mps": ...} (cuda and mps only when present; ROCm GPUs appear as cuda)."""
    found = {"cpu": device_name("cpu")}
    if torch.cuda.is_available():
        found["cuda"] = device_name("cuda")
    if _mps_available():
        found["mps"] = device_name("mps")
    return found


@functools.lru_cache(maxsize=1)
def cpu_bfloat16_units() -> tuple[str, ...]:
    """The bfloat16 matrix units this CPU has, of "amx" and "avx512_bf16" (torch's probes;
    empty where torch lacks them)."""
    return tuple(name for name, probe in (("amx", "_is_amx_tile_supported"),
                                          ("avx512_bf16", "_is_avx512_bf16_supported"))
                 if getattr(torch.cpu, probe, lambda: False)())


def machine_info(device: torch.device) -> dict[str, Any]:
    """Machine, library versions and device: where benchmark numbers come from."""
    try:
        numba_version: str | None = importlib.import_module("numba").__version__
    except ImportError:
        numba_version = None
    info: dict[str, Any] = {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(), "torch": torch.__version__, "numba": numba_version,
        "torch_num_threads": torch.get_num_threads(), "device": str(device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        # The sessions' machines differ (an Intel CPU with AMX, an AMD one without): which
        # CPU a figure came from, and what it has for bfloat16.
        "cpu": _cpu_model(),
        "cpu_bfloat16_units": list(cpu_bfloat16_units()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


class LaggedReads:
    """Values computed on the device each step, read on the host `lag` steps later.

    A host read of a value the device has not computed yet waits for the device's queue
    to drain, and the device then idles while the host queues the next work. Here each
    step's values are copied to the host without waiting (pinned memory and an event on
    CUDA) and read `lag` steps later, when the device is long past them: the read finds
    them done. By default the CPU reads the values at once (lag 0: a read costs nothing
    there); elsewhere (MPS) the late read is a plain copy.
    """

    def __init__(self, device: torch.device, lag: int | None = None) -> None:
        self.lag = (0 if device.type == "cpu" else 2) if lag is None else lag
        self._pending: collections.deque = collections.deque()

    def push(self, values: torch.Tensor, tag: Any = None) -> None:
        """Queue values [K] (on the device) with a host-side `tag` that comes back with them."""
        if self.lag == 0:
            self._pending.append((tag, values.detach().cpu(), None))
        elif values.device.type == "cuda":
            host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            host.copy_(values.detach(), non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            self._pending.append((tag, host, done))
        else:
            self._pending.append((tag, values.detach().clone(), None))

    def ready(self) -> list[tuple[Any, list]]:
        """(tag, values as a list) of the pushes at least `lag` pushes old, oldest first."""
        out = []
        while len(self._pending) > self.lag:
            tag, values, done = self._pending.popleft()
            out.append((tag, _on_host(values, done).tolist()))
        return out

    def pending(self) -> list[tuple[Any, list]]:
        """(tag, values) of the pushes not handed out yet, read now (for a checkpoint)."""
        return [(tag, _on_host(values, done).tolist()) for tag, values, done in self._pending]

    def restore(self, items: list[tuple[Any, list]]) -> None:
        """Pushes as `pending` gave them (a resumed run hands them out when it would have)."""
        self._pending = collections.deque((tag, torch.tensor(values), None) for tag, values in items)


def _on_host(values: torch.Tensor, done: Any) -> torch.Tensor:
    """A pushed value on the host, once its copy there is done (`done`: the CUDA event
    recorded after it, or None)."""
    if done is not None:
        done.synchronize()          # recorded `lag` steps ago: normally long passed
    return values if values.device.type == "cpu" else values.cpu()
