"""numba kernels for compositing packed samples on the CPU, and its backward: the CPU's
counterpart of `_triton_compositing.py`, with the same sums and the same backward (see
there). `volume_rendering.composite` is the reference they are tested against. The sums
run in float64 (stored as float32): the backward's d_sigma is a difference of two sums as
large as g_depth * t, and float32 sums lost more of it than the torch reference does where
t is large (tests/test_render.py).

Each ray's samples are walked once, in order, rays split over the cores (prange): no padded
[R, max samples] buffer, no cumulative sum over it. On the CPU the torch reference's dozen
passes over those buffers took about a tenth of a NeRF training step
(`scripts/bench_nerf_step.py --ab-compositing`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numba import njit, prange


@njit(parallel=True, cache=True, boundscheck=False)
def _composite(sigma, rgb, t, dt, offsets, prefix, has_prefix, opacity, rgb_out, depth, behind):
    """Per ray: opacity, rgb [R, 3], depth, transmittance behind its last sample (see the
    module's formulas); prefix [R] is read only when has_prefix. Sums in float64, stored as
    float32 (the backward's total is made of them, see `_composite_backward`)."""
    for r in prange(offsets.shape[0] - 1):
        p = np.float64(prefix[r]) if has_prefix else 1.0
        optical = o = cr = cg = cb = d = 0.0
        for i in range(offsets[r], offsets[r + 1]):
            sd = np.float64(sigma[i]) * dt[i]
            w = p * np.exp(-optical) * (1.0 - np.exp(-sd))
            o += w
            cr += w * rgb[i, 0]
            cg += w * rgb[i, 1]
            cb += w * rgb[i, 2]
            d += w * t[i]
            optical += sd
        opacity[r] = o
        rgb_out[r, 0] = cr
        rgb_out[r, 1] = cg
        rgb_out[r, 2] = cb
        depth[r] = d
        behind[r] = p * np.exp(-optical)


@njit(parallel=True, cache=True, boundscheck=False)
def _composite_backward(sigma, rgb, t, dt, offsets, prefix, has_prefix, opacity, rgb_out, depth,
                        g_opacity, g_rgb, g_depth, d_sigma, d_rgb):
    """d_sigma [S], d_rgb [S, 3] from the gradients of the per-ray outputs (no saved weights:
    the ray's outputs give the sum that the samples behind each one contribute)."""
    for r in prange(offsets.shape[0] - 1):
        p = np.float64(prefix[r]) if has_prefix else 1.0
        go, gd = np.float64(g_opacity[r]), np.float64(g_depth[r])
        gr, gg, gb = np.float64(g_rgb[r, 0]), np.float64(g_rgb[r, 1]), np.float64(g_rgb[r, 2])
        total = (go * opacity[r] + gr * rgb_out[r, 0] + gg * rgb_out[r, 1] + gb * rgb_out[r, 2]
                 + gd * depth[r])
        optical = 0.0
        so_far = 0.0                             # sum_{j<=i} w_j x_j
        for i in range(offsets[r], offsets[r + 1]):
            sd = np.float64(sigma[i]) * dt[i]
            w = p * np.exp(-optical) * (1.0 - np.exp(-sd))
            x = gr * rgb[i, 0] + gg * rgb[i, 1] + gb * rgb[i, 2] + go + gd * t[i]
            so_far += w * x
            optical += sd
            d_sigma[i] = dt[i] * (p * np.exp(-optical) * x - (total - so_far))
            d_rgb[i, 0] = w * gr
            d_rgb[i, 1] = w * gg
            d_rgb[i, 2] = w * gb


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy()


class _Composite(torch.autograd.Function):
    """(sigma [S], rgb [S, 3]) -> (opacity [R], rgb [R, 3], depth [R], transmittance [R]);
    differentiable in sigma and rgb (the transmittance is not)."""

    @staticmethod
    def forward(ctx: Any, sigma: torch.Tensor, rgb: torch.Tensor, t: torch.Tensor,
                dt: torch.Tensor, offsets: torch.Tensor, prefix: torch.Tensor | None
                ) -> tuple[torch.Tensor, ...]:
        n = offsets.numel() - 1
        opacity, depth, behind = (sigma.new_empty(n) for _ in range(3))
        rgb_out = sigma.new_empty(n, 3)
        pre = prefix if prefix is not None else opacity        # not read without a prefix
        _composite(_np(sigma), _np(rgb), _np(t), _np(dt), _np(offsets), _np(pre),
                   prefix is not None, _np(opacity), _np(rgb_out), _np(depth), _np(behind))
        ctx.save_for_backward(sigma, rgb, t, dt, offsets, prefix, opacity, rgb_out, depth)
        ctx.mark_non_differentiable(behind)
        return opacity, rgb_out, depth, behind

    @staticmethod
    def backward(ctx: Any, g_opacity: torch.Tensor | None, g_rgb: torch.Tensor | None,
                 g_depth: torch.Tensor | None, _g_behind: torch.Tensor | None
                 ) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        sigma, rgb, t, dt, offsets, prefix, opacity, rgb_out, depth = ctx.saved_tensors
        n = offsets.numel() - 1
        zeros = opacity.new_zeros(())

        def given(g: torch.Tensor | None, *shape: int) -> np.ndarray:
            return _np((g if g is not None else zeros.expand(*shape)).float().contiguous())

        d_sigma = torch.zeros_like(sigma)
        d_rgb = torch.zeros_like(rgb)
        pre = prefix if prefix is not None else opacity
        _composite_backward(_np(sigma), _np(rgb), _np(t), _np(dt), _np(offsets), _np(pre),
                            prefix is not None, _np(opacity), _np(rgb_out), _np(depth),
                            given(g_opacity, n), given(g_rgb, n, 3), given(g_depth, n),
                            _np(d_sigma), _np(d_rgb))
        return d_sigma, d_rgb, None, None, None, None


def composite(sigma: torch.Tensor, rgb: torch.Tensor, t: torch.Tensor, dt: torch.Tensor,
              offsets: torch.Tensor, prefix: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Packed samples (sigma, t, dt [S], rgb [S, 3], offsets [R + 1] int64; prefix [R] or
    None) on the CPU -> opacity [R], rgb [R, 3], depth [R], transmittance behind the last
    sample [R]."""
    f32 = torch.float32
    args = [v.to(f32).contiguous() for v in (sigma, rgb, t, dt)]
    return _Composite.apply(*args, offsets.to(torch.int64).contiguous(),
                            None if prefix is None else prefix.to(f32).contiguous())
