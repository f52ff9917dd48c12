"""NeRF's positional (frequency) encoding, as tiny-cuda-nn's `Frequency`.

For each input dimension j and octave i: sin(2^i * pi * x_j), cos(2^i * pi * x_j),
laid out per dimension as [sin f0, cos f0, sin f1, cos f1, ...]. No identity term.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..config import FrequencyConfig


class Frequency(nn.Module):
    """[N, d] -> [N, d * n_frequencies * 2]."""

    def __init__(self, n_input_dims: int, cfg: FrequencyConfig) -> None:
        super().__init__()
        self.n_input_dims = n_input_dims
        self.n_frequencies = cfg.n_frequencies
        self.n_output_dims = n_input_dims * cfg.n_frequencies * 2
        freqs = (2.0 ** torch.arange(cfg.n_frequencies, dtype=torch.float32)) * math.pi
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        phase = x[:, :, None] * self.freqs.to(x.dtype)                   # [N, d, n_freq]
        # cos(a) = sin(a + pi/2): tiny-cuda-nn writes both as a phase-shifted sine.
        out = torch.stack([torch.sin(phase), torch.cos(phase)], dim=-1)  # [N, d, n_freq, 2]
        return out.reshape(x.shape[0], self.n_output_dims)
