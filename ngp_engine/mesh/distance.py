"""Distances between points and triangle meshes (libigl's AABB tree), for evaluating meshes.

`mesh_to_mesh_distance` compares an extracted mesh with a reference: one-sided statistics
from surface samples on the source to the destination, plus the symmetric chamfer distance.
"""
from __future__ import annotations

import numpy as np

from ..errors import UserError
from ..packages import require


def _mesh(vertices: np.ndarray, faces: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 [V, 3] and int64 [F, 3] C-contiguous copies, as igl wants them."""
    v = np.ascontiguousarray(vertices, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise UserError(f"{what}: expected vertices [V, 3] and faces [F, 3]; "
                        f"got {v.shape} and {f.shape}")
    if len(f) == 0:
        raise UserError(f"{what}: the mesh has no faces")
    if f.min() < 0 or f.max() >= len(v):
        raise UserError(f"{what}: a face index is out of range (0..{len(v) - 1})")
    if not np.isfinite(v[np.unique(f)]).all():
        raise UserError(f"{what}: a vertex is NaN or infinite")
    return v, f


def face_areas(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """[F] float64 triangle areas."""
    return 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]),
                                axis=1)


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, seed: int = 0,
                   what: str = "mesh", return_faces: bool = False
                   ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """n points float64 [n, 3] uniform over the surface area (same seed, same points), and
    with `return_faces` the index int64 [n] of the face each lies on.

    numpy rather than igl.random_points_on_mesh: igl's draws go through the C++ standard
    library's distributions, whose output differs between compilers; numpy's Generator is
    reproducible everywhere.
    """
    v, f = _mesh(vertices, faces, what)
    areas = face_areas(v, f)
    total = areas.sum()
    if not total > 0 or not np.isfinite(total):
        raise UserError(f"{what}: the surface has zero area")
    rng = np.random.default_rng(seed)
    face = rng.choice(len(f), size=int(n), p=areas / total)     # [n] area-weighted
    u, w = rng.random(int(n)), rng.random(int(n))
    flip = u + w > 1.0                      # fold the far half of the square onto the triangle
    u[flip], w[flip] = 1.0 - u[flip], 1.0 - w[flip]
    a, b, c = v[f[face, 0]], v[f[face, 1]], v[f[face, 2]]
    points = a + u[:, None] * (b - a) + w[:, None] * (c - a)
    return (points, face) if return_faces else points


def point_to_mesh_distance(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                           what: str = "mesh") -> np.ndarray:
    """Unsigned distance float64 [N] from each point [N, 3] to the nearest triangle."""
    v, f = _mesh(vertices, faces, what)
    p = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    if len(p) == 0:
        return np.zeros(0, dtype=np.float64)
    # libigl 2.6.3 (nanobind): point_mesh_squared_distance(P, V, F) -> (sqrD [N], I [N], C [N, 3])
    igl = require("libigl", "Distances to a mesh")
    sq_dist, _, _ = igl.point_mesh_squared_distance(p, v, f)
    return np.sqrt(np.maximum(sq_dist, 0.0))


def mesh_to_mesh_distance(src_v: np.ndarray, src_f: np.ndarray, dst_v: np.ndarray,
                          dst_f: np.ndarray, n: int = 100_000, seed: int = 0) -> dict[str, float]:
    """Distance from mesh src to mesh dst, estimated from n area-uniform samples per mesh.

    Returns floats: mean, median, p95, max of the one-sided distances src -> dst, and
    chamfer = (mean src -> dst + mean dst -> src) / 2. Raises UserError for a mesh with no
    faces or zero area.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    src_pts = sample_surface(src_v, src_f, n, seed, what="source mesh")
    dst_pts = sample_surface(dst_v, dst_f, n, seed + 1, what="target mesh")
    forward = point_to_mesh_distance(src_pts, dst_v, dst_f, what="target mesh")
    backward = point_to_mesh_distance(dst_pts, src_v, src_f, what="source mesh")
    return dict(mean=float(forward.mean()), median=float(np.median(forward)),
                p95=float(np.percentile(forward, 95)), max=float(forward.max()),
                chamfer=float(0.5 * (forward.mean() + backward.mean())))
