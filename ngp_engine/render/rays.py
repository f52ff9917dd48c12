"""Camera rays and ray/box intersection (pure functions, any torch device).

Convention (NeRF/Blender, as `ngp_engine.formats.camera`): the camera looks down -Z, +Y up,
+X right; pixel (column i, row j) has its centre at (i + 0.5, j + 0.5) from the image's
top-left corner. The ray through image point (u, v) has camera-space direction
((u - cx) / fx, -(v - cy) / fy, -1), so `Camera.project` inverts it exactly. These are the
batched torch twins of `Camera.rays` (many cameras, on the device, in the unit cube).

Distorted cameras (OPENCV, OPENCV_FISHEYE): the lens is inverted once per distinct camera on
the host (`Camera.camera_directions`, Newton iterations in float64) into a map of
camera-space unit directions per pixel centre; rays are then a lookup and a rotation.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from ..formats.camera import Camera

_DIRECTION_CACHE: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
_DIRECTION_CACHE_SIZE = 4          # a render or evaluation loop cycles through few lenses


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


def rays_from_directions(c2w: torch.Tensor, d_cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays of camera-space directions: c2w [R, 4, 4] (or [R, 3, 4]), d_cam [R, 3] (NeRF
    camera space, -Z forward). Returns origins [R, 3] and unit directions [R, 3] in the frame
    of c2w."""
    d = torch.einsum("rij,rj->ri", c2w[:, :3, :3], d_cam)
    d = d / torch.linalg.norm(d, dim=-1, keepdim=True)
    return c2w[:, :3, 3].clone(), d


def direction_maps(cameras: "list[Camera]", device: torch.device | str | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per distinct lens (cameras sharing size, intrinsics and distortion share one; a photo
    set usually has one): maps [K, H, W, 3] float32 of camera-space unit directions through
    every pixel centre, and index [N] int64, the map of each camera. All cameras must have
    the same image size."""
    keys: dict[tuple, int] = {}
    index, maps = [], []
    for cam in cameras:
        key = cam.lens_key
        if key not in keys:
            keys[key] = len(maps)
            maps.append(cam.camera_directions().reshape(cam.h, cam.w, 3).astype(np.float32))
        index.append(keys[key])
    return (torch.from_numpy(np.stack(maps)).to(device),
            torch.tensor(index, dtype=torch.int64, device=device))


def camera_directions(camera: "Camera", device: torch.device | str | None = None) -> torch.Tensor:
    """[H * W, 3] float32 camera-space unit directions of every pixel centre of `camera`
    (row-major), on `device`; the last few lenses are cached (inverting one is host work)."""
    key = (camera.lens_key, str(device))
    hit = _DIRECTION_CACHE.get(key)
    if hit is not None:
        _DIRECTION_CACHE.move_to_end(key)
        return hit
    d = torch.from_numpy(camera.camera_directions().astype(np.float32)).to(device)
    _DIRECTION_CACHE[key] = d
    while len(_DIRECTION_CACHE) > _DIRECTION_CACHE_SIZE:
        _DIRECTION_CACHE.popitem(last=False)
    return d


def enclosing_pinhole(maps: torch.Tensor, index: torch.Tensor, intrinsics: torch.Tensor
                      ) -> tuple[torch.Tensor, int, int] | None:
    """A pinhole frame that sees at least what each distorted camera sees (for tests written
    for pinholes, e.g. which occupancy cells any camera sees): intrinsics [N, 4] (same fx,
    fy; principal points moved) and one width, height covering every camera's directions
    `maps` [K, H, W, 3] (`index` [N]). None when some direction is 90 degrees or more off the
    axis (a wide fisheye), which no pinhole can hold."""
    z = -maps[..., 2]
    if float(z.min()) <= 1e-3:
        return None
    k = intrinsics.clone()
    fx, fy, cx, cy = intrinsics[:, 0], intrinsics[:, 1], intrinsics[:, 2], intrinsics[:, 3]
    x = (maps[..., 0] / z).flatten(1)                  # [K, H*W] pinhole image-plane coordinates
    y = (-maps[..., 1] / z).flatten(1)
    x_lo, x_hi = x.min(1).values[index], x.max(1).values[index]       # [N]
    y_lo, y_hi = y.min(1).values[index], y.max(1).values[index]
    u_lo, v_lo = cx + fx * x_lo, cy + fy * y_lo
    # The leftmost / topmost pixel centre lands at 1.0: a pixel of margin on every side.
    k[:, 2], k[:, 3] = cx - u_lo + 1.0, cy - v_lo + 1.0
    width = int(math.ceil(float((fx * (x_hi - x_lo)).max()))) + 2
    height = int(math.ceil(float((fy * (y_hi - y_lo)).max()))) + 2
    return k, width, height


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
