"""Multiresolution hash encoding with interchangeable backends over one parameter vector.

Backends (same parameters, same outputs up to float summation order):
- "torch": pure-PyTorch reference (`_torch_impl`), any device and dtype; the oracle.
- "cpu":   compiled CPU kernel (`_cpu_kernel`, numba), float32 on the CPU.
- "triton": Triton kernels (`_triton_kernel`), float32 on CUDA/ROCm GPUs (on the CPU in
           Triton's interpreter, for tests).
- "tcnn":  tiny-cuda-nn's HashGrid on CUDA, fed with our parameter vector.
- "auto":  tcnn on CUDA when importable, else triton on GPUs, the compiled kernel on the
           CPU, else torch (see `backends`).
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import HashGridConfig
from . import backends
from ._torch_impl import hash_grid_encode
from .grid_layout import INTERPOLATION_CODES, GridLayout

log = logging.getLogger(__name__)


class _CpuKernelFunction(torch.autograd.Function):
    """Autograd wrapper of the numba kernels (float32, CPU).

    Outputs are allocated by torch and the kernels write into them. numpy asks the kernel
    for transparent huge pages on arrays of 4 MiB and more (madvise); where the system
    compacts memory for them on first touch (THP defrag "madvise", a fragmented machine),
    a fresh [2^18, 32] output or a 49 MB table gradient sometimes waited 0.2-0.5 s; torch's
    allocator makes no such request. `scripts/bench_encoding.py --ab-allocation` (2^18
    points, L16 F2 T2^19, 2 cores), fragmented: forward mean 75.8 -> 53.8 ms, table gradient
    98.2 -> 65.3 ms; unfragmented: 49.1 -> 46.5 ms and 57.4 -> 61.7 ms (4 KiB faults).
    The kernels overwrite every entry of these buffers (tests/test_hash_grid_backends.py).
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, params: torch.Tensor, grid: "HashGrid",
                features: torch.Tensor | None = None) -> torch.Tensor:
        ctx.save_for_backward(x, params)
        ctx.grid = grid
        if features is not None:          # this very forward, computed before (see HashGrid)
            return features.view_as(features)
        kernel = backends.cpu_kernel()
        x_np = x.detach().contiguous().numpy()
        p_np = params.detach().contiguous().numpy()
        out = torch.empty(x.shape[0], grid.n_output_dims, dtype=torch.float32, device=x.device)
        kernel.forward(x_np, p_np, grid._np_tables, grid.layout.n_features_per_level,
                       grid._interp_code, out.numpy())
        return out

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor):  # type: ignore[override]
        kernel = backends.cpu_kernel()
        x, params = ctx.saved_tensors
        grid: HashGrid = ctx.grid
        x_np = x.detach().contiguous().numpy()
        f = grid.layout.n_features_per_level
        dx = dparams = None
        dy_np = dy.detach().to(torch.float32).contiguous().numpy()           # [N, L * F]
        if ctx.needs_input_grad[1]:
            dparams = torch.empty(grid.layout.n_params, dtype=torch.float32, device=x.device)
            kernel.backward_params(x_np, dy_np, grid._np_tables, grid.layout.n_params, f,
                                   grid._interp_code, dparams.numpy())
        if ctx.needs_input_grad[0]:
            dx = torch.empty(x.shape, dtype=torch.float32, device=x.device)
            kernel.backward_input(x_np, dy_np, params.detach().contiguous().numpy(),
                                  grid._np_tables, f, grid._interp_code, dx.numpy())
        return dx, dparams, None, None


class _TritonFunction(torch.autograd.Function):
    """Autograd wrapper of the Triton kernels (float32; the gradient is not differentiable
    again: second derivatives, e.g. of an eikonal term, need the torch backend)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, params: torch.Tensor, grid: "HashGrid",
                features: torch.Tensor | None = None) -> torch.Tensor:
        kernel = backends.triton_kernel()
        x = x.detach().contiguous()
        p = params.detach().contiguous()
        ctx.save_for_backward(x, p)
        ctx.grid = grid
        if features is not None:
            return features.view_as(features)
        return kernel.forward(x, p, grid._tables(), grid.layout.n_features_per_level,
                              grid._interp_code)

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor):  # type: ignore[override]
        if torch.is_grad_enabled():
            # create_graph=True (an eikonal-style term): say so rather than let the second
            # derivative be silently missing from the loss.
            raise RuntimeError("the triton hash-grid backend has no second derivatives; "
                               "use backend torch for losses on gradients of the encoding")
        kernel = backends.triton_kernel()
        x, params = ctx.saved_tensors
        grid: HashGrid = ctx.grid
        f = grid.layout.n_features_per_level
        dy = dy.to(torch.float32).contiguous()
        dx = dparams = None
        if ctx.needs_input_grad[1]:
            dparams = kernel.backward_params(x, dy, grid._tables(), grid.layout.n_params, f,
                                             grid._interp_code)
        if ctx.needs_input_grad[0]:
            dx = kernel.backward_input(x, dy, params, grid._tables(), f, grid._interp_code)
        return dx, dparams, None, None


class HashGrid(nn.Module):
    """tiny-cuda-nn `HashGrid` encoding: [N, d] in [0, 1]^d -> [N, L * F].

    The trainable state is one flat vector `params` of `layout.n_params` floats in
    tiny-cuda-nn's layout (see `grid_layout`), initialised U(-1e-4, 1e-4).
    """

    def __init__(self, n_input_dims: int, cfg: HashGridConfig, backend: str = "auto",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.n_input_dims = n_input_dims
        self.layout = GridLayout.from_config(cfg, n_input_dims)
        self.requested_backend = backend
        params = torch.empty(self.layout.n_params, dtype=torch.float32)
        params.uniform_(-1e-4, 1e-4, generator=generator)
        self.params = nn.Parameter(params)
        lay = self.layout
        # Level tables as buffers so they follow .to(device); numpy copies for the kernel.
        self.register_buffer("scales", torch.from_numpy(lay.scales.copy()), persistent=False)
        self.register_buffer("sizes", torch.from_numpy(lay.sizes.copy()), persistent=False)
        self.register_buffer("offsets", torch.from_numpy(lay.offsets.copy()), persistent=False)
        self.register_buffer("hashed", torch.from_numpy(lay.hashed.copy()), persistent=False)
        self.register_buffer("strides", torch.from_numpy(lay.strides.copy()), persistent=False)
        # The same tables in the dtypes the Triton kernel reads, made once rather than
        # converted on every launch.
        self.register_buffer("scales_f32", self.scales.float(), persistent=False)
        self.register_buffer("hashed_i32", self.hashed.to(torch.int32), persistent=False)
        self._np_tables = (lay.scales, lay.sizes, lay.offsets, lay.hashed.astype(np.bool_),
                           lay.strides)
        self._interp_code = INTERPOLATION_CODES[cfg.interpolation]
        self._backend_by_device: dict[str, str] = {}
        # tiny-cuda-nn's module lives outside the module tree: its own (unused) params must
        # not enter our state_dict or parameter count.
        self._tcnn: list[Any] = []

    @property
    def n_output_dims(self) -> int:
        return self.layout.n_output_dims

    def backend_for(self, device: torch.device | str) -> str:
        """The backend this encoding runs on for `device`, resolving "auto" once."""
        device = torch.device(device)
        key = device.type
        if key not in self._backend_by_device:
            name = backends.resolve(self.requested_backend, device, self.n_input_dims)
            self._backend_by_device[key] = name
            log.info("hash grid backend on %s: %s", device.type, name)
        return self._backend_by_device[key]

    def forward(self, x: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """x: [N, d] positions in [0, 1]^d -> [N, L * F] features.

        `features`: this encoding's output at x with the current parameters, computed
        earlier without gradients (a NeRF step's density-only search evaluates the very
        samples it then trains on). The cpu and triton backends then skip the forward and
        only the backward runs; the others recompute. Same result either way.
        """
        if x.dim() != 2 or x.shape[1] != self.n_input_dims:
            raise ValueError(f"HashGrid expects [N, {self.n_input_dims}] inputs, got {tuple(x.shape)}")
        backend = self.backend_for(x.device)
        if features is not None and features.shape != (x.shape[0], self.n_output_dims):
            raise ValueError(f"features: expected {(x.shape[0], self.n_output_dims)}, got {tuple(features.shape)}")
        if backend == "cpu" and x.dtype == torch.float32:
            return _CpuKernelFunction.apply(x, self.params, self, features)
        if backend == "triton":
            return _TritonFunction.apply(x.float(), self.params, self, features).to(x.dtype)
        if backend == "tcnn":
            return self._tcnn_forward(x)
        return hash_grid_encode(x, self.params.to(x.dtype), self.scales, self.sizes, self.offsets,
                                self.hashed, self.strides, self.layout.n_features_per_level,
                                self.cfg.interpolation)

    def _tables(self) -> tuple[torch.Tensor, ...]:
        """The level tables for the Triton kernel, on the parameters' device: scales [L]
        float32, sizes [L], offsets [L + 1], hashed [L] int32, strides [L, d]."""
        return self.scales_f32, self.sizes, self.offsets, self.hashed_i32, self.strides

    def _tcnn_forward(self, x: torch.Tensor) -> torch.Tensor:
        tcnn = backends.tcnn_module()
        if not self._tcnn:
            module = tcnn.Encoding(self.n_input_dims, tcnn_encoding_config(self.cfg),
                                   dtype=torch.float32)
            if module.native_tcnn_module.n_params() != self.layout.n_params:
                raise RuntimeError(
                    f"tiny-cuda-nn lays out {module.native_tcnn_module.n_params()} "
                    f"parameters, ours {self.layout.n_params}: layouts disagree")
            self._tcnn.append(module)
        from tinycudann.modules import _C, _module_function  # noqa: PLC0415 (lazy, CUDA only)

        n = x.shape[0]
        granularity = int(_C.batch_size_granularity())
        padded = (n + granularity - 1) // granularity * granularity
        xp = x.float().contiguous()
        if padded != n:
            xp = torch.nn.functional.pad(xp, [0, 0, 0, padded - n])
        out = _module_function.apply(self._tcnn[0].native_tcnn_module, xp,
                                     self.params.contiguous(), 1.0)
        return out[:n, : self.n_output_dims].to(x.dtype)

    def extra_repr(self) -> str:
        lay = self.layout
        return (f"d={lay.n_input_dims}, L={lay.n_levels}, F={lay.n_features_per_level}, "
                f"T=2^{self.cfg.log2_hashmap_size}, params={lay.n_params}, "
                f"backend={self.requested_backend}")


def tcnn_encoding_config(cfg: HashGridConfig) -> dict[str, Any]:
    """The tiny-cuda-nn JSON for this grid (per_level_scale already resolved)."""
    return {
        "otype": "HashGrid",
        "n_levels": cfg.n_levels,
        "n_features_per_level": cfg.n_features_per_level,
        "log2_hashmap_size": cfg.log2_hashmap_size,
        "base_resolution": cfg.base_resolution,
        "per_level_scale": cfg.resolved_per_level_scale,
        "interpolation": cfg.interpolation,
    }
