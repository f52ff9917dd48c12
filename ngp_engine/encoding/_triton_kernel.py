"""Triton kernels of the hash-grid encoding: CUDA and ROCm GPUs, compiled at run time.

Same inputs and outputs as `_torch_impl.hash_grid_encode` (float32 positions and table, the
flat tiny-cuda-nn parameter layout of `grid_layout`), for 2-D and 3-D inputs, every level
count, feature width F in {1, 2, 4, 8} and table size. Under `TRITON_INTERPRET=1` the same
kernels run on CPU tensors (Triton's interpreter): that is how the tests check them on
machines without a GPU.

Shape of the work (why):
- forward: a 2-D launch, (blocks of BLOCK points) x (levels). One program gathers the
  2^d corners of BLOCK points in one level; programs of one level run close in time, so
  that level's table slice is what the L2 cache holds.
- backward to the table: the same launch, scattering w * dL/dy with `atomic_add`. Atomics
  rather than a sort-free segmented reduction because the scatter goes to 2^d * L entries
  per point at random: sorting 2^d * L * N keys every step costs more than the contended
  atomics, which only collide on the coarse (dense, small) levels. tiny-cuda-nn makes the
  same choice. Float atomics make the summation order, hence the last bits, vary from run
  to run (as in tiny-cuda-nn). They are relaxed (`sem="relaxed"`, CUDA's plain atomicAdd,
  tiny-cuda-nn's): nothing reads the gradient before the launch ends, so the default
  acquire-release ordering would only add fences.
- backward to the positions: one program per block of points walks all levels and owns its
  points' rows of dL/dx: no atomics.

The position of a point in a level is fma(scale, x, 0.5) in float32, as tiny-cuda-nn
computes it; the kernels evaluate it as a float64 product rounded once, which gives the
fused result exactly on every device and in the interpreter (the reference does the same).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .backends import TRITON_LAUNCH_OPTIONS, triton_interpreted
from .grid_layout import PRIMES

# Points per program: a multiple of the warp size on a GPU. In the interpreter every
# operation of a program costs a fixed Python overhead plus numpy over the whole block, so
# there one program takes the whole batch (up to INTERPRETER_BLOCK points).
INTERPRETED = triton_interpreted()
BLOCK = 128
INTERPRETER_BLOCK = 1 << 16
SUPPORTED_FEATURES = (1, 2, 4, 8)
_P1 = PRIMES[1]
_P2 = PRIMES[2]
_M32 = 0xFFFFFFFF


@triton.jit
def _axis(x_ptr, rows, mask, k: tl.constexpr, D: tl.constexpr, scale, INTERP: tl.constexpr):
    """Lower corner [BLOCK] int64, weight of the upper corner and its derivative by
    the position along axis k ([BLOCK] float32 each)."""
    xk = tl.load(x_ptr + rows * D + k, mask=mask, other=0.0)
    pos = (xk.to(tl.float64) * scale.to(tl.float64) + 0.5).to(tl.float32)
    fl = tl.floor(pos)
    t = pos - fl
    if INTERP == 2:  # Smoothstep
        w = t * t * (3.0 - 2.0 * t)
        dw = 6.0 * t * (1.0 - t)
    else:
        w = t
        dw = tl.full(t.shape, 1.0, tl.float32)
    return fl.to(tl.int64), w, dw


@triton.jit
def _corner_index(c0, c1, c2, b0: tl.constexpr, b1: tl.constexpr, b2: tl.constexpr,
                  D: tl.constexpr, hashed, size, s1, s2):
    """Level-local entry of the corner (b0, b1, b2) of lower corners c0, c1, c2 ([BLOCK]):
    tiny-cuda-nn's `fast_hash` on hashed levels, dense strides otherwise, modulo the size."""
    k0 = (c0 + b0) & 0xFFFFFFFF
    k1 = (c1 + b1) & 0xFFFFFFFF
    # int64 products may overflow; their low 32 bits, all the hash keeps, are exact.
    h = k0 ^ ((k1 * 2654435761) & 0xFFFFFFFF)
    dense = k0 + k1 * s1
    if D == 3:
        k2 = (c2 + b2) & 0xFFFFFFFF
        h = h ^ ((k2 * 805459861) & 0xFFFFFFFF)
        dense = dense + k2 * s2
    idx = tl.where(hashed, h, dense & 0xFFFFFFFF)
    return idx % size


@triton.jit
def _level(scales_ptr, sizes_ptr, offsets_ptr, hashed_ptr, strides_ptr, level, D: tl.constexpr):
    """The scalars of one level: scale, size, first entry, hashed?, dense strides."""
    scale = tl.load(scales_ptr + level)
    size = tl.load(sizes_ptr + level)
    base = tl.load(offsets_ptr + level)
    hashed = tl.load(hashed_ptr + level) != 0
    s1 = tl.load(strides_ptr + level * D + 1)
    s2 = s1
    if D == 3:
        s2 = tl.load(strides_ptr + level * D + 2)
    return scale, size, base, hashed, s1, s2


@triton.jit
def _weight(w0, w1, w2, b0: tl.constexpr, b1: tl.constexpr, b2: tl.constexpr, D: tl.constexpr):
    """Interpolation weight of corner (b0, b1, b2) from the upper-corner weights."""
    w = (w0 if b0 else 1.0 - w0) * (w1 if b1 else 1.0 - w1)
    if D == 3:
        w = w * (w2 if b2 else 1.0 - w2)
    return w


@triton.jit
def _table_kernel(x_ptr, params_ptr, out_ptr, dy_ptr, grad_ptr,
                    scales_ptr, sizes_ptr, offsets_ptr, hashed_ptr, strides_ptr,
                    n, n_levels, D: tl.constexpr, F: tl.constexpr, INTERP: tl.constexpr,
                    BACKWARD: tl.constexpr, BLOCK_N: tl.constexpr):
    """Forward (BACKWARD False: out[n, l*F + f]) or the table gradient (BACKWARD True:
    grad[(base + idx) * F + f] += w * dy[n, l*F + f]) of one block of points in one level."""
    level = tl.program_id(1)
    rows = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    mask = rows < n
    feat = tl.arange(0, F)
    scale, size, base, hashed, s1, s2 = _level(scales_ptr, sizes_ptr, offsets_ptr, hashed_ptr,
                                               strides_ptr, level, D)
    c0, w0, _ = _axis(x_ptr, rows, mask, 0, D, scale, INTERP)
    c1, w1, _ = _axis(x_ptr, rows, mask, 1, D, scale, INTERP)
    c2, w2 = c1, w1
    if D == 3:
        c2, w2, _ = _axis(x_ptr, rows, mask, 2, D, scale, INTERP)
    col = rows[:, None] * (n_levels * F) + level * F + feat[None, :]     # [BLOCK, F]
    mask2 = mask[:, None]
    if BACKWARD:
        dy = tl.load(dy_ptr + col, mask=mask2, other=0.0)
        # Adding zero changes nothing: no atomics for it (the padding rows of a GPU training
        # step's fixed-size buffers all sit on one point and would contend for its entries).
        mask2 = mask2 & (dy != 0.0)
    else:
        acc = tl.zeros((BLOCK_N, F), tl.float32)
    if INTERP == 1:  # Nearest: the lower corner of pos = s * x + 0.5 is the nearest vertex
        idx = _corner_index(c0, c1, c2, 0, 0, 0, D, hashed, size, s1, s2) + base
        if BACKWARD:
            tl.atomic_add(grad_ptr + idx[:, None] * F + feat[None, :], dy, mask=mask2,
                          sem="relaxed")
        else:
            acc += tl.load(params_ptr + idx[:, None] * F + feat[None, :], mask=mask2, other=0.0)
    else:
        for c in tl.static_range(1 << D):
            b0 = c & 1
            b1 = (c >> 1) & 1
            b2 = (c >> 2) & 1
            idx = _corner_index(c0, c1, c2, b0, b1, b2, D, hashed, size, s1, s2) + base
            w = _weight(w0, w1, w2, b0, b1, b2, D)
            if BACKWARD:
                tl.atomic_add(grad_ptr + idx[:, None] * F + feat[None, :], w[:, None] * dy,
                              mask=mask2, sem="relaxed")
            else:
                acc += w[:, None] * tl.load(params_ptr + idx[:, None] * F + feat[None, :],
                                            mask=mask2, other=0.0)
    if not BACKWARD:
        tl.store(out_ptr + col, acc, mask=mask2)


@triton.jit
def _input_grad_kernel(x_ptr, params_ptr, dy_ptr, dx_ptr,
                       scales_ptr, sizes_ptr, offsets_ptr, hashed_ptr, strides_ptr,
                       n, n_levels, D: tl.constexpr, F: tl.constexpr, INTERP: tl.constexpr,
                       BLOCK_N: tl.constexpr):
    """dx[n, k] = sum over levels, corners, features of dy * param * dw/dx_k, where
    dw/dx_k = scale * w'(t_k) * (+1 upper / -1 lower corner) * the other axes' weights."""
    rows = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    mask = rows < n
    mask2 = mask[:, None]
    feat = tl.arange(0, F)
    g0 = tl.zeros((BLOCK_N,), tl.float32)
    g1 = tl.zeros((BLOCK_N,), tl.float32)
    g2 = tl.zeros((BLOCK_N,), tl.float32)
    for level in range(n_levels):
        scale, size, base, hashed, s1, s2 = _level(scales_ptr, sizes_ptr, offsets_ptr,
                                                   hashed_ptr, strides_ptr, level, D)
        c0, w0, d0 = _axis(x_ptr, rows, mask, 0, D, scale, INTERP)
        c1, w1, d1 = _axis(x_ptr, rows, mask, 1, D, scale, INTERP)
        c2, w2, d2 = c1, w1, d1
        if D == 3:
            c2, w2, d2 = _axis(x_ptr, rows, mask, 2, D, scale, INTERP)
        dy = tl.load(dy_ptr + rows[:, None] * (n_levels * F) + level * F + feat[None, :],
                     mask=mask2, other=0.0)
        for c in tl.static_range(1 << D):
            b0 = c & 1
            b1 = (c >> 1) & 1
            b2 = (c >> 2) & 1
            idx = _corner_index(c0, c1, c2, b0, b1, b2, D, hashed, size, s1, s2) + base
            v = tl.sum(dy * tl.load(params_ptr + idx[:, None] * F + feat[None, :],
                                    mask=mask2, other=0.0), axis=1)           # [BLOCK]
            # d/dw of the upper weight is +1, of the lower -1; chain rule through t = s*x+.5.
            e0 = (w1 if b1 else 1.0 - w1)
            e1 = (w0 if b0 else 1.0 - w0)
            if D == 3:
                e2 = (w2 if b2 else 1.0 - w2)
                g2 += v * (d2 if b2 else -d2) * e0 * e1 * scale
                e0 = e0 * e2
                e1 = e1 * e2
            g0 += v * (d0 if b0 else -d0) * e0 * scale
            g1 += v * (d1 if b1 else -d1) * e1 * scale
    tl.store(dx_ptr + rows * D, g0, mask=mask)
    tl.store(dx_ptr + rows * D + 1, g1, mask=mask)
    if D == 3:
        tl.store(dx_ptr + rows * D + 2, g2, mask=mask)


Tables = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def block_size(n: int) -> int:
    """Points per program for a batch of n."""
    return min(INTERPRETER_BLOCK, triton.next_power_of_2(max(n, 1))) if INTERPRETED else BLOCK


def _launch_args(x: torch.Tensor, tables: Tables) -> tuple:
    """The tables as the kernels read them (HashGrid._tables makes them so once)."""
    scales, sizes, offsets, hashed, strides = tables
    assert scales.dtype == torch.float32 and hashed.dtype == torch.int32, "see HashGrid._tables"
    return scales, sizes, offsets, hashed, strides


def _table_pass(x: torch.Tensor, params: torch.Tensor, dy: torch.Tensor | None, tables: Tables,
                n_features: int, interp: int, result: torch.Tensor) -> torch.Tensor:
    """One launch of `_table_kernel` over (blocks of points) x (levels): the forward into
    `result` [N, L * F] when dy is None, else the table gradient accumulated into `result`
    [n_params] (which must start at zero)."""
    n, d = x.shape
    n_levels = tables[0].shape[0]
    if n:
        block = block_size(n)
        grid = (triton.cdiv(n, block), n_levels)
        backward = dy is not None
        _table_kernel[grid](x, params, result, dy if backward else result, result,
                            *_launch_args(x, tables), n, n_levels, D=d, F=n_features,
                            INTERP=interp, BACKWARD=backward, BLOCK_N=block,
                            **TRITON_LAUNCH_OPTIONS)
    return result


def forward(x: torch.Tensor, params: torch.Tensor, tables: Tables, n_features: int,
            interp: int) -> torch.Tensor:
    """x [N, d] float32, params [n_params] float32 -> [N, L * F] float32 (x's device)."""
    out = torch.empty(x.shape[0], tables[0].shape[0] * n_features, dtype=torch.float32,
                      device=x.device)
    return _table_pass(x, params, None, tables, n_features, interp, out)


def backward_params(x: torch.Tensor, dy: torch.Tensor, tables: Tables, n_params: int,
                    n_features: int, interp: int) -> torch.Tensor:
    """dL/dparams [n_params] from dL/dy [N, L * F] (one table-sized buffer, atomics)."""
    grad = torch.zeros(n_params, dtype=torch.float32, device=x.device)
    return _table_pass(x, grad, dy, tables, n_features, interp, grad)


def backward_input(x: torch.Tensor, dy: torch.Tensor, params: torch.Tensor, tables: Tables,
                   n_features: int, interp: int) -> torch.Tensor:
    """dL/dx [N, d] from dL/dy [N, L * F] (zero for Nearest: the weights are constant)."""
    n, d = x.shape
    n_levels = tables[0].shape[0]
    dx = torch.zeros(n, d, dtype=torch.float32, device=x.device)
    if n and interp != 1:
        block = block_size(n)
        grid = (triton.cdiv(n, block),)
        _input_grad_kernel[grid](x, params, dy, dx, *_launch_args(x, tables), n, n_levels,
                                 D=d, F=n_features, INTERP=interp, BLOCK_N=block,
                                 **TRITON_LAUNCH_OPTIONS)
    return dx
