"""Triangle meshes as numpy arrays: what every mesh reader and writer shares.

- Readers hand their polygons (flat corner indices + corner counts) to `triangle_mesh`, which
  fan-triangulates them and checks the result, with one-line UserErrors naming the file.
- Writers pass their arguments through `mesh_arrays`, which checks shapes (ValueError: a
  caller's bug, not the user's) and gives the dtypes the files store.
"""
from __future__ import annotations

import numpy as np

from ..errors import UserError


def fan_triangulate(flat: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Triangles int64 [T, 3] from polygons stored as flat indices int64 [sum(lengths)] and
    corner counts int64 [P]: polygon (a, b, c, d, ...) -> (a, b, c), (a, c, d), ...
    Polygons with fewer than 3 corners have no area and are dropped."""
    flat = np.asarray(flat, np.int64)
    lengths = np.asarray(lengths, np.int64)
    if len(lengths) and (lengths == 3).all():       # triangles already (the usual case): no fans
        return flat.reshape(-1, 3)
    n_tri = np.maximum(lengths - 2, 0)                          # [P]
    start = np.cumsum(lengths) - lengths                        # [P] first corner in flat
    poly = np.repeat(np.arange(len(lengths)), n_tri)            # [T] polygon of each triangle
    k = np.arange(len(poly)) - np.repeat(np.cumsum(n_tri) - n_tri, n_tri) + 1  # 1..L-2
    first = start[poly]
    return np.stack([flat[first], flat[first + k], flat[first + k + 1]], axis=1).astype(np.int64)


def triangle_mesh(where: str, vertices: np.ndarray, flat: np.ndarray, lengths: np.ndarray
                  ) -> np.ndarray:
    """Fan-triangulated faces int64 [F, 3] of polygons (see `fan_triangulate`) over
    vertices [V, 3]; UserError starting with `where` when there are no faces, an index is
    out of range or a vertex is NaN or infinite."""
    faces = fan_triangulate(flat, lengths)
    if len(faces) == 0:
        raise UserError(f"{where}: the mesh has no faces")
    if faces.min() < 0 or faces.max() >= len(vertices):
        bad = faces[(faces < 0) | (faces >= len(vertices))][0]
        raise UserError(f"{where}: face index out of range ({bad + 1} for "
                        f"{len(vertices)} vertices, 1-based)")
    finite = np.isfinite(vertices).all(axis=1)
    if not finite.all():
        raise UserError(f"{where}: vertex {int(np.flatnonzero(~finite)[0]) + 1} is NaN or infinite")
    return faces


def colors_uint8(colors: np.ndarray | None, n_vertices: int) -> np.ndarray | None:
    """uint8 [V, 3] from uint8 [V, 3] (as is) or float [V, 3] in [0, 1] (scaled, rounded;
    NaN -> 0)."""
    if colors is None:
        return None
    c = np.asarray(colors)
    if c.shape != (n_vertices, 3):
        raise ValueError(f"colors must be [{n_vertices}, 3]; got {c.shape}")
    if c.dtype == np.uint8:
        return c
    if np.issubdtype(c.dtype, np.floating):
        return np.round(np.clip(np.nan_to_num(c), 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"colors must be uint8 or float in [0, 1]; got {c.dtype}")


def mesh_arrays(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Checked vertices float32 [V, 3] (what Blender keeps anyway), faces int32 [F, 3],
    colours uint8 [V, 3] or None; ValueError on wrong shapes, dtypes or indices."""
    v = np.asarray(vertices)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"expected vertices [V, 3] and faces [F, 3]; got {v.shape}, {f.shape}")
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise ValueError(f"face index out of range for {len(v)} vertices")
    if len(v) >= 2**31:
        raise ValueError("too many vertices for int32 face indices")
    return v.astype(np.float32), f.astype(np.int32), colors_uint8(colors, len(v))
