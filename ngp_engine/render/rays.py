"""Camera rays and ray/box intersection (pure functions, any torch device).

Convention (NeRF/Blender, as `ngp_engine.formats.camera`): the camera looks down -Z, +Y up,
+X right; pixel (column i, row j) has its centre at (i + 0.5, j + 0.5) from the image's
top-left corner. The ray through image point (u, v) has camera-space direction
((u - cx) / fx, -(v - cy) / fy, -1), so `Camera.project` inverts it exactly. These are the
batched torch twins of `Camera.rays` (many cameras, on the device, in the unit cube).
"""
from __future__ import annotations

import torch


def camera_rays(c2w: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, cx: torch.Tensor,
                cy: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through image points.

    c2w [R, 4, 4] (or [R, 3, 4]) camera-to-world per ray, fx/fy/cx/cy [R], u/v [R] image
    coordinates in pixels (u right, v down). Returns origins [R, 3] and unit directions [R, 3]
    in the frame of c2w.
    """
    d_cam = torch.stack([(u - cx) / fx, -(v - cy) / fy, -torch.ones_like(u)], dim=-1)   # [R, 3]
    rot = c2w[:, :3, :3]
    d = torch.einsum("rij,rj->ri", rot, d_cam)
    d = d / torch.linalg.norm(d, dim=-1, keepdim=True)
    return c2w[:, :3, 3].clone(), d


def pixel_grid(width: int, height: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres of a W x H image in row-major order: u [H*W], v [H*W] (float32)."""
    vs, us = torch.meshgrid(torch.arange(height, device=device, dtype=torch.float32) + 0.5,
                            torch.arange(width, device=device, dtype=torch.float32) + 0.5,
                            indexing="ij")
    return us.reshape(-1), vs.reshape(-1)


def ray_box_intersect(origins: torch.Tensor, dirs: torch.Tensor, box_min: torch.Tensor,
                      box_max: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab test: where each ray is inside the axis-aligned box.

    origins, dirs [R, 3]; box_min, box_max [3]. Returns t_near, t_far [R] with t_near >= 0
    (a ray starting inside the box starts at 0); a ray that misses has t_near >= t_far.
    Directions need not be unit length; t is in units of |dir|.
    """
    # 1/0 = inf is what the slab test wants for axis-parallel rays; nudge exact zeros so
    # that 0 * inf never appears (a ray parallel to a face and on it counts as inside).
    safe = torch.where(dirs == 0, torch.full_like(dirs, 1e-30), dirs)
    inv = 1.0 / safe
    t0 = (box_min - origins) * inv
    t1 = (box_max - origins) * inv
    t_near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(0.0)
    t_far = torch.maximum(t0, t1).amin(dim=-1)
    return t_near, t_far
