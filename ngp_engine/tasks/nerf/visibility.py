"""What the training cameras saw: free space in front of the rendered surfaces, and the
hidden space behind them, on a lattice over the scene box.

Why: photographs constrain density only where rays reach. Inside the objects and in the
shadow under them (no camera on the upper hemisphere looks up) the density is whatever the
network extrapolates, and at the mesh threshold that leaves hollow shells with inner walls
and open bottoms. Marching cubes over a density whose never-seen-free, seen-hidden points are
filled gives the solid the cameras actually support (the classic space-carving rule: a point
is empty if any camera sees through it).
"""
from __future__ import annotations

import numpy as np

from ...formats.camera import Camera
from .model import NerfModel

OPACITY_SEEN = 0.5       # pixels below this are background: their rays pass through the box


def lattice_points(lo: np.ndarray, hi: np.ndarray, resolution: int) -> np.ndarray:
    """[R^3, 3] float32 points of the inclusive lattice `sample_grid` uses (x slowest)."""
    axes = [np.linspace(lo[a], hi[a], resolution, dtype=np.float64) for a in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return grid.reshape(-1, 3).astype(np.float32)


def hidden_space(model: NerfModel, cameras: list[Camera], resolution: int = 128, image_size: int = 64,
                 margin: float | None = None) -> np.ndarray:
    """[R, R, R] bool over the scene box lattice: points that at least one camera sees
    *behind* its rendered surface (farther than depth + margin on a pixel with opacity >=
    0.5) and that no camera sees as free (nearer than depth - margin, or on a background
    pixel). Points outside every camera's view are neither.

    Cameras are rendered at about `image_size` pixels on the longer side (depth and opacity).
    `margin` (world units) keeps the fill away from the visible surface, so the surface the
    density gives stays where it is; default: three lattice cells.
    """
    lo, hi = model.scene_box_world()
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    if margin is None:
        margin = 3.0 * float(np.max(hi - lo)) / (resolution - 1)
    pts = lattice_points(lo, hi, resolution).astype(np.float64)           # [P, 3]
    free = np.zeros(len(pts), bool)
    behind = np.zeros(len(pts), bool)
    for camera in cameras:
        small = camera.fitted(image_size)
        w, h = small.w, small.h
        fx, fy, cx, cy = small.intrinsics
        passes = model.render_camera(small, passes=("depth", "opacity"))
        xc = small.world_to_camera(pts)                                  # [P, 3] camera space
        z = -xc[:, 2]                                                    # z-depth along the view axis
        ok = z > 1e-6
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.floor(cx + fx * xc[:, 0] / z)
            v = np.floor(cy - fy * xc[:, 1] / z)
        ok &= (u >= 0) & (u < w) & (v >= 0) & (v < h)
        idx = np.nonzero(ok)[0]
        ui, vi = u[idx].astype(np.int64), v[idx].astype(np.int64)
        opacity = passes["opacity"][vi, ui]
        depth = passes["depth"][vi, ui].astype(np.float64)
        seen = opacity >= OPACITY_SEEN
        zi = z[idx]
        free[idx[~seen | (zi < depth - margin)]] = True
        behind[idx[seen & (zi > depth + margin)]] = True
    return (behind & ~free).reshape(resolution, resolution, resolution)


def fill_hidden(volume: np.ndarray, hidden: np.ndarray, value: float) -> np.ndarray:
    """`volume` [R, R, R] with every point that falls in a `hidden` cell ([r, r, r], any r;
    nearest lattice point) raised to at least `value`."""
    r_fine, r_coarse = volume.shape[0], hidden.shape[0]
    idx = np.rint(np.arange(r_fine) * (r_coarse - 1) / (r_fine - 1)).astype(np.int64)
    mask = hidden[np.ix_(idx, idx, idx)]
    return np.where(mask, np.maximum(volume, np.float32(value)), volume).astype(volume.dtype)
