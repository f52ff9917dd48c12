"""Compiled CPU kernels of the hash-grid encoding (numba; no C compiler needed).

Same inputs and outputs as `_torch_impl.hash_grid_encode`, float32 only. The
kernels are compiled on first use and cached on disk by numba.

Parallelism (why it is shaped like this):
- forward: blocks of points in parallel; inside a block, level by level, so one
  level's table stays hot in cache while a block walks it.
- backward to the table: levels in parallel. Levels own disjoint slices of the
  table, so threads never write the same entry: no atomics and exactly one
  table-sized gradient buffer, with no per-thread or per-corner copies.
- backward to the positions: points in parallel (each point owns its row).
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

_BLOCK = 2048  # points per parallel task in the forward pass
_CHUNK = 256   # points whose corner indices are computed before their loads
_M32 = 0xFFFFFFFF
_P1 = 2654435761
_P2 = 805459861
_JIT = dict(cache=True, error_model="numpy", boundscheck=False)


@njit(**_JIT)
def _axis(xk, scale, interp):
    """Lower corner, weight of the upper corner and its derivative along one axis."""
    # tiny-cuda-nn uses fmaf(scale, x, 0.5f): the float64 product of two floats is exact,
    # so one rounding to float32 afterwards gives the fused result.
    pos = np.float32(np.float64(scale) * np.float64(xk) + 0.5)
    fl = np.floor(pos)
    t = np.float32(pos - fl)
    if interp == 2:  # Smoothstep
        return np.int64(fl), t * t * (np.float32(3.0) - np.float32(2.0) * t), \
            np.float32(6.0) * t * (np.float32(1.0) - t)
    return np.int64(fl), t, np.float32(1.0)


@njit(**_JIT)
def _wrap(idx, hashed, size):
    """Index modulo the level size: a mask for hashed levels (their size is T = 2^k), a
    rare modulo for dense ones (only corners past the far face wrap)."""
    if hashed:
        return idx & (size - 1)
    idx &= _M32
    if idx >= size:
        idx %= size
    return idx


@njit(**_JIT)
def _corners2(x, i, scale, size, hashed, s1, interp):
    """Entry indices (level-local) and weights of the 4 corners of point i (2-D)."""
    c0, u0, _ = _axis(x[i, 0], scale, interp)
    c1, u1, _ = _axis(x[i, 1], scale, interp)
    a0 = c0 & _M32
    b0 = (c0 + 1) & _M32
    if hashed:
        a1 = ((c1 & _M32) * _P1) & _M32
        b1 = (((c1 + 1) & _M32) * _P1) & _M32
        idx = (a0 ^ a1, b0 ^ a1, a0 ^ b1, b0 ^ b1)
    else:
        a1 = (c1 & _M32) * s1
        b1 = ((c1 + 1) & _M32) * s1
        idx = (a0 + a1, b0 + a1, a0 + b1, b0 + b1)
    v0 = np.float32(1.0) - u0
    v1 = np.float32(1.0) - u1
    w = (v0 * v1, u0 * v1, v0 * u1, u0 * u1)
    return (_wrap(idx[0], hashed, size), _wrap(idx[1], hashed, size),
            _wrap(idx[2], hashed, size), _wrap(idx[3], hashed, size)), w


@njit(**_JIT)
def _corners3(x, i, scale, size, hashed, s1, s2, interp):
    """Entry indices (level-local) and weights of the 8 corners of point i (3-D);
    corner c has bit k set when it is the upper neighbour along axis k."""
    c0, u0, _ = _axis(x[i, 0], scale, interp)
    c1, u1, _ = _axis(x[i, 1], scale, interp)
    c2, u2, _ = _axis(x[i, 2], scale, interp)
    a0 = c0 & _M32
    b0 = (c0 + 1) & _M32
    if hashed:
        a1 = ((c1 & _M32) * _P1) & _M32
        b1 = (((c1 + 1) & _M32) * _P1) & _M32
        a2 = ((c2 & _M32) * _P2) & _M32
        b2 = (((c2 + 1) & _M32) * _P2) & _M32
        idx = (a0 ^ a1 ^ a2, b0 ^ a1 ^ a2, a0 ^ b1 ^ a2, b0 ^ b1 ^ a2,
               a0 ^ a1 ^ b2, b0 ^ a1 ^ b2, a0 ^ b1 ^ b2, b0 ^ b1 ^ b2)
    else:
        a1 = (c1 & _M32) * s1
        b1 = ((c1 + 1) & _M32) * s1
        a2 = (c2 & _M32) * s2
        b2 = ((c2 + 1) & _M32) * s2
        idx = (a0 + a1 + a2, b0 + a1 + a2, a0 + b1 + a2, b0 + b1 + a2,
               a0 + a1 + b2, b0 + a1 + b2, a0 + b1 + b2, b0 + b1 + b2)
    v0 = np.float32(1.0) - u0
    v1 = np.float32(1.0) - u1
    v2 = np.float32(1.0) - u2
    w = (v0 * v1 * v2, u0 * v1 * v2, v0 * u1 * v2, u0 * u1 * v2,
         v0 * v1 * u2, u0 * v1 * u2, v0 * u1 * u2, u0 * u1 * u2)
    return (_wrap(idx[0], hashed, size), _wrap(idx[1], hashed, size),
            _wrap(idx[2], hashed, size), _wrap(idx[3], hashed, size),
            _wrap(idx[4], hashed, size), _wrap(idx[5], hashed, size),
            _wrap(idx[6], hashed, size), _wrap(idx[7], hashed, size)), w


@njit(**_JIT)
def _nearest(x, i, d, scale, size, hashed, strides_l):
    """Entry index (level-local) of the lower corner: Nearest interpolation."""
    idx = np.int64(0)
    for k in range(d):
        c, _, _ = _axis(x[i, k], scale, 0)
        c &= _M32
        if hashed:
            p = 1 if k == 0 else (_P1 if k == 1 else _P2)
            idx ^= (c * p) & _M32
        else:
            idx += c * strides_l[k]
    return _wrap(idx, hashed, size)


@njit(**_JIT)
def _input_grad(idx, u, du, scale, dy, params, offset, n_features, dx, i, col):
    """Adds dL/dx for one level; u, du: per-axis upper weights and their derivatives."""
    d = len(u)
    for c in range(len(idx)):
        base = (offset + idx[c]) * n_features
        g = np.float32(0.0)  # dL/d(weight of corner c)
        for f in range(n_features):
            g += dy[i, col + f] * params[base + f]
        for k in range(d):
            # d w_c / d x_k = +-scale * du_k * prod_{j != k} (u_j or 1 - u_j)
            dw = scale * du[k]
            if not ((c >> k) & 1):
                dw = -dw
            for j in range(d):
                if j != k:
                    dw *= u[j] if (c >> j) & 1 else np.float32(1.0) - u[j]
            dx[i, k] += g * dw


@njit(**_JIT)
def _fill(x, start, stop, scale, size, lh, s1, s2, interp, ib, wb):
    """Corner indices and weights of points start..stop-1 at one level into ib, wb."""
    if x.shape[1] == 3:
        for i in range(start, stop):
            idx, w = _corners3(x, i, scale, size, lh, s1, s2, interp)
            for c in range(8):
                ib[i - start, c] = idx[c]
                wb[i - start, c] = w[c]
    else:
        for i in range(start, stop):
            idx, w = _corners2(x, i, scale, size, lh, s1, interp)
            for c in range(4):
                ib[i - start, c] = idx[c]
                wb[i - start, c] = w[c]


@njit(parallel=True, **_JIT)
def _forward(x, params, scales, sizes, offsets, hashed, strides, n_features, interp, out):
    n, d = x.shape
    n_levels = scales.shape[0]
    n_corners = 1 << d
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    for b in prange(n_blocks):
        ib = np.empty((_CHUNK, n_corners), np.int64)
        wb = np.empty((_CHUNK, n_corners), np.float32)
        for level in range(n_levels):
            scale = scales[level]
            size = sizes[level]
            offset = offsets[level]
            lh = hashed[level]
            col = level * n_features
            for start in range(b * _BLOCK, min((b + 1) * _BLOCK, n), _CHUNK):
                stop = min(start + _CHUNK, n)
                if interp == 1:
                    for i in range(start, stop):
                        e = (offset + _nearest(x, i, d, scale, size, lh, strides[level])) * n_features
                        for f in range(n_features):
                            out[i, col + f] = params[e + f]
                    continue
                # Two phases: first all indices of a chunk, then a tight loop of independent
                # loads, so that many cache misses are in flight at once.
                _fill(x, start, stop, scale, size, lh, strides[level, 1], strides[level, d - 1],
                      interp, ib, wb)
                for i in range(start, stop):
                    j = i - start
                    for f in range(n_features):
                        acc = np.float32(0.0)
                        for c in range(n_corners):
                            acc += wb[j, c] * params[(offset + ib[j, c]) * n_features + f]
                        out[i, col + f] = acc


@njit(parallel=True, **_JIT)
def _backward_params(x, dy_t, scales, sizes, offsets, hashed, strides, n_features, interp, grad):
    n, d = x.shape
    n_levels = scales.shape[0]
    n_corners = 1 << d
    for level in prange(n_levels):
        ib = np.empty((_CHUNK, n_corners), np.int64)
        wb = np.empty((_CHUNK, n_corners), np.float32)
        scale = scales[level]
        size = sizes[level]
        offset = offsets[level]
        lh = hashed[level]
        for start in range(0, n, _CHUNK):
            stop = min(start + _CHUNK, n)
            if interp == 1:
                for i in range(start, stop):
                    e = (offset + _nearest(x, i, d, scale, size, lh, strides[level])) * n_features
                    for f in range(n_features):
                        grad[e + f] += dy_t[level, i, f]
                continue
            _fill(x, start, stop, scale, size, lh, strides[level, 1], strides[level, d - 1],
                  interp, ib, wb)
            for i in range(start, stop):
                j = i - start
                for c in range(n_corners):
                    e = (offset + ib[j, c]) * n_features
                    for f in range(n_features):
                        grad[e + f] += wb[j, c] * dy_t[level, i, f]


@njit(parallel=True, **_JIT)
def _backward_input(x, dy, params, scales, sizes, offsets, hashed, strides, n_features, interp, dx):
    n, d = x.shape
    n_levels = scales.shape[0]
    for i in prange(n):
        for k in range(d):
            dx[i, k] = np.float32(0.0)
        if interp == 1:  # piecewise constant: zero gradient almost everywhere
            continue
        for level in range(n_levels):
            scale = scales[level]
            size = sizes[level]
            lh = hashed[level]
            col = level * n_features
            _, u0, du0 = _axis(x[i, 0], scale, interp)
            _, u1, du1 = _axis(x[i, 1], scale, interp)
            if d == 3:
                _, u2, du2 = _axis(x[i, 2], scale, interp)
                idx3, _ = _corners3(x, i, scale, size, lh, strides[level, 1], strides[level, 2],
                                    interp)
                _input_grad(idx3, (u0, u1, u2), (du0, du1, du2), scale, dy, params,
                            offsets[level], n_features, dx, i, col)
            else:
                idx2, _ = _corners2(x, i, scale, size, lh, strides[level, 1], interp)
                _input_grad(idx2, (u0, u1), (du0, du1), scale, dy, params, offsets[level],
                            n_features, dx, i, col)


def forward(x: np.ndarray, params: np.ndarray, tables: tuple, n_features: int,
            interp: int) -> np.ndarray:
    """[N, d] float32 positions -> [N, L*F] float32 features."""
    scales = tables[0]
    out = np.empty((x.shape[0], scales.shape[0] * n_features), dtype=np.float32)
    _forward(x, params, *tables, n_features, interp, out)
    return out


def backward_params(x: np.ndarray, dy_t: np.ndarray, tables: tuple, n_params: int,
                    n_features: int, interp: int) -> np.ndarray:
    """dL/dparams, [n_params] float32, from dL/dy given level-major as [L, N, F].

    Level-major because each thread walks one level over all points: reading a column
    of a row-major [N, L*F] array would pull a whole cache line per 4-byte value.
    """
    grad = np.zeros(n_params, dtype=np.float32)
    # Levels differ in cost (coarse dense levels are cheap): hand them out one at a time.
    with numba.parallel_chunksize(1):
        _backward_params(x, dy_t, *tables, n_features, interp, grad)
    return grad


def backward_input(x: np.ndarray, dy: np.ndarray, params: np.ndarray, tables: tuple,
                   n_features: int, interp: int) -> np.ndarray:
    """dL/dx, [N, d] float32, from dL/dy [N, L*F]."""
    dx = np.empty_like(x)
    _backward_input(x, dy, params, *tables, n_features, interp, dx)
    return dx

