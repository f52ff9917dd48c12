"""Spherical harmonics and frequency encodings against closed forms."""
from __future__ import annotations

import math

import pytest
import torch

from ngp_engine.config import FrequencyConfig, SphericalHarmonicsConfig
from ngp_engine.encoding import Frequency, SphericalHarmonics, make_encoding


def test_sh_along_z_by_hand():
    # d = (0, 0, 1) -> input (0.5, 0.5, 1.0). Only the zonal terms survive:
    # Y0 = 1/(2 sqrt(pi)) = 0.2820948, Y2 = sqrt(3)/(2 sqrt(pi)) z = 0.4886025,
    # Y6 = sqrt(5)/(4 sqrt(pi)) (3 z^2 - 1) = 0.6307831, Y12 = sqrt(7)/(4 sqrt(pi)) z (5 z^2 - 3) = 0.7463527
    sh = SphericalHarmonics(3, SphericalHarmonicsConfig(degree=4))
    out = sh(torch.tensor([[0.5, 0.5, 1.0]], dtype=torch.float64))[0]
    expected = torch.zeros(16, dtype=torch.float64)
    expected[0], expected[2], expected[6], expected[12] = 0.2820948, 0.4886025, 0.6307831, 0.7463527
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_sh_sign_convention_along_x():
    # d = (1, 0, 0): Y3 = -sqrt(3)/(2 sqrt(pi)) x = -0.4886025 (tiny-cuda-nn's sign), Y8 = 0.5462742
    out = SphericalHarmonics(3, SphericalHarmonicsConfig(degree=3))(torch.tensor([[1.0, 0.5, 0.5]]))[0]
    assert out.shape == (9,)
    assert out[3].item() == pytest.approx(-0.4886025, abs=1e-6)
    assert out[8].item() == pytest.approx(0.5462742, abs=1e-6)


def test_sh_basis_is_orthonormal_on_the_sphere():
    gen = torch.Generator().manual_seed(0)
    d = torch.randn(400_000, 3, generator=gen, dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True)
    y = SphericalHarmonics(3, SphericalHarmonicsConfig(degree=4))(d * 0.5 + 0.5)   # [N, 16]
    gram = 4 * math.pi * (y.T @ y) / y.shape[0]      # Monte-Carlo integral of Y_i Y_j
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=0.03, rtol=0)


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_sh_output_width(degree):
    enc = make_encoding(3, SphericalHarmonicsConfig(degree=degree))
    assert enc.n_output_dims == degree ** 2
    assert enc(torch.rand(5, 3)).shape == (5, degree ** 2)


def test_frequency_layout_by_hand():
    # x = (0.25, 0.5), 2 octaves: per dimension [sin(pi x), cos(pi x), sin(2 pi x), cos(2 pi x)]
    enc = Frequency(2, FrequencyConfig(n_frequencies=2))
    out = enc(torch.tensor([[0.25, 0.5]], dtype=torch.float64))[0]
    r = math.sqrt(0.5)
    expected = torch.tensor([r, r, 1.0, 0.0, 1.0, 0.0, 0.0, -1.0], dtype=torch.float64)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert enc.n_output_dims == 8
