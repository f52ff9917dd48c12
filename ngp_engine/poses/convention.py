"""COLMAP -> NeRF/Blender cameras, and the similarity that puts the scene in [-1, 1]^3.

COLMAP stores world-to-camera (R, t) in the OpenCV camera frame (+X right, +Y down,
looking down +Z). NeRF/Blender cameras look down -Z with +Y up, so
c2w_nerf = inverse([R | t]) with its columns 1 and 2 negated.

The normalising similarity world_nerf = s * Rot @ x_colmap + t (see `normalising_similarity`):
- up (becomes +Z, Blender's up): assumption: the photos were taken upright, as people
  hold cameras (roll small, whatever the tilt down at the object). Then every camera's
  right vector (+X) is horizontal, so up is the direction most perpendicular to all of
  them (smallest eigenvector of sum x x^T), signed to agree with the mean camera up.
  Unlike the mean of the up vectors (-Y of each OpenCV camera) this is not pulled over by
  the cameras' tilt when they cover the object unevenly (measured: 8 degrees off on a
  1.5-turn spiral, 0.1 with this). When all cameras face one way (a forward walk), the
  right vectors do not pin up down: then the mean up, made perpendicular to them.
  A capture held sideways needs EXIF orientation (images.py) or gets a sideways world.
- centre: the point the cameras' optical axes pass closest to (least squares), because an
  object capture aims every camera at the object, whatever the background holds. When
  the axes are nearly parallel (a walk-through video), that point is ill-defined, so the
  median of the sparse points is taken instead.
- scale: the sparse points within the farthest camera's distance of the centre (farther
  ones are background), clipped per axis to their 2nd..98th percentiles, span +-0.8 on
  the largest axis: the object fits [-1, 1]^3 with a margin.
- the horizontal rotation about +Z is the smallest rotation taking up to +Z (no
  preferred heading exists).
"""
from __future__ import annotations

import numpy as np

from .spec import Similarity

TARGET_HALF_EXTENT = 0.8
_MIN_HEADING_SPREAD = 0.02     # eigenvalue gap of the right vectors: headings differ enough
_MIN_AXIS_CONDITION = 0.05      # smallest eigenvalue / n of sum(I - d d^T): axes not parallel


def colmap_to_nerf_c2w(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """World-to-camera rotation [3, 3] and translation [3] (OpenCV camera) -> NeRF
    camera-to-world [4, 4]."""
    c2w = np.eye(4)
    c2w[:3, :3] = rotation.T
    c2w[:3, 3] = -rotation.T @ translation
    c2w[:3, 1:3] *= -1.0
    return c2w


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation [3, 3] taking unit vector a [3] onto unit vector b [3]."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    if c < -1 + 1e-12:                       # opposite: half turn about any perpendicular
        axis = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 0.9 else [0, 1.0, 0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    k = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + k + k @ k / (1 + c)


def axes_focus(centres: np.ndarray, directions: np.ndarray) -> np.ndarray | None:
    """The point [3] nearest (least squares) to the lines centre_i + s * direction_i
    ([N, 3] each), or None when the lines are nearly parallel."""
    d = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    proj = np.eye(3)[None] - d[:, :, None] * d[:, None, :]          # [N, 3, 3]
    a = proj.sum(0)
    if np.linalg.eigvalsh(a)[0] < _MIN_AXIS_CONDITION * len(d):
        return None
    return np.linalg.solve(a, np.einsum("nij,nj->i", proj, centres))


def estimate_up(c2w: np.ndarray) -> np.ndarray:
    """World up [3] (unit) from NeRF camera-to-worlds [N, 4, 4]; see the module docstring."""
    mean_up = c2w[:, :3, 1].mean(0)                 # NeRF +Y = OpenCV -Y: the camera's up
    if np.linalg.norm(mean_up) < 1e-6:
        mean_up = np.array([0.0, 0.0, 1.0])
    right = c2w[:, :3, 0]
    evals, evecs = np.linalg.eigh(right.T @ right / len(right))      # ascending
    if evals[1] - evals[0] > _MIN_HEADING_SPREAD:
        up = evecs[:, 0]
    else:                                           # one heading: up only known up to a turn
        up = mean_up - (mean_up @ evecs[:, 2]) * evecs[:, 2]
        if np.linalg.norm(up) < 1e-6:
            up = mean_up
    up = up / np.linalg.norm(up)
    return up if up @ mean_up >= 0 else -up


def normalising_similarity(c2w: np.ndarray, points: np.ndarray) -> tuple[Similarity, str]:
    """The similarity for NeRF camera-to-worlds [N, 4, 4] (COLMAP world) and sparse points
    [M, 3]; also how the centre was found ("optical axes" or "median of points")."""
    rot = rotation_between(estimate_up(c2w), np.array([0.0, 0.0, 1.0]))
    centres = c2w[:, :3, 3]
    focus = axes_focus(centres, -c2w[:, :3, 2])     # NeRF cameras look down -Z
    lo, hi = (np.percentile(points, q, axis=0) for q in (1, 99)) if len(points) else (None, None)
    if focus is not None and len(points) and not (np.all(focus >= lo) and np.all(focus <= hi)):
        focus = None                                # axes meet outside the scene: not an object
    if focus is None:
        centre = np.median(points, axis=0) if len(points) else centres.mean(0)
        how = "median of points"
    else:
        centre, how = focus, "optical axes"
    rel = (points - centre) @ rot.T
    reach = np.linalg.norm(centres - centre, axis=1).max()
    near = rel[np.linalg.norm(rel, axis=1) <= reach] if len(rel) else rel
    if len(near) < 10:
        near = (centres - centre) @ rot.T           # too few points: frame the cameras instead
    p_lo, p_hi = np.percentile(near, 2, axis=0), np.percentile(near, 98, axis=0)
    half = float(np.max(np.maximum(np.abs(p_lo), np.abs(p_hi))))
    scale = TARGET_HALF_EXTENT / max(half, 1e-12)
    t = -scale * rot @ centre
    return Similarity(float(scale), tuple(tuple(float(v) for v in r) for r in rot),
                      tuple(float(v) for v in t)), how


def apply_to_c2w(sim: Similarity, c2w: np.ndarray) -> np.ndarray:
    """NeRF camera-to-worlds [N, 4, 4] in COLMAP world -> in the normalised world (the
    rotation part stays orthonormal: only positions are scaled)."""
    rot = np.asarray(sim.rotation)
    out = c2w.copy()
    out[:, :3, :3] = rot @ c2w[:, :3, :3]
    out[:, :3, 3] = sim.scale * c2w[:, :3, 3] @ rot.T + np.asarray(sim.translation)
    return out


def apply_to_points(sim: Similarity, points: np.ndarray) -> np.ndarray:
    """Points [M, 3] in COLMAP world -> normalised world."""
    return sim.scale * points @ np.asarray(sim.rotation).T + np.asarray(sim.translation)


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (s, R [3, 3], t [3]) with dst ~ s R src + t, for point
    sets [N, 3] (Umeyama 1991). Used to compare poses with ground truth."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1
    r = u @ sign @ vt
    s = float(np.trace(np.diag(d) @ sign) / xs.var(0).sum())
    return s, r, mu_d - s * r @ mu_s
