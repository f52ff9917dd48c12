"""numba twin of `ray_marching.march_rays_torch` (same float32 arithmetic, same samples).

Two passes over the rays, in parallel: count the samples of each ray, then (after a prefix
sum on the host) write them at their ray's offset. Each ray owns its slice: no atomics.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

_JIT = dict(cache=True, error_model="numpy", boundscheck=False)


@njit(**_JIT)
def _step(t, cone, min_step, max_step):
    return min(max(t * cone, min_step), max_step)


@njit(**_JIT)
def _occupied(px, py, pz, bits, n_cascades, res):
    """Occupancy bit at a unit-cube point (as OccupancyGrid.lookup)."""
    half = np.float32(0.5)
    ax, ay, az = abs(px - half), abs(py - half), abs(pz - half)
    m = max(ax, max(ay, az))
    k = math.frexp(m)[1] + 1
    k = min(max(k, 0), n_cascades - 1)
    if m > np.float32(2.0 ** (n_cascades - 2)):     # outside the last cascade (scene box)
        return False
    scale = np.float32(2.0 ** k)
    fres = np.float32(res)
    ix = min(max(int(math.floor(((px - half) / scale + half) * fres)), 0), res - 1)
    iy = min(max(int(math.floor(((py - half) / scale + half) * fres)), 0), res - 1)
    iz = min(max(int(math.floor(((pz - half) / scale + half) * fres)), 0), res - 1)
    return bits[k, (ix * res + iy) * res + iz] != 0


@njit(parallel=True, **_JIT)
def count_samples(o, d, t_near, t_far, jitter, bits, n_cascades, res, min_step, max_step, cone,
                  max_samples, counts):
    for r in prange(o.shape[0]):
        n = 0
        tf = t_far[r]
        t = t_near[r]
        if t < tf:
            t = t + jitter[r] * _step(t, cone, min_step, max_step)
            while t < tf and n < max_samples:
                dt = _step(t, cone, min_step, max_step)
                if _occupied(o[r, 0] + t * d[r, 0], o[r, 1] + t * d[r, 1], o[r, 2] + t * d[r, 2],
                             bits, n_cascades, res):
                    n += 1
                t = t + dt
        counts[r] = n


@njit(parallel=True, **_JIT)
def fill_samples(o, d, t_near, t_far, jitter, bits, n_cascades, res, min_step, max_step, cone,
                 max_samples, offsets, t_out, dt_out, ray_out):
    for r in prange(o.shape[0]):
        j = offsets[r]
        end = offsets[r + 1]
        tf = t_far[r]
        t = t_near[r]
        if t < tf:
            t = t + jitter[r] * _step(t, cone, min_step, max_step)
            while t < tf and j < end:
                dt = _step(t, cone, min_step, max_step)
                if _occupied(o[r, 0] + t * d[r, 0], o[r, 1] + t * d[r, 1], o[r, 2] + t * d[r, 2],
                             bits, n_cascades, res):
                    t_out[j] = t
                    dt_out[j] = dt
                    ray_out[j] = r
                    j += 1
                t = t + dt
