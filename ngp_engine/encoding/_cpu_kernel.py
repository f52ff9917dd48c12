"""Compiled CPU kernels of the hash-grid encoding (numba; no C compiler needed).

Same inputs and outputs as `_torch_impl.hash_grid_encode`, float32 only. The
kernels are compiled on first use and cached on disk by numba.

Parallelism (why it is shaped like this):
- forward: blocks of points in parallel; inside a block, level by level, so one
  level's table stays hot in cache while a block walks it.
- backward to the table: levels in parallel. Levels own disjoint slices of the
  table, so threads never write the same entry: no atomics and exactly one
  table-sized gradient buffer, with no per-thread or per-corner copies.
- backward to the positions: blocks of points in parallel (each point owns its row).

Inside a level, chunks of 256 points go in two phases: corner indices and weights of the
whole chunk (`_fill_v`: loops over points on [d, N]-transposed positions with no calls,
which LLVM vectorises), then the loads or scatter-adds, independent of one another so
that many cache misses are in flight at once. Every sum runs in the same order as the
torch reference's (corner 0..2^d-1, point by point), so results do not depend on the
chunking. Measured at 2^18 points, L16 F2 T2^19 on 2 cores (`scripts/bench_encoding.py`):
the vectorised fill and the transposed positions made the forward 4x faster, and the
backward's first touch of its fresh gradient buffer in scatter order (page faults) and a
level-major copy of dy had cost more than the scatter-adds themselves.
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
def _axes(xt, start, m, scale, interp, cb, ub):
    """Lower corners cb [d, m] (int64, masked to 32 bits) and upper-corner weights ub [d, m]
    of points start..start+m-1 of xt [d, N] (positions transposed: contiguous per axis).
    Loops over points with no calls or tuples: LLVM vectorises them."""
    d = xt.shape[0]
    s64 = np.float64(scale)
    for k in range(d):
        xs = xt[k, start:start + m]
        for j in range(m):
            # tiny-cuda-nn's fmaf(scale, x, 0.5f): the float64 product of two floats is exact.
            pos = np.float32(s64 * np.float64(xs[j]) + 0.5)
            fl = np.floor(pos)
            ub[k, j] = pos - fl
            cb[k, j] = np.int64(fl)
        for j in range(m):
            cb[k, j] &= _M32
        if interp == 2:  # Smoothstep
            for j in range(m):
                t = ub[k, j]
                ub[k, j] = t * t * (np.float32(3.0) - np.float32(2.0) * t)


@njit(**_JIT)
def _fill_v(xt, start, m, scale, size, hashed, s1, s2, interp, cb, ub, ib, wb):
    """Corner indices ib [2^d, m] (level-local) and weights wb [2^d, m] of points
    start..start+m-1 at one level; corner c has bit k set when it is the upper neighbour
    along axis k. Corner-major, so every loop runs over points and vectorises."""
    _axes(xt, start, m, scale, interp, cb, ub)
    one = np.float32(1.0)
    if xt.shape[0] == 3:
        if hashed:
            mask = size - 1
            for j in range(m):
                a0 = cb[0, j]
                b0 = (a0 + 1) & _M32
                a1 = (cb[1, j] * _P1) & _M32
                b1 = (((cb[1, j] + 1) & _M32) * _P1) & _M32
                a2 = (cb[2, j] * _P2) & _M32
                b2 = (((cb[2, j] + 1) & _M32) * _P2) & _M32
                ib[0, j] = (a0 ^ a1 ^ a2) & mask
                ib[1, j] = (b0 ^ a1 ^ a2) & mask
                ib[2, j] = (a0 ^ b1 ^ a2) & mask
                ib[3, j] = (b0 ^ b1 ^ a2) & mask
                ib[4, j] = (a0 ^ a1 ^ b2) & mask
                ib[5, j] = (b0 ^ a1 ^ b2) & mask
                ib[6, j] = (a0 ^ b1 ^ b2) & mask
                ib[7, j] = (b0 ^ b1 ^ b2) & mask
        else:
            for j in range(m):
                a0 = cb[0, j]
                b0 = (a0 + 1) & _M32
                a1 = cb[1, j] * s1
                b1 = ((cb[1, j] + 1) & _M32) * s1
                a2 = cb[2, j] * s2
                b2 = ((cb[2, j] + 1) & _M32) * s2
                ib[0, j] = (a0 + a1 + a2) & _M32
                ib[1, j] = (b0 + a1 + a2) & _M32
                ib[2, j] = (a0 + b1 + a2) & _M32
                ib[3, j] = (b0 + b1 + a2) & _M32
                ib[4, j] = (a0 + a1 + b2) & _M32
                ib[5, j] = (b0 + a1 + b2) & _M32
                ib[6, j] = (a0 + b1 + b2) & _M32
                ib[7, j] = (b0 + b1 + b2) & _M32
        for j in range(m):
            u0, u1, u2 = ub[0, j], ub[1, j], ub[2, j]
            v0, v1, v2 = one - u0, one - u1, one - u2
            wb[0, j] = v0 * v1 * v2
            wb[1, j] = u0 * v1 * v2
            wb[2, j] = v0 * u1 * v2
            wb[3, j] = u0 * u1 * v2
            wb[4, j] = v0 * v1 * u2
            wb[5, j] = u0 * v1 * u2
            wb[6, j] = v0 * u1 * u2
            wb[7, j] = u0 * u1 * u2
    else:
        if hashed:
            mask = size - 1
            for j in range(m):
                a0 = cb[0, j]
                b0 = (a0 + 1) & _M32
                a1 = (cb[1, j] * _P1) & _M32
                b1 = (((cb[1, j] + 1) & _M32) * _P1) & _M32
                ib[0, j] = (a0 ^ a1) & mask
                ib[1, j] = (b0 ^ a1) & mask
                ib[2, j] = (a0 ^ b1) & mask
                ib[3, j] = (b0 ^ b1) & mask
        else:
            for j in range(m):
                a0 = cb[0, j]
                b0 = (a0 + 1) & _M32
                a1 = cb[1, j] * s1
                b1 = ((cb[1, j] + 1) & _M32) * s1
                ib[0, j] = (a0 + a1) & _M32
                ib[1, j] = (b0 + a1) & _M32
                ib[2, j] = (a0 + b1) & _M32
                ib[3, j] = (b0 + b1) & _M32
        for j in range(m):
            u0, u1 = ub[0, j], ub[1, j]
            v0, v1 = one - u0, one - u1
            wb[0, j] = v0 * v1
            wb[1, j] = u0 * v1
            wb[2, j] = v0 * u1
            wb[3, j] = u0 * u1
    if not hashed:
        # Dense levels: only corners past the far face (or points outside [0, 1]) wrap; a
        # rare modulo, kept out of the vectorised loops (there is no vector integer division).
        for c in range(ib.shape[0]):
            for j in range(m):
                if ib[c, j] >= size:
                    ib[c, j] %= size


@njit(parallel=True, **_JIT)
def _forward(xt, params, scales, sizes, offsets, hashed, strides, n_features, interp, out):
    d, n = xt.shape
    n_levels = scales.shape[0]
    n_corners = 1 << d
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    for b in prange(n_blocks):
        cb = np.empty((d, _CHUNK), np.int64)
        ub = np.empty((d, _CHUNK), np.float32)
        ib = np.empty((n_corners, _CHUNK), np.int64)
        wb = np.empty((n_corners, _CHUNK), np.float32)
        for level in range(n_levels):
            scale = scales[level]
            size = sizes[level]
            offset = offsets[level]
            lh = hashed[level]
            col = level * n_features
            for start in range(b * _BLOCK, min((b + 1) * _BLOCK, n), _CHUNK):
                stop = min(start + _CHUNK, n)
                m = stop - start
                # Two phases: first all indices of a chunk (vectorised), then tight loops of
                # independent loads, so that many cache misses are in flight at once.
                _fill_v(xt, start, m, scale, size, lh, strides[level, 1], strides[level, d - 1],
                        interp, cb, ub, ib, wb)
                if interp == 1:   # Nearest: the lower corner's entry
                    for j in range(m):
                        e = (offset + ib[0, j]) * n_features
                        for f in range(n_features):
                            out[start + j, col + f] = params[e + f]
                    continue
                if n_features == 2:   # the common case: both features of an entry at once
                    for j in range(m):
                        a0 = np.float32(0.0)
                        a1 = np.float32(0.0)
                        for c in range(n_corners):
                            e = (offset + ib[c, j]) * 2
                            w = wb[c, j]
                            a0 += w * params[e]
                            a1 += w * params[e + 1]
                        out[start + j, col] = a0
                        out[start + j, col + 1] = a1
                    continue
                for j in range(m):
                    for f in range(n_features):
                        acc = np.float32(0.0)
                        for c in range(n_corners):
                            acc += wb[c, j] * params[(offset + ib[c, j]) * n_features + f]
                        out[start + j, col + f] = acc


@njit(parallel=True, **_JIT)
def _backward_params(xt, dy, scales, sizes, offsets, hashed, strides, n_features, interp, grad):
    d, n = xt.shape
    n_levels = scales.shape[0]
    n_corners = 1 << d
    for level in prange(n_levels):
        cb = np.empty((d, _CHUNK), np.int64)
        ub = np.empty((d, _CHUNK), np.float32)
        ib = np.empty((n_corners, _CHUNK), np.int64)
        wb = np.empty((n_corners, _CHUNK), np.float32)
        scale = scales[level]
        size = sizes[level]
        offset = offsets[level]
        lh = hashed[level]
        col = level * n_features
        # Each thread zeroes its own level's slice first, in order: the buffer is fresh
        # memory, and its first touch in random scatter order made the page faults cost more
        # than the scatter itself (48 MB at T = 2^19: 235 ms vs 101 ms for a reused buffer).
        grad[offset * n_features:(offset + size) * n_features] = np.float32(0.0)
        for start in range(0, n, _CHUNK):
            stop = min(start + _CHUNK, n)
            m = stop - start
            _fill_v(xt, start, m, scale, size, lh, strides[level, 1], strides[level, d - 1],
                    interp, cb, ub, ib, wb)
            if interp == 1:   # Nearest: the lower corner's entry
                for j in range(m):
                    e = (offset + ib[0, j]) * n_features
                    for f in range(n_features):
                        grad[e + f] += dy[start + j, col + f]
                continue
            if n_features == 2:
                for j in range(m):
                    g0 = dy[start + j, col]
                    g1 = dy[start + j, col + 1]
                    for c in range(n_corners):
                        e = (offset + ib[c, j]) * 2
                        w = wb[c, j]
                        grad[e] += w * g0
                        grad[e + 1] += w * g1
                continue
            for j in range(m):
                for c in range(n_corners):
                    e = (offset + ib[c, j]) * n_features
                    for f in range(n_features):
                        grad[e + f] += wb[c, j] * dy[start + j, col + f]


@njit(parallel=True, **_JIT)
def _backward_input(xt, dy, params, scales, sizes, offsets, hashed, strides, n_features, interp, dx):
    d, n = xt.shape
    n_levels = scales.shape[0]
    n_corners = 1 << d
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    for b in prange(n_blocks):
        cb = np.empty((d, _CHUNK), np.int64)
        tb = np.empty((d, _CHUNK), np.float32)     # fractional positions (linear weights)
        ib = np.empty((n_corners, _CHUNK), np.int64)
        wb = np.empty((n_corners, _CHUNK), np.float32)
        u = np.empty((d, _CHUNK), np.float32)      # upper-corner weights per axis
        du = np.empty((d, _CHUNK), np.float32)     # and their derivatives
        for start in range(b * _BLOCK, min((b + 1) * _BLOCK, n), _CHUNK):
            m = min(start + _CHUNK, n) - start
            for j in range(m):
                for k in range(d):
                    dx[start + j, k] = np.float32(0.0)
            if interp == 1:  # piecewise constant: zero gradient almost everywhere
                continue
            for level in range(n_levels):
                scale = scales[level]
                col = level * n_features
                # Linear fill: the corner indices, and the fractions t from which u and du come.
                _fill_v(xt, start, m, scale, sizes[level], hashed[level], strides[level, 1],
                        strides[level, d - 1], 0, cb, tb, ib, wb)
                for k in range(d):
                    for j in range(m):
                        t = tb[k, j]
                        if interp == 2:  # Smoothstep
                            u[k, j] = t * t * (np.float32(3.0) - np.float32(2.0) * t)
                            du[k, j] = np.float32(6.0) * t * (np.float32(1.0) - t)
                        else:
                            u[k, j] = t
                            du[k, j] = np.float32(1.0)
                for j in range(m):
                    for c in range(n_corners):
                        base = (offsets[level] + ib[c, j]) * n_features
                        g = np.float32(0.0)  # dL/d(weight of corner c)
                        for f in range(n_features):
                            g += dy[start + j, col + f] * params[base + f]
                        for k in range(d):
                            # d w_c / d x_k = +-scale * du_k * prod_{a != k} (u_a or 1 - u_a)
                            dw = scale * du[k, j]
                            if not ((c >> k) & 1):
                                dw = -dw
                            for a in range(d):
                                if a != k:
                                    dw *= u[a, j] if (c >> a) & 1 else np.float32(1.0) - u[a, j]
                            dx[start + j, k] += g * dw


def _given(buffer: np.ndarray | None, shape: tuple[int, ...], name: str) -> np.ndarray:
    """`buffer` checked (the kernels run without bounds checks), or a fresh array."""
    if buffer is None:
        return np.empty(shape, dtype=np.float32)
    if (buffer.shape != shape or buffer.dtype != np.float32 or not buffer.flags.c_contiguous
            or not buffer.flags.writeable):
        raise ValueError(f"{name}: expected a writeable C-contiguous float32 array of shape "
                         f"{shape}, got {buffer.dtype} {buffer.shape}")
    return buffer


def _transposed(x: np.ndarray) -> np.ndarray:
    """[N, d] -> [d, N] contiguous: the kernels read one axis of many points at a time
    (strided reads of [N, d] kept those loops from vectorising: 5x slower)."""
    return np.ascontiguousarray(x.T)


def forward(x: np.ndarray, params: np.ndarray, tables: tuple, n_features: int,
            interp: int, out: np.ndarray | None = None) -> np.ndarray:
    """[N, d] float32 positions -> [N, L*F] float32 features (into `out` when given: see
    hash_grid._CpuKernelFunction for why the caller allocates)."""
    scales = tables[0]
    out = _given(out, (x.shape[0], scales.shape[0] * n_features), "out")
    _forward(_transposed(x), params, *tables, n_features, interp, out)
    return out


def backward_params(x: np.ndarray, dy: np.ndarray, tables: tuple, n_params: int,
                    n_features: int, interp: int, grad: np.ndarray | None = None) -> np.ndarray:
    """dL/dparams, [n_params] float32, from dL/dy [N, L*F] (row-major, as autograd gives it),
    into `grad` when given (any contents: every entry is overwritten).

    Each thread walks one level over all points and reads its level's columns of dy in
    place: that costs less than a level-major copy of dy (a fresh [L, N, F] buffer: at
    2^18 points the copy and its page faults took longer than the kernel's strided reads).
    """
    grad = _given(grad, (n_params,), "grad")   # zeroed by the kernel, level by level
    # Levels differ in cost (coarse dense levels are cheap): hand them out one at a time.
    with numba.parallel_chunksize(1):
        _backward_params(_transposed(x), dy, *tables, n_features, interp, grad)
    return grad


def backward_input(x: np.ndarray, dy: np.ndarray, params: np.ndarray, tables: tuple,
                   n_features: int, interp: int, dx: np.ndarray | None = None) -> np.ndarray:
    """dL/dx, [N, d] float32, from dL/dy [N, L*F] (into `dx` when given)."""
    dx = _given(dx, x.shape, "dx")
    _backward_input(_transposed(x), dy, params, *tables, n_features, interp, dx)
    return dx

