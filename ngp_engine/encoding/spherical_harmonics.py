"""Real spherical-harmonics direction encoding, as tiny-cuda-nn's `SphericalHarmonics`.

tiny-cuda-nn expects directions mapped into [0, 1]^3 (d * 0.5 + 0.5) and maps them back
with x = 2 * v - 1; we take the same [0, 1]^3 input so configs and inputs carry over.
`degree` is the number of bands: degree**2 outputs (degree 4 -> 16, instant-ngp's NeRF).
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import SphericalHarmonicsConfig


def spherical_harmonics(v: torch.Tensor, degree: int) -> torch.Tensor:
    """v: [N, 3] directions in [0, 1]^3 (unit vectors mapped by d * 0.5 + 0.5)
    -> [N, degree**2] SH basis values, tiny-cuda-nn's order and signs."""
    if not 1 <= degree <= 4:
        raise ValueError(f"degree must be 1..4, got {degree}")
    x, y, z = (v * 2.0 - 1.0).unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]                     # 1/(2 sqrt(pi))
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        xy, xz, yz, x2, y2, z2 = x * y, x * z, y * z, x * x, y * y, z * z
        out += [1.0925484305920792 * xy, -1.0925484305920792 * yz,
                0.94617469575755997 * z2 - 0.31539156525251999, -1.0925484305920792 * xz,
                0.54627421529603959 * x2 - 0.54627421529603959 * y2]
    if degree > 3:
        out += [0.59004358992664352 * y * (-3.0 * x2 + y2), 2.8906114426405538 * xy * z,
                0.45704579946446572 * y * (1.0 - 5.0 * z2), 0.3731763325901154 * z * (5.0 * z2 - 3.0),
                0.45704579946446572 * x * (1.0 - 5.0 * z2), 1.4453057213202769 * z * (x2 - y2),
                0.59004358992664352 * x * (-x2 + 3.0 * y2)]
    return torch.stack(out, dim=-1)


class SphericalHarmonics(nn.Module):
    """Module form of `spherical_harmonics` (no parameters)."""

    def __init__(self, n_input_dims: int, cfg: SphericalHarmonicsConfig) -> None:
        super().__init__()
        if n_input_dims != 3:
            raise ValueError(f"spherical harmonics encode 3-D directions, got {n_input_dims}-D inputs")
        self.degree = cfg.degree
        self.n_output_dims = cfg.degree ** 2

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return spherical_harmonics(v, self.degree)
