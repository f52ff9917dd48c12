"""Input encodings: hash grid (with backends), spherical harmonics, frequency."""
from __future__ import annotations

import torch
from torch import nn

from ..config import EncodingConfig, FrequencyConfig, HashGridConfig, SphericalHarmonicsConfig
from .frequency import Frequency
from .hash_grid import HashGrid
from .spherical_harmonics import SphericalHarmonics

__all__ = ["Frequency", "HashGrid", "SphericalHarmonics", "make_encoding"]


def make_encoding(n_input_dims: int, cfg: EncodingConfig, backend: str = "auto",
                  generator: torch.Generator | None = None) -> nn.Module:
    """Build the encoding module a config describes; every module has `n_output_dims`."""
    if isinstance(cfg, HashGridConfig):
        return HashGrid(n_input_dims, cfg, backend=backend, generator=generator)
    if isinstance(cfg, FrequencyConfig):
        return Frequency(n_input_dims, cfg)
    if isinstance(cfg, SphericalHarmonicsConfig):
        return SphericalHarmonics(n_input_dims, cfg)
    raise TypeError(f"unknown encoding config {type(cfg).__name__}")
