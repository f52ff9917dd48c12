"""Triton kernels for compositing packed samples and its backward (CUDA and ROCm GPUs; CPU
tensors under TRITON_INTERPRET=1, for the tests). The same sums as
`volume_rendering.composite`, which is the reference:

    T_i = P exp(-sum_{j<i} sigma_j dt_j),  w_i = T_i (1 - exp(-sigma_i dt_i))
    opacity = sum w_i,  rgb = sum w_i c_i,  depth = sum w_i t_i

(P: the transmittance in front of the ray's first sample, 1 unless given).

One program walks BLOCK rays, each lane a ray, through its samples in order: no padded
[R, max samples] buffer, no cumulative sum over it, one launch forward and one backward
(the torch path is a dozen kernels and two [R, K] buffers). The backward needs no saved
weights (instant-ngp's trick): with g = dL/d(rgb, opacity, depth) of a ray and
x_i = g_rgb . c_i + g_opacity + g_depth t_i, the ray's outputs give G = sum_j w_j x_j, and

    dL/dc_i     = w_i g_rgb
    dL/dsigma_i = dt_i (T_{i+1} x_i - (G - sum_{j<=i} w_j x_j)),   T_{i+1} = T_i exp(-sigma_i dt_i)

so the backward walks the samples once more, accumulating sum_{j<=i} w_j x_j.
"""
from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from ..encoding.backends import TRITON_LAUNCH_OPTIONS, triton_interpreted

INTERPRETED = triton_interpreted()
BLOCK = 128                      # rays per program on a GPU
INTERPRETER_BLOCK = 1 << 14


@triton.jit
def _ray_block(offsets_ptr, prefix_ptr, n_rays, HAS_PREFIX: tl.constexpr, BLOCK_R: tl.constexpr):
    """This program's rays [BLOCK_R]: their indices, which exist, their first sample and
    sample count, the block's longest count, and the transmittance in front (1 unless
    HAS_PREFIX)."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    mask = rows < n_rays
    start = tl.load(offsets_ptr + rows, mask=mask, other=0)
    count = tl.load(offsets_ptr + rows + 1, mask=mask, other=0) - start
    longest = tl.max(count, axis=0).to(tl.int32)
    prefix = tl.full([BLOCK_R], 1.0, tl.float32)
    if HAS_PREFIX:
        prefix = tl.load(prefix_ptr + rows, mask=mask, other=1.0)
    return rows, mask, start, count, longest, prefix


@triton.jit
def _composite_kernel(sigma_ptr, rgb_ptr, t_ptr, dt_ptr, offsets_ptr, prefix_ptr, n_rays,
                      opacity_ptr, rgb_out_ptr, depth_ptr, trans_ptr,
                      HAS_PREFIX: tl.constexpr, BLOCK_R: tl.constexpr):
    rows, mask, start, count, longest, prefix = _ray_block(offsets_ptr, prefix_ptr, n_rays,
                                                           HAS_PREFIX, BLOCK_R)
    optical = tl.zeros([BLOCK_R], dtype=tl.float32)       # sum_{j<i} sigma_j dt_j
    opacity = tl.zeros([BLOCK_R], dtype=tl.float32)
    r = tl.zeros([BLOCK_R], dtype=tl.float32)
    g = tl.zeros([BLOCK_R], dtype=tl.float32)
    b = tl.zeros([BLOCK_R], dtype=tl.float32)
    depth = tl.zeros([BLOCK_R], dtype=tl.float32)
    for k in range(0, longest):
        live = k < count
        i = start + k
        sd = tl.load(sigma_ptr + i, mask=live, other=0.0) * tl.load(dt_ptr + i, mask=live, other=0.0)
        w = prefix * tl.exp(-optical) * (1.0 - tl.exp(-sd))
        opacity += w
        r += w * tl.load(rgb_ptr + i * 3, mask=live, other=0.0)
        g += w * tl.load(rgb_ptr + i * 3 + 1, mask=live, other=0.0)
        b += w * tl.load(rgb_ptr + i * 3 + 2, mask=live, other=0.0)
        depth += w * tl.load(t_ptr + i, mask=live, other=0.0)
        optical += sd
    tl.store(opacity_ptr + rows, opacity, mask=mask)
    tl.store(rgb_out_ptr + rows * 3, r, mask=mask)
    tl.store(rgb_out_ptr + rows * 3 + 1, g, mask=mask)
    tl.store(rgb_out_ptr + rows * 3 + 2, b, mask=mask)
    tl.store(depth_ptr + rows, depth, mask=mask)
    tl.store(trans_ptr + rows, prefix * tl.exp(-optical), mask=mask)


@triton.jit
def _composite_backward_kernel(sigma_ptr, rgb_ptr, t_ptr, dt_ptr, offsets_ptr, prefix_ptr,
                               n_rays, opacity_ptr, rgb_out_ptr, depth_ptr,
                               g_opacity_ptr, g_rgb_ptr, g_depth_ptr, d_sigma_ptr, d_rgb_ptr,
                               HAS_PREFIX: tl.constexpr, BLOCK_R: tl.constexpr):
    rows, mask, start, count, longest, prefix = _ray_block(offsets_ptr, prefix_ptr, n_rays,
                                                           HAS_PREFIX, BLOCK_R)
    go = tl.load(g_opacity_ptr + rows, mask=mask, other=0.0)
    gr = tl.load(g_rgb_ptr + rows * 3, mask=mask, other=0.0)
    gg = tl.load(g_rgb_ptr + rows * 3 + 1, mask=mask, other=0.0)
    gb = tl.load(g_rgb_ptr + rows * 3 + 2, mask=mask, other=0.0)
    gd = tl.load(g_depth_ptr + rows, mask=mask, other=0.0)
    total = (go * tl.load(opacity_ptr + rows, mask=mask, other=0.0)
             + gr * tl.load(rgb_out_ptr + rows * 3, mask=mask, other=0.0)
             + gg * tl.load(rgb_out_ptr + rows * 3 + 1, mask=mask, other=0.0)
             + gb * tl.load(rgb_out_ptr + rows * 3 + 2, mask=mask, other=0.0)
             + gd * tl.load(depth_ptr + rows, mask=mask, other=0.0))
    optical = tl.zeros([BLOCK_R], dtype=tl.float32)
    so_far = tl.zeros([BLOCK_R], dtype=tl.float32)       # sum_{j<=i} w_j x_j
    for k in range(0, longest):
        live = k < count
        i = start + k
        sigma = tl.load(sigma_ptr + i, mask=live, other=0.0)
        dt = tl.load(dt_ptr + i, mask=live, other=0.0)
        cr = tl.load(rgb_ptr + i * 3, mask=live, other=0.0)
        cg = tl.load(rgb_ptr + i * 3 + 1, mask=live, other=0.0)
        cb = tl.load(rgb_ptr + i * 3 + 2, mask=live, other=0.0)
        sd = sigma * dt
        trans = prefix * tl.exp(-optical)
        w = trans * (1.0 - tl.exp(-sd))
        x = gr * cr + gg * cg + gb * cb + go + gd * tl.load(t_ptr + i, mask=live, other=0.0)
        so_far += w * x
        optical += sd
        d_sigma = dt * (prefix * tl.exp(-optical) * x - (total - so_far))
        tl.store(d_sigma_ptr + i, d_sigma, mask=live)
        tl.store(d_rgb_ptr + i * 3, w * gr, mask=live)
        tl.store(d_rgb_ptr + i * 3 + 1, w * gg, mask=live)
        tl.store(d_rgb_ptr + i * 3 + 2, w * gb, mask=live)


def block_size(n: int) -> int:
    return min(INTERPRETER_BLOCK, triton.next_power_of_2(max(n, 1))) if INTERPRETED else BLOCK


class _Composite(torch.autograd.Function):
    """(sigma [S], rgb [S, 3]) -> (opacity [R], rgb [R, 3], depth [R], transmittance [R]);
    differentiable in sigma and rgb (the transmittance is not)."""

    @staticmethod
    def forward(ctx: Any, sigma: torch.Tensor, rgb: torch.Tensor, t: torch.Tensor,
                dt: torch.Tensor, offsets: torch.Tensor, prefix: torch.Tensor | None
                ) -> tuple[torch.Tensor, ...]:
        n, dev = offsets.numel() - 1, sigma.device
        opacity = torch.empty(n, dtype=torch.float32, device=dev)
        rgb_out = torch.empty(n, 3, dtype=torch.float32, device=dev)
        depth = torch.empty(n, dtype=torch.float32, device=dev)
        trans = torch.empty(n, dtype=torch.float32, device=dev)
        if n:
            block = block_size(n)
            _composite_kernel[(triton.cdiv(n, block),)](
                sigma, rgb, t, dt, offsets, prefix if prefix is not None else opacity, n,
                opacity, rgb_out, depth, trans, HAS_PREFIX=prefix is not None, BLOCK_R=block,
                **TRITON_LAUNCH_OPTIONS)
        ctx.save_for_backward(sigma, rgb, t, dt, offsets, prefix, opacity, rgb_out, depth)
        ctx.mark_non_differentiable(trans)
        return opacity, rgb_out, depth, trans

    @staticmethod
    def backward(ctx: Any, g_opacity: torch.Tensor, g_rgb: torch.Tensor, g_depth: torch.Tensor,
                 _g_trans: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        sigma, rgb, t, dt, offsets, prefix, opacity, rgb_out, depth = ctx.saved_tensors
        n = offsets.numel() - 1
        d_sigma = torch.zeros_like(sigma)
        d_rgb = torch.zeros_like(rgb)
        if n and sigma.numel():
            block = block_size(n)
            zeros = opacity.new_zeros(())
            _composite_backward_kernel[(triton.cdiv(n, block),)](
                sigma, rgb, t, dt, offsets, prefix if prefix is not None else opacity, n,
                opacity, rgb_out, depth,
                (g_opacity if g_opacity is not None else zeros.expand(n)).contiguous(),
                (g_rgb if g_rgb is not None else zeros.expand(n, 3)).contiguous(),
                (g_depth if g_depth is not None else zeros.expand(n)).contiguous(),
                d_sigma, d_rgb, HAS_PREFIX=prefix is not None, BLOCK_R=block,
                **TRITON_LAUNCH_OPTIONS)
        return d_sigma, d_rgb, None, None, None, None


def composite(sigma: torch.Tensor, rgb: torch.Tensor, t: torch.Tensor, dt: torch.Tensor,
              offsets: torch.Tensor, prefix: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Packed samples (sigma, t, dt [S], rgb [S, 3], offsets [R + 1]; prefix [R] or None)
    -> opacity [R], rgb [R, 3], depth [R], transmittance behind the last sample [R]."""
    f32 = torch.float32
    args = [v.to(f32).contiguous() for v in (sigma, rgb, t, dt)]
    return _Composite.apply(*args, offsets.contiguous(),
                            None if prefix is None else prefix.to(f32).contiguous())
