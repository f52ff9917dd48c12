"""numba twin of `optim._adam_update` for encoding tables on the CPU.

One parallel pass over the flat table that skips entries whose gradient is exactly zero:
replaces the torch path (several passes over the whole multi-million-entry table, masked
where the gradient is zero; the dominant optimiser cost for hash grids on a CPU).

The bias-corrected step size depends only on an entry's step count, so it comes from a
table indexed by the count (`step_sizes`, the same float32 arithmetic) instead of two
powers per touched entry: those powers were most of the update's time (a NeRF step at
T = 2^16 touches about a million entries).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, error_model="numpy")
def _step_size(s, lr32, b1, b2):
    """lr * sqrt(1 - beta2^s) / (1 - beta1^s) in float32, as the torch path computes it."""
    one = np.float32(1.0)
    sf = np.float32(s)
    return lr32 * np.sqrt(one - b2 ** sf) / (one - b1 ** sf)


@njit(cache=True, error_model="numpy")
def step_sizes(n, lr, beta1, beta2):
    """[n] float32: entry s is the step size of an entry's s-th update (entry 0 unused)."""
    out = np.zeros(n, np.float32)
    lr32, b1, b2 = np.float32(lr), np.float32(beta1), np.float32(beta2)
    for s in range(1, n):
        out[s] = _step_size(s, lr32, b1, b2)
    return out


@njit(parallel=True, cache=True, error_model="numpy", boundscheck=False)
def sparse_adam(w, g, m, v, steps, sizes, lr, beta1, beta2, eps):
    """In place over float32 w, g, m, v [P] and int32 steps [P]; entries with g == 0 untouched.
    sizes: `step_sizes(K, lr, beta1, beta2)`; counts >= K compute their step size."""
    one = np.float32(1.0)
    b1, b2 = np.float32(beta1), np.float32(beta2)
    # 1 - beta rounded once from float64, as the torch path's `alpha=1 - beta1` and
    # `value=1 - beta2` (1 - float32(0.99) is 9.3e-7 relative off float32(0.01)).
    c1, c2 = np.float32(1.0 - beta1), np.float32(1.0 - beta2)
    lr32, eps32 = np.float32(lr), np.float32(eps)
    n = w.shape[0]
    n_sizes = sizes.shape[0]
    block = 1 << 16
    for b in prange((n + block - 1) // block):
        for i in range(b * block, min(n, (b + 1) * block)):
            gi = g[i]
            if gi == 0.0:
                continue
            mi = b1 * m[i] + c1 * gi
            vi = b2 * v[i] + c2 * gi * gi
            s = steps[i] + 1
            step_lr = sizes[s] if s < n_sizes else _step_size(s, lr32, b1, b2)
            w[i] = w[i] - step_lr / (np.sqrt(vi) + eps32) * mi
            m[i] = mi
            v[i] = vi
            steps[i] = s
