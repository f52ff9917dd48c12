"""Signed distance field: unit-cube positions -> signed distance (hash grid + tiny MLP)."""
from __future__ import annotations

import torch
from torch import nn

from ..config import SdfConfig
from ..encoding import make_encoding
from ..nn.mlp import MLP


class SdfField(nn.Module):
    """[N, 3] positions in [0, 1]^3 -> [N] signed distances (unit-cube units, negative inside)."""

    def __init__(self, cfg: SdfConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.encoding = make_encoding(3, cfg.encoding, backend=cfg.backend, generator=generator)
        self.network = MLP(self.encoding.n_output_dims, 1, cfg.network, generator=generator,
                           precision=cfg.mlp_precision)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.encoding(x))[:, 0]
