"""Per-level geometry of a multiresolution hash grid, exactly as tiny-cuda-nn lays it out.

For level l (0-based), with b = per_level_scale and N_min = base_resolution:

    scale_l      = exp2(l * log2(b)) * N_min - 1          (float32 arithmetic)
    resolution_l = ceil(scale_l) + 1
    size_l       = min(next_multiple_of_8(resolution_l ** d), 2 ** log2_hashmap_size)
    hashed_l     = resolution_l ** d > size_l            (else dense indexing)
    offset_l     = size_0 + ... + size_{l-1}             (in entries; F floats each)

The parameter vector is the concatenation of all levels, entry-major with the F
features of an entry contiguous: param[(offset_l + index) * F + f]. This is
tiny-cuda-nn's layout, so a table moves between backends unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import HashGridConfig

# tiny-cuda-nn's `fast_hash` primes; the first is 1 for memory coherence.
PRIMES = (1, 2654435761, 805459861, 3674653429, 2097192037, 1434869437, 2165219737)
INTERPOLATION_CODES = {"Linear": 0, "Nearest": 1, "Smoothstep": 2}
_MAX_PARAMS = (2**32 - 1) // 2  # tiny-cuda-nn caps a dense level at uint32_max / 2


@dataclass(frozen=True)
class GridLayout:
    """Level tables of a hash grid for `n_input_dims`-D inputs (all arrays have L rows)."""

    n_input_dims: int
    n_features_per_level: int
    scales: np.ndarray        # [L] float32, s_l
    resolutions: np.ndarray   # [L] int64, ceil(s_l) + 1
    sizes: np.ndarray         # [L] int64, entries in the level's table
    offsets: np.ndarray       # [L+1] int64, first entry of each level; offsets[L] = total
    hashed: np.ndarray        # [L] bool, True where the level is indexed by the hash
    strides: np.ndarray       # [L, d] int64, resolution**dim for dense levels (0 if hashed)

    @property
    def n_levels(self) -> int:
        return int(self.scales.shape[0])

    @property
    def n_entries(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_params(self) -> int:
        return self.n_entries * self.n_features_per_level

    @property
    def n_output_dims(self) -> int:
        return self.n_levels * self.n_features_per_level

    @classmethod
    def from_config(cls, cfg: HashGridConfig, n_input_dims: int) -> "GridLayout":
        if not 1 <= n_input_dims <= len(PRIMES):
            raise ValueError(f"hash grid input dims must be 1..{len(PRIMES)}, got {n_input_dims}")
        d = n_input_dims
        # tiny-cuda-nn receives per_level_scale as float32 and takes std::log2 of it in float.
        log2_pls = np.float32(np.log2(np.float32(cfg.resolved_per_level_scale)))
        table_cap = 1 << cfg.log2_hashmap_size
        scales, resolutions, sizes, hashed, strides = [], [], [], [], []
        for level in range(cfg.n_levels):
            scale = np.float32(np.exp2(np.float32(level) * log2_pls)) \
                * np.float32(cfg.base_resolution) - np.float32(1.0)
            res = int(np.ceil(scale)) + 1
            dense_entries = res ** d
            size = min(dense_entries, _MAX_PARAMS)
            size = (size + 7) // 8 * 8
            size = min(size, table_cap)
            is_hashed = dense_entries > size
            scales.append(scale)
            resolutions.append(res)
            sizes.append(size)
            hashed.append(is_hashed)
            strides.append([0] * d if is_hashed else [res ** k for k in range(d)])
        sizes_arr = np.asarray(sizes, dtype=np.int64)
        offsets = np.zeros(cfg.n_levels + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(sizes_arr)
        return cls(
            n_input_dims=d,
            n_features_per_level=cfg.n_features_per_level,
            scales=np.asarray(scales, dtype=np.float32),
            resolutions=np.asarray(resolutions, dtype=np.int64),
            sizes=sizes_arr,
            offsets=offsets,
            hashed=np.asarray(hashed, dtype=bool),
            strides=np.asarray(strides, dtype=np.int64).reshape(cfg.n_levels, d),
        )
