"""Which hash-grid backends exist on this machine, loaded lazily.

Importing the engine never compiles or imports a fast path: numba is imported on
the first CPU-kernel call, Triton and tiny-cuda-nn on the first GPU call. A missing
backend that was asked for by name is a `BackendUnavailable` naming what to install.

`auto` picks, fastest last in `available`: tiny-cuda-nn on CUDA when importable, else
Triton on CUDA/ROCm GPUs, the numba kernel on the CPU, the torch reference elsewhere (MPS).
Triton also runs on CPU tensors under TRITON_INTERPRET=1 (its interpreter: how the tests
check the GPU kernels without a GPU), but only when asked for by name: it is slow there.
"""
from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType

import torch

BACKENDS = ("torch", "cpu", "triton", "tcnn")
# Compile options of every Triton launch. a * b + c fused into one fma, as the kernels'
# docstrings assume: Triton 3.9 fuses by default but warns that 3.10 will not, and users'
# Triton comes with their torch wheel, so the choice is made here, not by its version.
# (The interpreter ignores launch options.)
TRITON_LAUNCH_OPTIONS = {"enable_fp_fusion": True}


class BackendUnavailable(RuntimeError):
    """A backend was requested that cannot run here; the message says what to install."""


@functools.lru_cache(maxsize=None)
def try_import(name: str) -> tuple[ModuleType | None, str]:
    try:
        return importlib.import_module(name), ""
    except Exception as e:  # ImportError, or tinycudann's EnvironmentError without CUDA
        return None, f"{type(e).__name__}: {e}"


def cpu_kernel() -> ModuleType:
    """The compiled CPU kernel module (numba)."""
    mod, why = try_import("ngp_engine.encoding._cpu_kernel")
    if mod is None:
        raise BackendUnavailable(
            f"the compiled CPU backend needs numba (pip install numba): {why}")
    return mod


def tcnn_module() -> ModuleType:
    """tiny-cuda-nn's PyTorch bindings."""
    mod, why = try_import("tinycudann")
    if mod is None:
        raise BackendUnavailable(
            "the tcnn backend needs tiny-cuda-nn's PyTorch bindings on a CUDA machine "
            "(pip install git+https://github.com/NVlabs/tiny-cuda-nn/#subdirectory=bindings/torch): "
            + why)
    return mod


def triton_kernel() -> ModuleType:
    """The Triton kernel module (imports triton, which compiles kernels on first launch)."""
    mod, why = try_import("ngp_engine.encoding._triton_kernel")
    if mod is None:
        raise BackendUnavailable(
            "the triton backend needs triton (it comes with PyTorch's CUDA and ROCm wheels; "
            f"else pip install triton): {why}")
    return mod


def triton_interpreted() -> bool:
    """Triton's interpreter is on (TRITON_INTERPRET as Triton reads it: 1, true, on, yes,
    y, any case): its kernels then run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes", "y")


CPU_KERNEL_DIMS = (2, 3)  # the compiled kernels are written for 2-D and 3-D inputs


def available(device: torch.device | str, n_input_dims: int = 3) -> list[str]:
    """Backends that can run on `device` for `n_input_dims`-D inputs, fastest last."""
    device = torch.device(device)
    names = ["torch"]
    if device.type == "cpu" and n_input_dims in CPU_KERNEL_DIMS and \
            try_import("ngp_engine.encoding._cpu_kernel")[0] is not None:
        names.append("cpu")
    gpu = device.type == "cuda" and torch.cuda.is_available()   # ROCm's torch says "cuda" too
    if gpu and n_input_dims in CPU_KERNEL_DIMS and \
            try_import("ngp_engine.encoding._triton_kernel")[0] is not None:
        names.append("triton")
    if gpu and torch.version.cuda and try_import("tinycudann")[0] is not None:
        names.append("tcnn")
    return names


def resolve(requested: str, device: torch.device | str, n_input_dims: int = 3) -> str:
    """Map a requested backend ("auto" or a name) to the one that will run on `device`."""
    device = torch.device(device)
    if requested == "auto":
        return available(device, n_input_dims)[-1]
    if requested not in BACKENDS:
        raise ValueError(f"backend: {requested!r} is not one of auto, {', '.join(BACKENDS)}")
    if requested == "cpu":
        if device.type != "cpu":
            raise BackendUnavailable(f"the cpu backend runs on the CPU, not on {device.type}")
        if n_input_dims not in CPU_KERNEL_DIMS:
            raise BackendUnavailable(
                f"the cpu backend encodes 2-D and 3-D inputs, not {n_input_dims}-D (use torch)")
        cpu_kernel()
    if requested == "triton":
        if n_input_dims not in CPU_KERNEL_DIMS:
            raise BackendUnavailable(
                f"the triton backend encodes 2-D and 3-D inputs, not {n_input_dims}-D (use torch)")
        if device.type == "cpu" and not triton_interpreted():
            raise BackendUnavailable(
                "the triton backend runs on CUDA and ROCm GPUs; on the CPU only in Triton's "
                "interpreter (TRITON_INTERPRET=1, for tests; use cpu for speed)")
        if device.type not in ("cpu", "cuda"):
            raise BackendUnavailable(f"the triton backend runs on CUDA and ROCm GPUs, not on {device.type}")
        triton_kernel()
    if requested == "tcnn":
        if device.type != "cuda":
            raise BackendUnavailable(f"the tcnn backend runs on CUDA devices, not on {device.type}")
        tcnn_module()
    return requested
