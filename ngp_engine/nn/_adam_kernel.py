"""numba twin of `optim._adam_update` for encoding tables on the CPU.

One parallel pass over the flat table that skips entries whose gradient is exactly zero:
replaces the torch path's nonzero() + gathers + scatters over a multi-million-entry table
(the dominant optimiser cost for hash grids on a CPU).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, error_model="numpy", boundscheck=False)
def sparse_adam(w, g, m, v, steps, lr, beta1, beta2, eps):
    """In place over float32 w, g, m, v [P] and int32 steps [P]; entries with g == 0 untouched."""
    one = np.float32(1.0)
    b1, b2 = np.float32(beta1), np.float32(beta2)
    # 1 - beta rounded once from float64, as the torch path's `alpha=1 - beta1` and
    # `value=1 - beta2` (1 - float32(0.99) is 9.3e-7 relative off float32(0.01)).
    c1, c2 = np.float32(1.0 - beta1), np.float32(1.0 - beta2)
    lr32, eps32 = np.float32(lr), np.float32(eps)
    n = w.shape[0]
    block = 1 << 16
    for b in prange((n + block - 1) // block):
        for i in range(b * block, min(n, (b + 1) * block)):
            gi = g[i]
            if gi == 0.0:
                continue
            mi = b1 * m[i] + c1 * gi
            vi = b2 * v[i] + c2 * gi * gi
            s = steps[i] + 1
            sf = np.float32(s)
            step_lr = lr32 * np.sqrt(one - b2 ** sf) / (one - b1 ** sf)
            w[i] = w[i] - step_lr / (np.sqrt(vi) + eps32) * mi
            m[i] = mi
            v[i] = vi
            steps[i] = s
