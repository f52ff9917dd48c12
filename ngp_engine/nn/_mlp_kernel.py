"""numba kernel of the MLP's backward on the CPU: the ReLU's mask applied in place.

autograd's ReLU backward (`threshold_backward`) reads the incoming gradient and writes a
new [N, width] buffer per hidden layer (about 10 ms of a 125 ms NeRF step for three
[65536, 64] layers, in a profile before the CPU allocator kept freed memory). Zeroing the
gradient's entries in place, in the buffer its matmul has just written, writes only the
zeroed entries and allocates nothing: 107 against 115 ms per step with the allocator's
settings on (`scripts/bench_nerf_step.py --ab-mlp-backward`).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, boundscheck=False)
def relu_mask_(g, h):
    """g[i, j] = 0 where h[i, j] <= 0, in place; g, h [N, W] float32, C-contiguous."""
    n, w = g.shape
    zero = np.float32(0.0)
    for i in prange(n):
        for j in range(w):
            if h[i, j] <= zero:
                g[i, j] = zero


# bfloat16 activations, seen through int16 views (numpy has no bfloat16). As int16, the
# bit patterns 0x8000..0xFF80 (-32768..-128) are -0, the negative finite values and -inf;
# 0xFF81..0xFFFF (-127..-1) are NaNs with the sign bit set (what x86 makes of inf - inf);
# +0 is the all-zero pattern.
_NEGATIVE_INF = -128


@njit(parallel=True, cache=True, boundscheck=False)
def relu_bits_(h):
    """h[i, j] = +0 where the bfloat16 h[i, j] is -0, negative or -inf, in place (NaNs of
    either sign stay, as torch's ReLU leaves them); h [N, W] int16 (a bfloat16 buffer's
    bits), C-contiguous. -0 becomes +0, so `relu_mask_bits_` needs to look for the zero
    pattern alone."""
    n, w = h.shape
    zero = np.int16(0)
    limit = np.int16(_NEGATIVE_INF)
    for i in prange(n):
        for j in range(w):
            if h[i, j] <= limit:
                h[i, j] = zero


@njit(parallel=True, cache=True, boundscheck=False)
def relu_mask_bits_(g, h):
    """g[i, j] = +0 where h[i, j] is +0, in place; g, h [N, W] int16 (bfloat16 bits, h as
    `relu_bits_` left it), C-contiguous."""
    n, w = g.shape
    zero = np.int16(0)
    for i in prange(n):
        for j in range(w):
            if h[i, j] == zero:
                g[i, j] = zero
