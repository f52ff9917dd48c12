"""Pure-PyTorch reference of the hash-grid encoding: any device, any float dtype.

This is the oracle the compiled kernels are tested against. It is written as plain
differentiable tensor ops, so autograd gives gradients for the table *and* the
positions; the table gradient comes from a single gather, hence a single
table-sized gradient buffer.
"""
from __future__ import annotations

import torch

from .grid_layout import PRIMES

_MASK32 = 0xFFFFFFFF


def grid_corners(
    x: torch.Tensor,
    scales: torch.Tensor,
    sizes: torch.Tensor,
    offsets: torch.Tensor,
    hashed: torch.Tensor,
    strides: torch.Tensor,
    interpolation: str = "Linear",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry indices and interpolation weights of every corner a point touches.

    Args:
        x: [N, d] positions, expected in [0, 1]^d (outside, indices wrap as in tiny-cuda-nn).
        scales: [L] float32 level scales s_l.
        sizes: [L] int64 entries per level.
        offsets: [L+1] int64 first entry of each level.
        hashed: [L] bool, hashed (True) or dense (False) indexing.
        strides: [L, d] int64 dense strides resolution**dim.
        interpolation: "Linear", "Nearest" or "Smoothstep".

    Returns:
        index: [N, L, C] int64 global entry index (level offset included); corner c has
            bit k set when it is the upper neighbour along axis k. C = 2^d, or 1 for Nearest.
        weight: [N, L, C] in x's dtype, differentiable with respect to x.

    One function on purpose (longer than most): it is the reference the kernels are tested
    against, and tiny-cuda-nn's indexing reads top to bottom here as in its CUDA source.
    """
    n, d = x.shape
    n_levels = scales.shape[0]
    device = x.device
    # tiny-cuda-nn: pos = fmaf(scale, x, 0.5f). The product of two floats is exact in
    # float64, so one rounding to float32 afterwards matches the fused multiply-add.
    # MPS has no float64: there the two roundings of x * s + 0.5 may differ in the last bit.
    wide = torch.float32 if device.type == "mps" else torch.float64
    pos = (x.to(wide)[:, None, :] * scales.to(wide)[None, :, None] + 0.5)
    pos = pos.to(x.dtype)                                   # [N, L, d]
    corner = torch.floor(pos)
    frac = pos - corner                                     # [N, L, d], in [0, 1)
    corner = corner.to(torch.int64)

    if interpolation == "Nearest":
        bits = torch.zeros(1, d, dtype=torch.int64, device=device)
    else:
        c = torch.arange(1 << d, device=device)
        bits = torch.stack([(c >> k) & 1 for k in range(d)], dim=-1)  # [C, d]
    n_corners = bits.shape[0]

    if interpolation == "Smoothstep":
        w_hi = frac * frac * (3.0 - 2.0 * frac)
    else:
        w_hi = frac
    w_lo = 1.0 - w_hi

    dense = torch.zeros(n, n_levels, n_corners, dtype=torch.int64, device=device)
    hashv = torch.zeros_like(dense)
    weight = torch.ones(n, n_levels, n_corners, dtype=x.dtype, device=device)
    for k in range(d):
        bk = bits[:, k]                                                 # [C]
        ck = (corner[:, :, k, None] + bk) & _MASK32                     # [N, L, C] as uint32
        dense = dense + ck * strides[None, :, k, None]
        hashv = hashv ^ ((ck * PRIMES[k]) & _MASK32)
        if interpolation != "Nearest":
            weight = weight * torch.where(bk.bool(), w_hi[:, :, k, None], w_lo[:, :, k, None])
    index = torch.where(hashed[None, :, None], hashv, dense & _MASK32)
    index = index % sizes[None, :, None] + offsets[None, :-1, None]
    return index, weight


def hash_grid_encode(
    x: torch.Tensor,
    params: torch.Tensor,
    scales: torch.Tensor,
    sizes: torch.Tensor,
    offsets: torch.Tensor,
    hashed: torch.Tensor,
    strides: torch.Tensor,
    n_features: int,
    interpolation: str = "Linear",
) -> torch.Tensor:
    """Encode positions with a multiresolution hash grid.

    Args: as `grid_corners`, plus params [n_entries * F] (all levels' tables, see
    `grid_layout`) and n_features F.

    Returns:
        [N, L * F] features, level-major (level l occupies columns l*F .. l*F+F-1).
    """
    n, n_levels = x.shape[0], scales.shape[0]
    index, weight = grid_corners(x, scales, sizes, offsets, hashed, strides, interpolation)
    feats = params.view(-1, n_features)[index]                          # [N, L, C, F]
    out = (feats * weight[..., None]).sum(dim=2)                        # [N, L, F]
    return out.reshape(n, n_levels * n_features)
