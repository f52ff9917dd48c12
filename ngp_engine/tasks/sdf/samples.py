"""instant-ngp's SDF training samples: per batch 4/8 exactly on the surface (distance 0),
3/8 near it (surface points moved by logistic noise of standard deviation bounding radius /
1024 per axis) and 1/8
uniform in the mesh's box, all in unit-cube coordinates.

Surface points are drawn fresh every step on the device (area-weighted triangles, uniform
barycentrics). Near and uniform points need a true signed distance, which libigl computes on
the CPU; doing that every step would cost more than the step, so a pool of them is computed
once (`SdfConfig.ground_truth_pool`, seeded: the same pool on resume) and each step draws
from it at random.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from ...config import SdfConfig
from ...data.mesh import SdfMesh
from ...mesh.distance import face_areas, sample_surface
from ...mesh.signed_distance import MeshDistance

BOUNDING_RADIUS = math.sqrt(3.0) / 2.0
"""instant-ngp's m_bounding_radius for SDFs: half the unit cube's diagonal."""
NEAR_SHARE = 3 / 4
"""Share of the pool near the surface (3/8 of a batch against 1/8 uniform)."""


def logistic(rng: np.random.Generator, shape: tuple[int, ...], stddev: float) -> np.ndarray:
    """Logistic noise float64 with mean 0 and standard deviation `stddev` (inverse CDF of a
    uniform; the logistic scale is stddev * sqrt(3) / pi, as tiny-cuda-nn's generator)."""
    u = rng.uniform(1e-7, 1.0 - 1e-7, shape)
    return stddev * math.sqrt(3.0) / math.pi * np.log(u / (1.0 - u))


class SdfSamples:
    """Draws training batches for one mesh on `device`."""

    def __init__(self, mesh: SdfMesh, cfg: SdfConfig, device: torch.device) -> None:
        self.device = device
        self.stddev = BOUNDING_RADIUS / 1024.0 * cfg.surface_offset_scale
        self.distance = MeshDistance(mesh.unit_vertices, mesh.faces)
        v = mesh.unit_vertices
        tri = v[mesh.faces]                                                     # [F, 3, 3]
        areas = face_areas(v, mesh.faces)                                       # [F]
        self._triangles = torch.from_numpy(tri).float().to(device)              # [F, 3, 3]
        # float64 where the device has it: with a million faces float32 steps are too coarse.
        cdf_dtype = torch.float32 if device.type == "mps" else torch.float64
        self._cdf = torch.from_numpy(np.cumsum(areas) / areas.sum()).to(device, cdf_dtype)  # [F]
        self.box_min, self.box_max = mesh.box_min.copy(), mesh.box_max.copy()

        t0 = time.perf_counter()
        rng = np.random.default_rng(cfg.seed + 7)
        n_near = int(cfg.ground_truth_pool * NEAR_SHARE)
        n_uniform = cfg.ground_truth_pool - n_near
        near = sample_surface(v, mesh.faces, n_near, seed=cfg.seed + 8) \
            + logistic(rng, (n_near, 3), self.stddev)
        uniform = rng.uniform(self.box_min, self.box_max, (n_uniform, 3))
        self.near_points = torch.from_numpy(near).float().to(device)                  # [Pn, 3]
        self.near_distances = torch.from_numpy(self.distance.signed(near)).float().to(device)
        self.uniform_points = torch.from_numpy(uniform).float().to(device)            # [Pu, 3]
        self.uniform_distances = torch.from_numpy(self.distance.signed(uniform)).float().to(device)
        self.ground_truth_seconds = time.perf_counter() - t0

    def surface(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n points float32 [n, 3] uniform over the surface area."""
        r = torch.rand(n, 3, device=self.device, generator=generator)
        face = torch.searchsorted(self._cdf, r[:, 0].to(self._cdf.dtype).contiguous()
                                  ).clamp_(max=len(self._cdf) - 1)
        u, w = r[:, 1], r[:, 2]
        flip = u + w > 1.0
        u = torch.where(flip, 1.0 - u, u)
        w = torch.where(flip, 1.0 - w, w)
        t = self._triangles[face]                                            # [n, 3, 3]
        return t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + w[:, None] * (t[:, 2] - t[:, 0])

    def batch(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions float32 [n, 3] (unit cube) and true signed distances float32 [n]:
        4/8 surface, 3/8 near, the rest uniform."""
        n_surface, n_near = n // 8 * 4, n // 8 * 3
        n_uniform = n - n_surface - n_near
        near = torch.randint(len(self.near_points), (n_near,), device=self.device, generator=generator)
        uni = torch.randint(len(self.uniform_points), (n_uniform,), device=self.device, generator=generator)
        points = torch.cat([self.surface(n_surface, generator), self.near_points[near],
                            self.uniform_points[uni]])
        dist = torch.cat([torch.zeros(n_surface, device=self.device), self.near_distances[near],
                          self.uniform_distances[uni]])
        return points, dist
