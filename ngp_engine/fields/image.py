"""Image field: (x, y) in [0, 1]^2 -> colour (hash grid, or another encoding, + MLP).

x runs along the width, y down the rows (see tasks/image.py for the pixel convention)."""
from __future__ import annotations

import torch
from torch import nn

from ..config import ImageFitConfig
from ..encoding import make_encoding
from ..nn.mlp import MLP


class ImageField(nn.Module):
    """Encoding followed by an MLP: [N, 2] positions -> [N, C] colours."""

    def __init__(self, cfg: ImageFitConfig, n_channels: int, generator: torch.Generator | None = None):
        super().__init__()
        self.encoding = make_encoding(2, cfg.encoding, backend=cfg.backend, generator=generator)
        self.network = MLP(self.encoding.n_output_dims, n_channels, cfg.network, generator=generator,
                           precision=cfg.mlp_precision)

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        return self.network(self.encoding(xy))
