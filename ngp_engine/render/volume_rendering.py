"""Volume rendering of packed samples (pure functions, differentiable, any device).

For the samples i = 0, 1, ... of one ray with densities sigma_i and interval lengths dt_i:
    alpha_i = 1 - exp(-sigma_i dt_i)
    T_i     = exp(-sum_{j<i} sigma_j dt_j)          (transmittance before sample i)
    w_i     = T_i * alpha_i                          (weight; sum_i w_i = opacity <= 1)
Sums per ray run in a padded [R, max samples] layout, so that float32 cumulative sums never
mix the samples of different rays.

`composite` is the one compositing path: training renders all of a ray's samples at once,
inference renders them a window at a time and carries the transmittance in front of each
window in (`prefix_trans`, as nerfacc's `render_weight_from_density`), so both give the
same weights. On CUDA/ROCm GPUs (or by name in Triton's interpreter) its sums and their
backward run as the Triton kernels of `_triton_compositing.py`, on the CPU as the numba
kernels of `_cpu_compositing.py`; the torch code here is the reference they are tested
against (and what runs on MPS, or without numba).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..encoding.backends import try_import


def compositor_for(device: torch.device, requested: str = "auto") -> str:
    """"triton", "cpu" or "torch": the compositing implementation for tensors on `device`
    (the names of the marching backends: "auto" is triton on CUDA/ROCm when importable, the
    numba kernels of `_cpu_compositing.py` for CPU tensors when numba is importable, else
    the torch sums here; "cpu" is the numba kernels for CPU tensors, the torch sums on
    other devices)."""
    if requested == "triton":
        return "triton"
    if requested == "auto" and device.type == "cuda" and \
            try_import("ngp_engine.render._triton_compositing")[0] is not None:
        return "triton"
    if requested in ("auto", "cpu") and device.type == "cpu" and \
            try_import("ngp_engine.render._cpu_compositing")[0] is not None:
        return "cpu"
    return "torch"


def _padded_index(ray_idx: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Position of each packed sample within its ray: [S] int64."""
    return torch.arange(ray_idx.numel(), device=ray_idx.device) - offsets[ray_idx]


def transmittance(sigma_dt: torch.Tensor, ray_idx: torch.Tensor, offsets: torch.Tensor,
                  max_per_ray: int | None = None) -> torch.Tensor:
    """T_i, the transmittance in front of each sample: [S] -> [S]. `max_per_ray`: a bound
    on any ray's sample count known to the caller (then nothing is read back from the
    device; None: the count is read)."""
    n_rays = offsets.numel() - 1
    if sigma_dt.numel() == 0:
        return torch.ones_like(sigma_dt)
    pos = _padded_index(ray_idx, offsets)
    width = max_per_ray if max_per_ray is not None else int((offsets[1:] - offsets[:-1]).max())
    padded = sigma_dt.new_zeros(n_rays, width)
    padded = padded.index_put((ray_idx, pos), sigma_dt)
    exclusive = torch.cumsum(padded, dim=1) - padded              # sum over j < i
    return torch.exp(-exclusive[ray_idx, pos])


def render_weights(sigma: torch.Tensor, dt: torch.Tensor, ray_idx: torch.Tensor,
                   offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights w_i [S] and transmittances T_i [S] from densities sigma [S] and intervals dt [S]."""
    sigma_dt = sigma * dt
    trans = transmittance(sigma_dt, ray_idx, offsets)
    alpha = 1.0 - torch.exp(-sigma_dt)
    return trans * alpha, trans


def accumulate(weights: torch.Tensor, values: torch.Tensor | None, ray_idx: torch.Tensor,
               n_rays: int) -> torch.Tensor:
    """Per-ray sum of w_i * value_i: weights [S], values [S, C] or [S] (None: 1) -> [R, C] / [R]."""
    if values is None:
        return weights.new_zeros(n_rays).index_add(0, ray_idx, weights)
    if values.dim() == 1:
        return weights.new_zeros(n_rays).index_add(0, ray_idx, weights * values)
    out = weights.new_zeros(n_rays, values.shape[1])
    return out.index_add(0, ray_idx, weights[:, None] * values)


@dataclass
class Composited:
    """Per-ray sums of `composite` (R rays)."""

    opacity: torch.Tensor              # [R] sum of weights
    rgb: torch.Tensor                  # [R, 3] sum of w_i rgb_i (no background yet)
    depth: torch.Tensor                # [R] sum of w_i t_i
    normals: torch.Tensor | None       # [R, 3] sum of w_i n_i (weights detached), when given
    transmittance: torch.Tensor | None  # [R] behind the last sample, when asked for


def composite(sigma: torch.Tensor, rgb: torch.Tensor, t: torch.Tensor, dt: torch.Tensor,
              ray_idx: torch.Tensor, offsets: torch.Tensor, n_rays: int,
              prefix_trans: torch.Tensor | None = None, normals: torch.Tensor | None = None,
              want_transmittance: bool = False, backend: str = "auto") -> Composited:
    """Volume-render packed samples: densities sigma [S], colours rgb [S, 3], distances t
    [S] and intervals dt [S] of `n_rays` rays (ray_idx [S], offsets [R + 1]).

    `prefix_trans` [R] is the transmittance in front of each ray's first sample here (1 when
    None); `normals` [S, 3] are summed with detached weights (they shade, they do not train).
    Differentiable in sigma and rgb. `backend`: see `compositor_for` (normals are summed by
    the torch code in every case: they only shade inference renders).
    """
    kind = compositor_for(sigma.device, backend)
    if normals is None and kind in ("triton", "cpu"):
        if kind == "triton":
            from . import _triton_compositing as K  # noqa: PLC0415 - triton loads on first GPU use
        else:
            from . import _cpu_compositing as K  # type: ignore[no-redef]  # noqa: PLC0415

        assert offsets.numel() - 1 == n_rays
        opacity, rgb_sum, depth, behind = K.composite(sigma, rgb, t, dt, offsets, prefix_trans)
        return Composited(opacity=opacity, rgb=rgb_sum, depth=depth, normals=None,
                          transmittance=behind if want_transmittance else None)
    weights, _ = render_weights(sigma, dt, ray_idx, offsets)
    if prefix_trans is not None:
        weights = weights * prefix_trans[ray_idx]
    out = Composited(opacity=accumulate(weights, None, ray_idx, n_rays),
                     rgb=accumulate(weights, rgb, ray_idx, n_rays),
                     depth=accumulate(weights, t, ray_idx, n_rays),
                     normals=None, transmittance=None)
    if normals is not None:
        out.normals = accumulate(weights.detach(), normals, ray_idx, n_rays)
    if want_transmittance:
        with torch.no_grad():
            optical = accumulate(sigma.detach() * dt, None, ray_idx, n_rays)
            out.transmittance = torch.exp(-optical) if prefix_trans is None else prefix_trans * torch.exp(-optical)
    return out
