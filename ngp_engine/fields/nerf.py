"""instant-ngp's NeRF network: hash-encoded position -> density and features; features and the
SH-encoded view direction -> colour.

    position (unit cube) --box--> [0,1]^3 --HashGrid--> [32] --density MLP (1 x 64)--> [16]
        density = exp(h[0])                                                       |
    direction --SH degree 4--> [16] ---------------------------concat-------------+--> colour MLP
        (2 x 64, sigmoid) --> RGB
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import NerfConfig, replace
from ..encoding import HashGrid, SphericalHarmonics
from ..nn.mlp import MLP

N_DENSITY_OUTPUTS = 16
MAX_LOG_DENSITY = 15.0  # exp(15) ~ 3e6: opaque within any step; keeps exp finite


class _TruncExp(torch.autograd.Function):
    """exp with its input clamped at MAX_LOG_DENSITY, gradient of the clamped exp
    (torch-ngp's trunc_exp): a huge log density cannot overflow to inf."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = torch.exp(x.clamp(max=MAX_LOG_DENSITY))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return dy * y


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    return _TruncExp.apply(x)


class NerfField(nn.Module):
    """Density and colour at unit-cube positions.

    `box_min`, `box_size` (unit cube) map positions to the encoding's [0, 1]^3: the scene box.
    """

    def __init__(self, cfg: NerfConfig, box_min: float, box_size: float, aabb_scale: float,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        assert cfg.encoding.max_resolution is not None
        enc_cfg = replace(cfg.encoding, max_resolution=int(round(cfg.encoding.max_resolution * aabb_scale)))
        self.box_min = float(box_min)
        self.box_size = float(box_size)
        self.encoding = HashGrid(3, enc_cfg, backend=cfg.backend, generator=generator)
        self.density_net = MLP(self.encoding.n_output_dims, N_DENSITY_OUTPUTS, cfg.density_network,
                               generator=generator, precision=cfg.mlp_precision)
        self.direction_encoding = SphericalHarmonics(3, cfg.direction_encoding)
        self.rgb_net = MLP(N_DENSITY_OUTPUTS + self.direction_encoding.n_output_dims, 3,
                           cfg.rgb_network, generator=generator, precision=cfg.mlp_precision)

    def _box(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.box_min) / self.box_size).clamp(0.0, 1.0)

    def _features(self, x: torch.Tensor, encoded: torch.Tensor | None = None) -> torch.Tensor:
        """[N, 3] unit-cube positions -> [N, 16] density-network outputs (`encoded`: the
        hash encoding at x, from `encode`, so that it is not computed again)."""
        return self.density_net(self.encoding(self._box(x), features=encoded))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3] -> [N, L * F] the hash encoding (for `density_of` and `forward(encoded=)`)."""
        return self.encoding(self._box(x))

    def density_of(self, encoded: torch.Tensor) -> torch.Tensor:
        """Density [N] from the hash encoding [N, L * F] of the positions."""
        return trunc_exp(self.density_net(encoded)[:, 0])

    def density(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3] -> [N] density (per unit-cube length)."""
        return trunc_exp(self._features(x)[:, 0])

    def forward(self, x: torch.Tensor, d: torch.Tensor, ray_idx: torch.Tensor | None = None,
                encoded: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, 3] positions -> density [N], rgb [N, 3]; d [N, 3] unit directions, or with
        ray_idx [N] the directions of the rays [R, 3] and the ray of each position;
        `encoded` [N, L * F]: the hash encoding at x already computed (`encode`).

        Per ray, the direction is encoded once and its 16 features are gathered for the
        ray's samples: cheaper than some 40 elementwise ops per sample (and the same values).
        """
        h = self._features(x, encoded)
        dir_features = self.direction_encoding(d * 0.5 + 0.5)
        if ray_idx is not None:
            dir_features = dir_features.index_select(0, ray_idx)
        rgb = self.rgb_net(torch.cat([h, dir_features], dim=-1))
        return trunc_exp(h[:, 0]), rgb

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
