"""Choosing a torch device (never hard-code "cpu") and describing the machine."""
from __future__ import annotations

import datetime
import importlib
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
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device: cuda was asked for but torch sees no CUDA device")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None
                              and torch.backends.mps.is_available()):
        raise UserError("device: mps was asked for but torch sees no MPS device")
    if name not in DEVICES:
        raise UserError(f"device: {name!r} is not one of {', '.join(DEVICES)}")
    return torch.device(name)


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
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
