"""Sample a scalar field on a lattice and turn one of its level sets into a triangle mesh.

The lattice spans `box_min..box_max` inclusive: lattice index `i` along an axis with `R`
points sits at `box_min + i * (box_max - box_min) / (R - 1)`, with x along axis 0, y along
axis 1 and z along axis 2 of the volume. Vertices come back in those world coordinates.

Orientation: faces wind counter-clockwise seen from outside, so the right-hand normal
`cross(b - a, c - a)` points from the inside (where the field is on the `inside` side of the
threshold) to the outside. PyMCubes 0.1.6 already winds that way for "inside = above"
(checked in tests/test_mesh.py); "inside = below" (SDFs) swaps two corners of each face.

Welding: PyMCubes shares each edge-crossing vertex between the cells around that edge, so
the mesh is closed by index (every edge in exactly two faces). One exception, left as is on
purpose: a lattice sample exactly equal to the threshold puts several vertices at that
lattice point, with zero-area faces between them. The mesh is still closed by index there;
merging those vertices would collapse edges and can make non-manifold edges and duplicate
faces (tried on random integer volumes), which is worse for Blender than a few slivers.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Literal

import numpy as np
import torch

from ..packages import require

FieldFn = Callable[[torch.Tensor], torch.Tensor]
Inside = Literal["above", "below"]


def require_mcubes() -> ModuleType:
    """PyMCubes, or the one-line error saying that mesh extraction needs it (commands that
    will mesh call this first, before any training or sampling)."""
    return require("PyMCubes", "Marching cubes (mesh extraction)")


def _resolution3(resolution: int | Sequence[int]) -> tuple[int, int, int]:
    res = (resolution,) * 3 if isinstance(resolution, (int, np.integer)) else tuple(resolution)
    if len(res) != 3 or any(int(r) != r or r < 2 for r in res):
        raise ValueError(f"resolution must be an int or 3 ints, each >= 2; got {resolution!r}")
    return int(res[0]), int(res[1]), int(res[2])


def _box(box_min: Sequence[float], box_max: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    lo = np.asarray(box_min, dtype=np.float64).reshape(-1)
    hi = np.asarray(box_max, dtype=np.float64).reshape(-1)
    if lo.shape != (3,) or hi.shape != (3,) or not np.all(np.isfinite(lo) & np.isfinite(hi)):
        raise ValueError(f"box_min/box_max must be 3 finite numbers; got {box_min!r}, {box_max!r}")
    if not np.all(hi > lo):
        raise ValueError(f"box_max {hi.tolist()} must exceed box_min {lo.tolist()} on every axis")
    return lo, hi


def sample_grid(field_fn: FieldFn, box_min: Sequence[float], box_max: Sequence[float],
                resolution: int | Sequence[int], chunk_size: int = 2**18,
                device: torch.device | str | None = None) -> np.ndarray:
    """Evaluate `field_fn` on the lattice spanning box_min..box_max (inclusive).

    field_fn: takes points float32 [N, 3] on `device`, returns values [N] (or [N, 1]).
    resolution: R, or (Rx, Ry, Rz); at least 2 points per axis.
    chunk_size: most points per call, bounding peak memory to one chunk.
    device: where the points are made (default CPU); the field's device, not ours to pick.
    Returns float32 [Rx, Ry, Rz] on the CPU, x along axis 0, y along 1, z along 2.
    """
    rx, ry, rz = _resolution3(resolution)
    lo, hi = _box(box_min, box_max)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1; got {chunk_size}")
    device = torch.device("cpu") if device is None else torch.device(device)
    # One coordinate axis at a time; per-chunk points come from flat indices, so the full
    # R^3 x 3 point cloud (1.6 GB at 512^3) never exists at once.
    axes = [torch.linspace(float(lo[a]), float(hi[a]), r, dtype=torch.float32, device=device)
            for a, r in enumerate((rx, ry, rz))]
    total = rx * ry * rz
    out = np.empty(total, dtype=np.float32)
    with torch.no_grad():
        for start in range(0, total, chunk_size):
            flat = torch.arange(start, min(start + chunk_size, total), device=device)
            i, rem = flat // (ry * rz), flat % (ry * rz)
            j, k = rem // rz, rem % rz
            points = torch.stack((axes[0][i], axes[1][j], axes[2][k]), dim=-1)  # [n, 3]
            values = field_fn(points)
            if values.numel() != points.shape[0]:
                raise ValueError(f"field_fn returned shape {tuple(values.shape)} for "
                                 f"{points.shape[0]} points; expected [N]")
            out[start:start + points.shape[0]] = (
                values.reshape(-1).to(dtype=torch.float32, device="cpu").numpy())
    return out.reshape(rx, ry, rz)


def sample_grid_near_level(field_fn: FieldFn, box_min: Sequence[float], box_max: Sequence[float],
                           resolution: int | Sequence[int], level: float, stride: int = 4,
                           lipschitz: float = 1.5, chunk_size: int = 2**18,
                           device: torch.device | str | None = None) -> tuple[np.ndarray, float]:
    """Like `sample_grid`, for a distance-like field (|gradient| <= `lipschitz`), evaluating
    the fine lattice only near the `level` set.

    The lattice is first sampled every `stride` points. A coarse cell whose corners all lie
    farther than `lipschitz` x its diagonal from `level` cannot hold the level set, so its
    inner fine points take the value of their nearest coarse corner (same side of the level,
    so marching cubes finds nothing there); every other fine point is evaluated. Same values
    as `sample_grid` wherever the level set can be, at a fraction of the cost (the surface
    band instead of the volume).

    Returns the volume float32 [Rx, Ry, Rz] and the fraction of fine points evaluated.
    The three stages (coarse lattice, band mask, fine points) share their index arithmetic,
    hence one function.
    """
    res = np.array(_resolution3(resolution))
    lo, hi = _box(box_min, box_max)
    if stride < 2 or np.any(res <= 2 * stride):
        return sample_grid(field_fn, lo, hi, tuple(res), chunk_size, device), 1.0
    device = torch.device("cpu") if device is None else torch.device(device)
    step = (hi - lo) / (res - 1)                                              # [3] fine spacing
    coarse_idx = [np.unique(np.r_[np.arange(0, r, stride), r - 1]) for r in res]   # per axis

    def evaluate(points: np.ndarray) -> np.ndarray:
        out = np.empty(len(points), np.float32)
        with torch.no_grad():
            for start in range(0, len(points), chunk_size):
                p = torch.from_numpy(points[start:start + chunk_size]).to(device)
                out[start:start + len(p)] = field_fn(p).reshape(-1).float().cpu().numpy()
        return out

    # Coarse samples [Cx, Cy, Cz] on the rectilinear sub-lattice.
    ci, cj, ck = np.meshgrid(*coarse_idx, indexing="ij")
    coarse_pts = (lo + np.stack([ci, cj, ck], -1).reshape(-1, 3) * step).astype(np.float32)
    coarse = evaluate(coarse_pts).reshape(ci.shape)
    # A coarse cell is active when some corner is within lipschitz x its diagonal of the level.
    near = np.abs(coarse - level)
    corner_min = near[:-1, :-1, :-1]
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                corner_min = np.minimum(corner_min, near[dx:near.shape[0] - 1 + dx,
                                                         dy:near.shape[1] - 1 + dy,
                                                         dz:near.shape[2] - 1 + dz])
    widths = [np.diff(c) * step[a] for a, c in enumerate(coarse_idx)]           # per axis
    diag = np.sqrt(widths[0][:, None, None] ** 2 + widths[1][None, :, None] ** 2
                   + widths[2][None, None, :] ** 2)
    active = corner_min < lipschitz * diag                                   # [Cx-1, Cy-1, Cz-1]
    # Fine cell -> its coarse cell; fine points that are corners of active fine cells.
    cell_of = [np.minimum(np.arange(r - 1) // stride, len(c) - 2) for r, c in zip(res, coarse_idx)]
    fine_cells = active[np.ix_(*cell_of)]                                    # [Rx-1, Ry-1, Rz-1]
    todo = np.zeros(tuple(res), bool)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                todo[dx:res[0] - 1 + dx, dy:res[1] - 1 + dy, dz:res[2] - 1 + dz] |= fine_cells
    # Everything else: the nearest coarse sample's value.
    nearest = [np.abs(np.arange(r)[:, None] - c[None, :]).argmin(1) for r, c in zip(res, coarse_idx)]
    volume = coarse[np.ix_(*nearest)].astype(np.float32)
    idx = np.nonzero(todo)
    pts = (lo + np.stack(idx, -1) * step).astype(np.float32)
    volume[idx] = evaluate(pts)
    return volume, float(todo.mean())


def marching_cubes(volume: np.ndarray, threshold: float, box_min: Sequence[float],
                   box_max: Sequence[float], inside: Inside = "above"
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Extract the `threshold` level set of `volume` as a triangle mesh in world coordinates.

    volume: [Rx, Ry, Rz] float (float32 is used as is, others become float64), sampled
        as by `sample_grid` on box_min..box_max.
    inside: "above" when the solid is where volume > threshold (densities, occupancies);
        "below" when it is where volume < threshold (signed distances, threshold 0).
    Returns vertices float32 [V, 3] and faces int32 [F, 3], normals pointing outward;
    both empty (shapes (0, 3)) when the level set does not cross the volume.
    """
    if inside not in ("above", "below"):
        raise ValueError(f'inside must be "above" or "below"; got {inside!r}')
    volume = np.asarray(volume)
    if volume.ndim != 3 or min(volume.shape) < 2:
        raise ValueError(f"volume must be 3-D with >= 2 samples per axis; got {volume.shape}")
    if np.isnan(volume).any():
        # PyMCubes would interpolate NaN into vertex positions without complaint.
        raise ValueError("volume contains NaN; the field produced invalid values")
    lo, hi = _box(box_min, box_max)
    dtype = np.float32 if volume.dtype == np.float32 else np.float64
    mcubes = require_mcubes()
    verts, faces = mcubes.marching_cubes(np.ascontiguousarray(volume, dtype=dtype),
                                         float(threshold))
    if len(faces) == 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
    scale = (hi - lo) / (np.asarray(volume.shape, dtype=np.float64) - 1.0)
    verts = (lo + np.asarray(verts, dtype=np.float64) * scale).astype(np.float32)
    faces = np.asarray(faces, dtype=np.int64)
    if inside == "below":
        faces = faces[:, [0, 2, 1]]  # reverse winding: the solid is on the other side
    return verts, np.ascontiguousarray(faces, dtype=np.int32)


def extract_mesh(field_fn: FieldFn, box_min: Sequence[float], box_max: Sequence[float],
                 resolution: int | Sequence[int], threshold: float, chunk_size: int = 2**18,
                 device: torch.device | str | None = None, inside: Inside = "above"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """`sample_grid` then `marching_cubes`: vertices float32 [V, 3], faces int32 [F, 3]."""
    volume = sample_grid(field_fn, box_min, box_max, resolution, chunk_size, device)
    return marching_cubes(volume, threshold, box_min, box_max, inside=inside)


def lattice_resolution(box_min: np.ndarray, box_max: np.ndarray, resolution: int) -> tuple[int, int, int]:
    """Points per axis for cubic cells with `resolution` points along the longest side."""
    extent = np.asarray(box_max) - np.asarray(box_min)
    res = np.maximum(2, np.round((resolution - 1) * extent / extent.max()).astype(int) + 1)
    return int(res[0]), int(res[1]), int(res[2])
