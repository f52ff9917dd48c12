"""Sphere tracing an SDF from a pinhole camera: what a preview of an SDF shows.

Rays start where they enter the mesh's box (outside it the field was never trained) and
step by the field's distance (times 0.9: a learned field is only close to a true distance)
until it is below a ten-thousandth of the unit cube or the ray leaves the box.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..formats.camera import Camera
from ..formats.unit_cube import UnitCube
from .passes import PASSES, check_passes
from .rays import camera_rays, pixel_grid, ray_box_intersect

HIT = 1e-4            # unit-cube units
RELAX = 0.9
NORMAL_EPS = 1.0 / 1024


@torch.no_grad()
def sphere_trace(field: Callable[[torch.Tensor], torch.Tensor], transform: UnitCube,
                 box_min: np.ndarray, box_max: np.ndarray, camera: Camera, device: torch.device,
                 passes: tuple[str, ...] = PASSES, max_steps: int = 128,
                 chunk: int = 1 << 14) -> dict[str, np.ndarray]:
    """Render `field` (unit-cube points [N, 3] -> signed distances [N]) seen by a world
    camera.

    Returns float32 arrays: depth [H, W] z-depth in world units (0 where nothing is hit),
    opacity [H, W] (1 on the surface, else 0), normals [H, W, 3] world unit normals (0 off
    the surface), rgb [H, W, 3] grey shaded by a light at the camera on white.
    """
    check_passes(passes)
    width, height = camera.w, camera.h
    fx, fy, cx, cy = camera.intrinsics
    c2w_t = torch.as_tensor(camera.c2w, dtype=torch.float32, device=device)
    u, v = pixel_grid(width, height, device)
    n = u.numel()
    full = lambda a: torch.full((n,), float(a), device=device)  # noqa: E731
    o_world, d = camera_rays(c2w_t.expand(n, 4, 4), full(fx), full(fy), full(cx), full(cy), u, v)
    # Uniform scale: directions are the same in unit coordinates, lengths scale by world_to_unit.
    o = o_world * transform.world_to_unit + torch.tensor(transform.offset, dtype=torch.float32,
                                                          device=device)
    lo = torch.tensor(box_min, dtype=torch.float32, device=device)
    hi = torch.tensor(box_max, dtype=torch.float32, device=device)
    t, t_far = ray_box_intersect(o, d, lo, hi)
    hit = torch.zeros(n, dtype=torch.bool, device=device)
    normals = torch.zeros(n, 3, device=device)
    for start in range(0, n, chunk):           # bounded memory for any image size
        rays = torch.arange(start, min(start + chunk, n), device=device)
        _trace(field, o, d, t, t_far, hit, normals, rays, max_steps)
    cos_axis = -(d @ c2w_t[:3, 2])                        # ray length -> z-depth
    depth = torch.where(hit, t / transform.world_to_unit * cos_axis, torch.zeros_like(t))
    shade = 0.8 * (0.25 + 0.75 * (-(normals * d).sum(1)).clamp_min(0.0))
    rgb = torch.where(hit[:, None], shade[:, None].expand(n, 3), torch.ones(n, 3, device=device))
    out = {"rgb": rgb.reshape(height, width, 3), "depth": depth.reshape(height, width),
           "opacity": hit.float().reshape(height, width), "normals": normals.reshape(height, width, 3)}
    return {k: out[k].cpu().numpy().astype(np.float32) for k in passes}


def _trace(field: Callable[[torch.Tensor], torch.Tensor], o: torch.Tensor, d: torch.Tensor,
           t: torch.Tensor, t_far: torch.Tensor, hit: torch.Tensor, normals: torch.Tensor,
           rays: torch.Tensor, max_steps: int) -> None:
    """Sphere trace the rays with indices `rays` [R], updating t [N], hit [N] and normals
    [N, 3] in place (o, d [N, 3] unit-cube origins and unit directions)."""
    live = rays[t[rays] < t_far[rays]]
    for _ in range(max_steps):
        if live.numel() == 0:
            break
        s = field(o[live] + t[live, None] * d[live])
        done = s.abs() < HIT
        hit[live[done]] = True
        t[live] += RELAX * s * (~done)
        live = live[~done & (t[live] < t_far[live])]
    idx = rays[hit[rays]]
    if idx.numel():
        p = o[idx] + t[idx, None] * d[idx]
        grad = torch.stack([field(p + NORMAL_EPS * e) - field(p - NORMAL_EPS * e)
                            for e in torch.eye(3, device=o.device)], dim=1)      # [h, 3]
        normals[idx] = grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
