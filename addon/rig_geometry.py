"""Where the cameras of a dataset go and what they look at: plain geometry on numpy arrays.

numpy and the standard library only (no bpy, no mathutils), so it is tested without Blender;
the operators gather positions, axes and bounding-box corners from Blender objects and pass
them in as arrays. World coordinates throughout, Blender's axes (+Z up).
"""
from __future__ import annotations

import math

import numpy as np

RIG_MARGIN = 1.1
"""How much room a dataset leaves around its objects (10%): in the rig's radius and in
the engine's unit cube."""


def rig_directions(n: int, sphere: bool) -> np.ndarray:
    """n unit vectors [n, 3], evenly spread (Fibonacci spiral) over the sphere or upper
    hemisphere (elevation 5..85 degrees)."""
    z_lo, z_hi = (-0.95, 0.95) if sphere else (math.sin(math.radians(5)), math.sin(math.radians(85)))
    z = z_lo + (z_hi - z_lo) * (np.arange(n) + 0.5) / n
    az = np.arange(n) * math.pi * (3.0 - math.sqrt(5.0))          # the golden angle
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(az), r * np.sin(az), z], axis=1)


def rig_radius(lo: np.ndarray, hi: np.ndarray, half_fov: float) -> float:
    """Camera distance from the box centre at which the box's bounding sphere (through the
    corners lo [3] and hi [3]) fits a view of half field of view `half_fov` (radians), with
    the rig's margin."""
    diagonal = float(np.linalg.norm(np.asarray(hi, np.float64) - np.asarray(lo, np.float64)))
    return RIG_MARGIN * 0.5 * diagonal / math.sin(half_fov)


def scene_cube_side(half_extent: float) -> float:
    """Side, in world units, of the engine's unit cube around a box of half-extent
    `half_extent`: the box with the margin on every side (never zero, for a point)."""
    return 2.0 * RIG_MARGIN * max(half_extent, 1e-6)


def points_bounds(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounding box (min corner [3], max corner [3]) of points [N, 3]."""
    p = np.asarray(points, np.float64).reshape(-1, 3)
    return p.min(axis=0), p.max(axis=0)


def box_centre_half(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre [3] of the box lo..hi and half of its largest side (a cube's half-extent that
    holds it)."""
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    return (lo + hi) / 2, float((hi - lo).max() / 2)


def axes_meeting_point(origins: np.ndarray, forwards: np.ndarray) -> np.ndarray:
    """The point [3] closest, in least squares, to every view axis (the line from origins[i]
    [N, 3] along forwards[i] [N, 3]; the forwards need not be unit): where cameras that all
    look at one thing look."""
    o = np.asarray(origins, np.float64).reshape(-1, 3)
    d = np.asarray(forwards, np.float64).reshape(-1, 3)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    # Each axis contributes (I - d d^T)(x - o) = 0: the part of x - o across the axis.
    across = np.eye(3)[None] - d[:, :, None] * d[:, None, :]             # [N, 3, 3]
    a = across.sum(axis=0)
    b = np.einsum("nij,nj->i", across, o)
    return np.linalg.lstsq(a, b, rcond=None)[0]


def cameras_focus(origins: np.ndarray, forwards: np.ndarray, camera_angle_x: float
                  ) -> tuple[np.ndarray, float]:
    """Where cameras at origins [N, 3] looking along forwards [N, 3] look (their axes'
    meeting point) and the half-width a view of horizontal field of view `camera_angle_x`
    (radians) sees there from the median camera distance: the scene box when no object
    bounds it."""
    centre = axes_meeting_point(origins, forwards)
    dists = np.linalg.norm(np.asarray(origins, np.float64).reshape(-1, 3) - centre, axis=1)
    return centre, float(np.median(dists) * math.tan(0.5 * camera_angle_x))
