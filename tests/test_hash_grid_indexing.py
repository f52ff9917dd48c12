"""Hand-worked hash-grid indexing: level scales, dense and hashed corner indices, weights.

The grid used throughout (2-D, F=1, N_min=2, b=2, T=2^4=16):
    level 0: s = 2^0 * 2 - 1 = 1, res = ceil(1) + 1 = 2, res^2 = 4  -> size next8(4) = 8,  dense
    level 1: s = 2^1 * 2 - 1 = 3, res = 4,                  res^2 = 16 -> size min(16, 16) = 16, dense
    level 2: s = 2^2 * 2 - 1 = 7, res = 8,                  res^2 = 64 -> size min(64, 16) = 16, hashed
    offsets 0, 8, 24; 40 entries in all.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ngp_engine.config import HashGridConfig
from ngp_engine.encoding._torch_impl import grid_corners
from ngp_engine.encoding.grid_layout import GridLayout
from ngp_engine.encoding.hash_grid import HashGrid

SMALL = HashGridConfig(n_levels=3, n_features_per_level=1, log2_hashmap_size=4,
                       base_resolution=2, per_level_scale=2.0)


def test_small_layout_by_hand():
    lay = GridLayout.from_config(SMALL, 2)
    assert lay.scales.tolist() == [1.0, 3.0, 7.0]
    assert lay.resolutions.tolist() == [2, 4, 8]
    assert lay.sizes.tolist() == [8, 16, 16]
    assert lay.offsets.tolist() == [0, 8, 24, 40]
    assert lay.hashed.tolist() == [False, False, True]
    assert lay.strides.tolist() == [[1, 2], [1, 4], [0, 0]]
    assert lay.n_params == 40


def test_nerf_layout():
    """instant-ngp's NeRF grid: L=16, F=2, T=2^19, N_min=16, N_max=2048, 3-D.
    b = exp(ln(2048/16) / 15) = 2^(7/15); the finest scale is 16 * 2^7 - 1 = 2047."""
    cfg = HashGridConfig(n_levels=16, log2_hashmap_size=19, base_resolution=16, max_resolution=2048)
    assert cfg.resolved_per_level_scale == pytest.approx(2 ** (7 / 15), rel=1e-12)
    lay = GridLayout.from_config(cfg, 3)
    assert lay.scales[0] == 15.0                      # 16 - 1
    assert lay.scales[15] == pytest.approx(2047.0, abs=2e-3)
    # level 0: 16^3 = 4096 entries (dense); level 1: s = 16 * 2^(7/15) - 1 = 21.11, res 23,
    # 23^3 = 12167 -> next multiple of 8 = 12168 (dense).
    assert lay.resolutions[:2].tolist() == [16, 23]
    assert lay.sizes[:2].tolist() == [4096, 12168]
    # Dense while res^3 <= 2^19: level 4 has res 59 (205379 -> 205384 entries); level 5 has
    # res 81, 81^3 = 531441 > 524288, so it and all finer levels are hashed at T = 2^19.
    assert lay.hashed.tolist() == [False] * 5 + [True] * 11
    assert lay.sizes[4] == 205384 and lay.sizes[5:].tolist() == [1 << 19] * 11
    # 2 * (4096 + 12168 + 29792 + 79512 + 205384 + 11 * 524288): instant-ngp's NeRF count.
    assert lay.n_params == 12196240


def _corners(x, interpolation="Linear"):
    g = HashGrid(2, SMALL, backend="torch")
    return grid_corners(torch.tensor(x, dtype=torch.float32), g.scales, g.sizes, g.offsets,
                        g.hashed, g.strides, interpolation)


def test_corner_indices_and_weights_by_hand():
    index, weight = _corners([[0.3, 0.6]])
    # Corner order: (lo, lo), (hi, lo), (lo, hi), (hi, hi) along (x, y).
    # level 0: p = 1 * (0.3, 0.6) + 0.5 = (0.8, 1.1) -> corner (0, 1), frac (0.8, 0.1)
    #   dense index x + 2 y: (0,1) -> 2, (1,1) -> 3, (0,2) -> 4, (1,2) -> 5
    #   weights (.2*.9, .8*.9, .2*.1, .8*.1) = (.18, .72, .02, .08)
    assert index[0, 0].tolist() == [2, 3, 4, 5]
    np.testing.assert_allclose(weight[0, 0], [0.18, 0.72, 0.02, 0.08], atol=1e-6)
    # level 1: p = 3 * (0.3, 0.6) + 0.5 = (1.4, 2.3) -> corner (1, 2), frac (0.4, 0.3)
    #   dense index x + 4 y + offset 8: (1,2) -> 17, (2,2) -> 18, (1,3) -> 21, (2,3) -> 22
    #   weights (.6*.7, .4*.7, .6*.3, .4*.3) = (.42, .28, .18, .12)
    assert index[0, 1].tolist() == [17, 18, 21, 22]
    np.testing.assert_allclose(weight[0, 1], [0.42, 0.28, 0.18, 0.12], atol=1e-6)
    # level 2 (hashed): p = 7 * (0.3, 0.6) + 0.5 = (2.6, 4.7) -> corner (2, 4), frac (.6, .7)
    #   hash = x * 1 xor y * 2654435761 (mod 2^32), then mod 16. 2654435761 = 0x9E3779B1 is
    #   1 mod 16, so mod 16 the hash is x xor y: (2,4) -> 6, (3,4) -> 7, (2,5) -> 7, (3,5) -> 6,
    #   plus offset 24 -> 30, 31, 31, 30 (two pairs of corners collide).
    #   weights (.4*.3, .6*.3, .4*.7, .6*.7) = (.12, .18, .28, .42)
    assert index[0, 2].tolist() == [30, 31, 31, 30]
    np.testing.assert_allclose(weight[0, 2], [0.12, 0.18, 0.28, 0.42], atol=1e-6)


def test_dense_wraps_past_far_face():
    # x = 1 at level 0: p = 1 * 1 + 0.5 = 1.5 -> corner 1, the upper neighbour 2 is past the
    # last vertex (res 2). Dense index of (2, 0) = 2, of (2, 1) = 2 + 2 = 4: no wrap needed
    # below the level size 8; tiny-cuda-nn reads those entries as they are (no clamping).
    index, _ = _corners([[1.0, 0.0]])
    assert index[0, 0].tolist() == [1, 2, 3, 4]


def test_hashed_index_of_a_3d_corner_by_hand():
    """Corner (5, 7, 9) at a hashed level with T = 2^19:
    7 * 2654435761 = 18581050327 = 4 * 2^32 + 1401181143
    9 *  805459861 =  7249138749 = 1 * 2^32 + 2954171453
    5 xor 1401181143 xor 2954171453 = 3817949167 = 0xE39147EF; mod 2^19 = 83951."""
    cfg = HashGridConfig(n_levels=1, log2_hashmap_size=19, base_resolution=2048, per_level_scale=1.0)
    g = HashGrid(3, cfg, backend="torch")
    assert g.layout.hashed.tolist() == [True] and g.layout.scales[0] == 2047.0
    # Choose x so that p = 2047 x + 0.5 has floor (5, 7, 9): x = (c + 0.25) / 2047.
    x = (torch.tensor([[5.25, 7.25, 9.25]], dtype=torch.float64) / 2047).float()
    index, _ = grid_corners(x, g.scales, g.sizes, g.offsets, g.hashed, g.strides, "Linear")
    assert index[0, 0, 0].item() == 83951


def test_smoothstep_and_nearest_weights():
    # level 0 frac (0.8, 0.1): smoothstep(t) = t^2 (3 - 2t): s(.8) = .896, s(.1) = .028
    _, w = _corners([[0.3, 0.6]], "Smoothstep")
    np.testing.assert_allclose(w[0, 0], [0.104 * 0.972, 0.896 * 0.972, 0.104 * 0.028, 0.896 * 0.028],
                               atol=1e-6)
    # Nearest: the single lower corner with weight 1 (p = (0.8, 1.1) -> (0, 1) -> index 2).
    idx, w = _corners([[0.3, 0.6]], "Nearest")
    assert idx[0, 0].tolist() == [2] and w[0, 0].tolist() == [1.0]


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_encoding_values_by_hand(backend):
    """With table entry e holding the value e, each level outputs sum(w_c * e_c):
    level 0: .18*2 + .72*3 + .02*4 + .08*5 = 3.0
    level 1: .42*17 + .28*18 + .18*21 + .12*22 = 18.6
    level 2: .12*30 + .18*31 + .28*31 + .42*30 = 30.46"""
    g = HashGrid(2, SMALL, backend=backend)
    with torch.no_grad():
        g.params.copy_(torch.arange(40, dtype=torch.float32))
    out = g(torch.tensor([[0.3, 0.6]]))
    np.testing.assert_allclose(out[0].detach().numpy(), [3.0, 18.6, 30.46], rtol=1e-5)


def test_init_range_and_layout_size():
    g = HashGrid(3, HashGridConfig(n_levels=4, log2_hashmap_size=12, base_resolution=8,
                                   per_level_scale=2.0))
    p = g.params.detach()
    assert p.numel() == g.layout.n_params
    assert p.abs().max() <= 1e-4 and p.std() > 3e-5   # U(-1e-4, 1e-4): std 5.8e-5
