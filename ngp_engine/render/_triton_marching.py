"""Triton twin of `ray_marching.march_rays_torch` for CUDA and ROCm GPUs (same float32
arithmetic, same samples; under TRITON_INTERPRET=1 it runs on CPU tensors, for the tests).

The torch reference advances all rays one step per loop iteration and asks the device
after each iteration whether any ray is still marching: hundreds of host round trips per
batch. Here one program marches BLOCK rays to their end on the device, in two launches as
the numba kernel: count the samples of each ray, then (after a prefix sum on the device)
write them at their ray's offset. Each ray owns its slice of the output: no atomics. The
one host read is the total sample count, which sizes the output buffers; with a capacity
(`ray_marching.march_rays`) there is none: the rays that do not fit are not written.

The marcher is compiled without fused multiply-adds (`MARCH_LAUNCH_OPTIONS`, unlike the
other kernels): `o + t * d` and `t + jitter * dt` are rounded after the product and again
after the sum, as numba, numpy (the interpreter) and torch's separate elementwise ops round
them. Fused, a sample whose position falls within an ulp of an occupancy-cell boundary could
land in the neighbouring cell and the GPU's samples would differ from the numba marcher's,
the CPU path's and the training pass's own positions (`renderer._positions`, torch).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..encoding.backends import TRITON_LAUNCH_OPTIONS, triton_interpreted
from .ray_marching import fit_offsets

INTERPRETED = triton_interpreted()
MARCH_LAUNCH_OPTIONS = {**TRITON_LAUNCH_OPTIONS, "enable_fp_fusion": False}   # see above
BLOCK = 128                      # rays per program on a GPU
INTERPRETER_BLOCK = 1 << 14      # in the interpreter a program's cost is mostly per operation


@triton.jit
def _step(t, cone, min_step, max_step):
    """instant-ngp's calc_dt: clamp(t * cone, min_step, max_step)."""
    return tl.minimum(tl.maximum(t * cone, min_step), max_step)


@triton.jit
def _occupied(px, py, pz, bits_ptr, n_cascades, half_box, res, live):
    """Occupancy bit at unit-cube points [BLOCK] (as OccupancyGrid.lookup), False where
    not `live` or outside the scene box."""
    ax = tl.abs(px - 0.5)
    ay = tl.abs(py - 0.5)
    az = tl.abs(pz - 0.5)
    m = tl.maximum(ax, tl.maximum(ay, az))
    # frexp(m)'s exponent from the float's bits: m = 1.f * 2^(e - 127) = 0.1f * 2^(e - 126).
    e = ((m.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 126
    k = tl.minimum(tl.maximum(e + 1, 0), n_cascades - 1)
    inside = m <= half_box                                        # the last cascade's half-edge
    # 2^-k exactly: multiplying by it is the reference's division by 2^k, exactly, where a
    # GPU's float32 division may be an approximate one.
    inv_scale = ((127 - k) << 23).to(tl.float32, bitcast=True)
    fres = res.to(tl.float32)
    ix = tl.minimum(tl.maximum(tl.floor(((px - 0.5) * inv_scale + 0.5) * fres).to(tl.int32), 0), res - 1)
    iy = tl.minimum(tl.maximum(tl.floor(((py - 0.5) * inv_scale + 0.5) * fres).to(tl.int32), 0), res - 1)
    iz = tl.minimum(tl.maximum(tl.floor(((pz - 0.5) * inv_scale + 0.5) * fres).to(tl.int32), 0), res - 1)
    cell = k.to(tl.int64) * res * res * res + (ix.to(tl.int64) * res + iy) * res + iz
    look = live & inside
    bit = tl.load(bits_ptr + cell, mask=look, other=0)
    return look & (bit != 0)


# Integer arguments equal to 1 would otherwise be compiled in as constants (one cascade,
# one sample): keep them plain arguments so that one compiled kernel serves every grid.
@triton.jit(do_not_specialize=["n_cascades", "max_samples", "n_rays"])
def _march_kernel(o_ptr, d_ptr, t_near_ptr, t_far_ptr, jitter_ptr, bits_ptr, n_cascades, half_box, res,
                  min_step, max_step, cone, max_samples, n_rays,
                  counts_ptr, offsets_ptr, t_out_ptr, dt_out_ptr, ray_out_ptr,
                  WRITE: tl.constexpr, BLOCK_R: tl.constexpr):
    """Without WRITE: counts [R] of kept samples per ray. With WRITE: the samples, ray r's
    at offsets[r] onwards (t, dt, ray index), for the rays whose counts[r] is not 0 (with
    a capacity, the rays that do not fit have theirs set to 0: not marched again)."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    mask = rows < n_rays
    ox = tl.load(o_ptr + rows * 3, mask=mask, other=0.0)
    oy = tl.load(o_ptr + rows * 3 + 1, mask=mask, other=0.0)
    oz = tl.load(o_ptr + rows * 3 + 2, mask=mask, other=0.0)
    dx = tl.load(d_ptr + rows * 3, mask=mask, other=0.0)
    dy = tl.load(d_ptr + rows * 3 + 1, mask=mask, other=0.0)
    dz = tl.load(d_ptr + rows * 3 + 2, mask=mask, other=0.0)
    tf = tl.load(t_far_ptr + rows, mask=mask, other=0.0)
    t = tl.load(t_near_ptr + rows, mask=mask, other=0.0)
    active = mask & (t < tf)
    t = tl.where(active, t + tl.load(jitter_ptr + rows, mask=mask, other=0.0) * _step(t, cone, min_step, max_step), t)
    n = tl.zeros([BLOCK_R], dtype=tl.int64)
    base = tl.zeros([BLOCK_R], dtype=tl.int64)
    if WRITE:
        base = tl.load(offsets_ptr + rows, mask=mask, other=0)
        active = active & (tl.load(counts_ptr + rows, mask=mask, other=0) > 0)
    active = active & (t < tf) & (n < max_samples)
    going = tl.max(active.to(tl.int32), axis=0)
    while going > 0:
        dt = _step(t, cone, min_step, max_step)
        keep = _occupied(ox + t * dx, oy + t * dy, oz + t * dz, bits_ptr, n_cascades, half_box, res,
                         active)
        if WRITE:
            slot = base + n
            tl.store(t_out_ptr + slot, t, mask=keep)
            tl.store(dt_out_ptr + slot, dt, mask=keep)
            tl.store(ray_out_ptr + slot, rows.to(tl.int64), mask=keep)
        n = n + keep.to(tl.int64)
        t = tl.where(active, t + dt, t)
        active = active & (t < tf) & (n < max_samples)
        going = tl.max(active.to(tl.int32), axis=0)
    if not WRITE:
        tl.store(counts_ptr + rows, n, mask=mask)


def block_size(n: int) -> int:
    return min(INTERPRETER_BLOCK, triton.next_power_of_2(max(n, 1))) if INTERPRETED else BLOCK


def march(origins: torch.Tensor, dirs: torch.Tensor, t_near: torch.Tensor, t_far: torch.Tensor,
          jitter: torch.Tensor, occupied: torch.Tensor, n_cascades: int, resolution: int,
          min_step: float, max_step: float, cone_angle: float, max_samples: int,
          capacity: int | None = None
          ) -> tuple[torch.Tensor, ...]:
    """origins, dirs [R, 3], t_near, t_far, jitter [R] float32 and occupied [C, res^3] bool,
    all on one device -> ray_idx [S] int64, t [S], dt [S] float32, offsets [R + 1] int64 and,
    with a capacity (S = capacity, padded as `ray_marching.fit_capacity`), fits [R] bool and
    the samples before the cut [] int64 (else None, None)."""
    f32 = torch.float32
    o, d = origins.to(f32).contiguous(), dirs.to(f32).contiguous()
    tn, tf, jt = (v.to(f32).contiguous() for v in (t_near, t_far, jitter))
    bits = occupied.contiguous().view(torch.uint8)
    n, dev = o.shape[0], o.device
    offsets = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    if n == 0:
        size = capacity or 0
        empty = torch.zeros(size, dtype=f32, device=dev)
        if capacity is None:
            return torch.zeros(0, dtype=torch.int64, device=dev), empty, empty.clone(), offsets, None, None
        return (torch.zeros(size, dtype=torch.int64, device=dev), empty, empty.clone(), offsets,
                torch.zeros(0, dtype=torch.bool, device=dev), offsets[-1].clone())
    block = block_size(n)
    grid = (triton.cdiv(n, block),)
    scalars = (n_cascades, 2.0 ** (n_cascades - 2), resolution, float(min_step), float(max_step), float(cone_angle),
               int(max_samples), n)
    counts = torch.empty(n, dtype=torch.int64, device=dev)
    _march_kernel[grid](o, d, tn, tf, jt, bits, *scalars, counts, offsets, counts, counts, counts,
                        WRITE=False, BLOCK_R=block, **MARCH_LAUNCH_OPTIONS)
    torch.cumsum(counts, 0, out=offsets[1:])
    fits = demand = None
    if capacity is None:
        total = int(offsets[-1])                 # the one host read: sizes the outputs
        t_out = torch.empty(total, dtype=f32, device=dev)
        dt_out = torch.empty(total, dtype=f32, device=dev)
        ray_out = torch.empty(total, dtype=torch.int64, device=dev)
    else:
        # The rays that fit are a prefix (offsets grow): the others own nothing and are not
        # marched again; padding t = dt = 0 on the last ray.
        demand = offsets[-1].clone()
        fits, fitted = fit_offsets(offsets, capacity)
        offsets.copy_(fitted)
        counts.mul_(fits)
        total = capacity
        t_out = torch.zeros(total, dtype=f32, device=dev)
        dt_out = torch.zeros(total, dtype=f32, device=dev)
        ray_out = torch.full((total,), n - 1, dtype=torch.int64, device=dev)
    if total:
        _march_kernel[grid](o, d, tn, tf, jt, bits, *scalars, counts, offsets, t_out, dt_out,
                            ray_out, WRITE=True, BLOCK_R=block, **MARCH_LAUNCH_OPTIONS)
    return ray_out, t_out, dt_out, offsets, fits, demand
