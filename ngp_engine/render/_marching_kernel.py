"""numba twin of `ray_marching.march_rays_torch` (same float32 arithmetic, same samples).

Two passes over the rays, in parallel: count the samples of each ray, then (after a prefix
sum on the host) write them at their ray's offset. Each ray owns its slice: no atomics.
Where rays x max_samples is small (the training search's windows), one march instead:
each ray's samples to its row of a padded buffer, then packed (`march_padded`,
`pack_samples`): the second march cost more than the copy. (The counting pass is
`march_padded` with nowhere to write.)

Empty space: after a step lands in an empty cell of the finest cascade, the ray keeps
stepping (t <- t + step(t), the same sequence) without looking the grid up until it comes
within a margin of the cell's faces (instant-ngp's advance_to_next_voxel with regular
stepping), or of its block's faces when the whole 8^3 block of cells is empty
(`OccupancyGrid.block_occupancy`); the same in the coarser cascades, whose cells and
blocks are larger. The samples are exactly those of stepping with a lookup every time;
only the lookups are skipped. Counting marches every ray to its end, so this mattered most
there.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_JIT = dict(cache=True, error_model="numpy", boundscheck=False)


@njit(**_JIT)
def _step(t, cone, min_step, max_step):
    return min(max(t * cone, min_step), max_step)


# How far inside a cell's faces (unit-cube units) a point must stay for its lookups to be
# skipped: above the float32 rounding of o + t * d, far below a cell (1/128). The rounding
# grows with the origin's distance (|t * d| ~ |o| where the point is in the unit cube: half
# an ulp of 256 is 1.5e-5), so the margin does too: _MARGIN + _MARGIN_PER_UNIT * (|o| + 1)
# per axis (4x the bound of the two roundings, 2^-24 each of |t * d| and of |p| <= 1).
_MARGIN = 1e-5
_MARGIN_PER_UNIT = 2.0 ** -22


@njit(**_JIT)
def _cell(px, py, pz, n_cascades, res):
    """(cascade, ix, iy, iz) of a unit-cube point as OccupancyGrid.lookup finds it;
    cascade -1 outside the scene box."""
    half = np.float32(0.5)
    ax, ay, az = abs(px - half), abs(py - half), abs(pz - half)
    m = max(ax, max(ay, az))
    k = math.frexp(m)[1] + 1
    k = min(max(k, 0), n_cascades - 1)
    if m > np.float32(2.0 ** (n_cascades - 2)):     # outside the last cascade (scene box)
        return -1, 0, 0, 0
    scale = np.float32(2.0 ** k)
    fres = np.float32(res)
    ix = min(max(int(math.floor(((px - half) / scale + half) * fres)), 0), res - 1)
    iy = min(max(int(math.floor(((py - half) / scale + half) * fres)), 0), res - 1)
    iz = min(max(int(math.floor(((pz - half) / scale + half) * fres)), 0), res - 1)
    return k, ix, iy, iz


@njit(**_JIT)
def _face_t(o, d, i, res, scale):
    """t at which o + t * d comes within the margin of the face it moves towards of cell i
    along one axis of a cascade of edge `scale` (2^k, centred on 0.5) cut into res cells
    per edge (cascade 0: cells [i / res, (i + 1) / res]; its blocks: res = R / 8). The
    margin grows with the cascade too: there _cell's own float32 rounding of the index
    scales with 2^k."""
    margin = (_MARGIN + _MARGIN_PER_UNIT * (abs(o) + 1.0)) * scale
    if d > 0.0:
        return (0.5 + ((i + 1) / res - 0.5) * scale - margin - o) / d
    if d < 0.0:
        return (0.5 + (i / res - 0.5) * scale + margin - o) / d
    return np.inf


@njit(**_JIT)
def _outside(p, i, k, res):
    """Whether cell index i of a point's coordinate p in cascade k > 0 lies outside the
    slab of cascade k - 1's cube along that axis: the index outside [R/4, 3R/4), and the
    coordinate too, as `_cell` measures it (a few ulps below the upper face, the index
    computation rounds up to 3R/4 while the point is inside the slab)."""
    q = res // 4
    return (i < q or i >= res - q) and abs(p - np.float32(0.5)) >= np.float32(math.ldexp(1.0, k - 2))


@njit(**_JIT)
def _next_sample(o, d, r, t, tf, bits, blocks, block_res, n_cascades, res, min_step, max_step,
                 cone):
    """The first t' >= t of the sequence t <- t + step(t) whose point is in an occupied cell
    (t' >= tf: none before the ray's end), stepping over empty cells and empty blocks of
    cells without looking them up."""
    while t < tf:
        px, py, pz = o[r, 0] + t * d[r, 0], o[r, 1] + t * d[r, 1], o[r, 2] + t * d[r, 2]
        k, ix, iy, iz = _cell(px, py, pz, n_cascades, res)
        if k >= 0 and bits[k, (ix * res + iy) * res + iz] != 0:
            return t
        t = t + _step(t, cone, min_step, max_step)
        # No finer cell inside this one to miss: cascade 0 is the finest; in cascade k > 0,
        # a cell lies wholly outside cascade k - 1 (|p - 0.5| < 2^(k-2), whose faces fall on
        # cell faces when R is a multiple of 4, on block faces when the blocks per edge are)
        # when on some axis its index is outside [R/4, 3R/4) and the point is outside that
        # cube's slab (`_outside`). A point of cascade k can be in a cell inside the range:
        # exactly on cascade k - 1's lower faces: no skipping from there.
        if k == 0 or (k > 0 and res % 4 == 0
                      and (_outside(px, ix, k, res) or _outside(py, iy, k, res)
                           or _outside(pz, iz, k, res))):
            # The cell's faces, or its block's when the whole block is empty.
            n, b = res, (res // block_res) if block_res > 0 else 1
            if (block_res > 0 and (k == 0 or block_res % 4 == 0)
                    and blocks[k, ((ix // b) * block_res + iy // b) * block_res + iz // b] == 0):
                n, ix, iy, iz = block_res, ix // b, iy // b, iz // b
            scale = math.ldexp(1.0, k)
            t_skip = min(_face_t(np.float64(o[r, 0]), np.float64(d[r, 0]), ix, n, scale),
                         min(_face_t(np.float64(o[r, 1]), np.float64(d[r, 1]), iy, n, scale),
                             _face_t(np.float64(o[r, 2]), np.float64(d[r, 2]), iz, n, scale)))
            t = _step_until(t, min(t_skip, np.float64(tf)), min_step, max_step, cone)
    return t


@njit(**_JIT)
def _step_until(t, stop, min_step, max_step, cone):
    """`while t < stop: t = t + step(t)`, the same float32 additions. Where t * cone stays
    at most min_step up to `stop` (always with cone 0, the synthetic scenes' setting), every
    step is the constant min(min_step, max_step): adding it without recomputing it leaves
    one addition per step on the loop's dependency chain instead of a product, two clamps
    and the addition (the counting pass marches every empty ray to its end this way)."""
    # For 0 <= t < stop and cone >= 0: fl32(t * cone) <= t * cone * (1 + 2^-24) <=
    # stop * cone * (1 + 2^-20) <= min_step; for t < 0, t * cone <= 0 (t_near >= 0 anyway).
    if np.float64(cone) * stop * (1.0 + 2.0 ** -20) <= np.float64(min_step):
        c = min(min_step, max_step)
        while t < stop:
            t = t + c
        return t
    while t < stop:
        t = t + _step(t, cone, min_step, max_step)
    return t


@njit(parallel=True, **_JIT)
def march_padded(o, d, t_near, t_far, jitter, bits, blocks, block_res, n_cascades, res,
                 min_step, max_step, cone, max_samples, t_pad, dt_pad, counts):
    """Counting and filling in one march: ray r's samples go to t_pad, dt_pad [R,
    max_samples] (the rest of its row left as it was), their number to counts[r]. With
    t_pad and dt_pad of shape [R, 0] it only counts (the first of the two passes)."""
    write = t_pad.shape[1] > 0
    for r in prange(o.shape[0]):
        n = 0
        tf = t_far[r]
        t = t_near[r]
        if t < tf:
            t = t + jitter[r] * _step(t, cone, min_step, max_step)
            while n < max_samples:
                t = _next_sample(o, d, r, t, tf, bits, blocks, block_res, n_cascades, res,
                                 min_step, max_step, cone)
                if t >= tf:
                    break
                dt = _step(t, cone, min_step, max_step)
                if write:
                    t_pad[r, n] = t
                    dt_pad[r, n] = dt
                n += 1
                t = t + dt
        counts[r] = n


@njit(parallel=True, **_JIT)
def pack_samples(t_pad, dt_pad, offsets, t_out, dt_out, ray_out):
    """Row r's first offsets[r + 1] - offsets[r] samples of the padded arrays to the packed
    ones at offsets[r]."""
    for r in prange(t_pad.shape[0]):
        j0 = offsets[r]
        for k in range(offsets[r + 1] - j0):
            t_out[j0 + k] = t_pad[r, k]
            dt_out[j0 + k] = dt_pad[r, k]
            ray_out[j0 + k] = r


@njit(parallel=True, **_JIT)
def fill_samples(o, d, t_near, t_far, jitter, bits, blocks, block_res, n_cascades, res, min_step,
                 max_step, cone, max_samples, offsets, t_out, dt_out, ray_out):
    for r in prange(o.shape[0]):
        j = offsets[r]
        end = offsets[r + 1]
        tf = t_far[r]
        t = t_near[r]
        if t < tf:
            t = t + jitter[r] * _step(t, cone, min_step, max_step)
            while j < end:
                t = _next_sample(o, d, r, t, tf, bits, blocks, block_res, n_cascades, res,
                                 min_step, max_step, cone)
                if t >= tf:
                    break
                dt = _step(t, cone, min_step, max_step)
                t_out[j] = t
                dt_out[j] = dt
                ray_out[j] = r
                j += 1
                t = t + dt
