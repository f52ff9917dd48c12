"""What the training cameras saw, on a lattice over a box: free space in front of the
rendered surfaces, the observed surfaces themselves, and the hidden space behind them that
those surfaces enclose.

Why: photographs constrain density only where rays reach. Inside the objects and in the
shadow under them (no camera on the upper hemisphere looks up) the density is whatever the
network extrapolates, and at the mesh threshold that leaves hollow shells with inner walls
and open bottoms. Marching cubes over a density whose enclosed hidden points are filled
gives the solid the cameras actually support.

The rule, per lattice point, in two parts:

1. Carving (the classic space-carving rule): a point is *free* when some camera sees
   through it (nearer than its depth - margin, or on a background pixel); *surface* when it
   is not free and lies within the margin of some camera's depth; *hidden* when it is not
   free and some camera sees it behind its surface. Points no camera sees are none of these.
2. Enclosure: a hidden point is filled only when the observed surface bounds it. Walking
   from it along each of the four horizontal directions (+x, -x, +y, -y), the first point
   that is not plain hidden space must be surface, not free or unseen space (nor the edge of
   the box). The other hidden points keep the network's density: emptying them was tried
   and, on a briefly trained NeRF whose density spills under the object, cut new walls
   into that spill instead of removing it.

Why the second part: hidden alone also holds the shadow of an object photographed from
above: the space under it, down to wherever the cameras' views end (the box floor for the
steep views, which see it behind the object while the low ones do not see it at all).
That space is outside every observed surface and must stay empty. Walking sideways from a
point of the shadow leads out into free or unseen space, while from inside the object it
meets the object's observed sides; so the fill stops where the observed sides end, i.e.
the object is closed at its lowest observed surface, and what is truly enclosed (inside
objects, between touching ones) is still filled. The walks are horizontal because the
cameras that leave a shadow are on the upper hemisphere (world +z up, as in Blender): an
object's sides are what they see all around, its bottom is what they miss. Four
cumulative scans over the lattice: a few numpy passes, no flood fill.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

from ...formats.camera import Camera

OPACITY_SEEN = 0.5       # pixels below this are background: their rays pass through the box
MARGIN_CELLS = 3.0       # default margin around the rendered depth, in lattice cells

# Lattice point classes for the enclosure walks.
OPEN, SURFACE, HIDDEN = 0, 1, 2


class RendersDepth(Protocol):
    """What the hidden-space test needs of a model (a NerfModel, or a closed-form stand-in)."""

    def scene_box_world(self) -> tuple[np.ndarray, np.ndarray]: ...

    def render_camera(self, camera: Camera, passes: tuple[str, ...]) -> dict[str, np.ndarray]: ...


def lattice_shape(lo: np.ndarray, hi: np.ndarray, resolution: int) -> tuple[int, int, int]:
    """Points per axis of a lattice over the box lo..hi [3] with `resolution` points along its
    longest side and about the same spacing on the others (at least 2 points each)."""
    ext = np.asarray(hi, np.float64) - np.asarray(lo, np.float64)
    n = [max(2, int(round((resolution - 1) * e / ext.max())) + 1) for e in ext]
    return n[0], n[1], n[2]


def lattice_points(lo: np.ndarray, hi: np.ndarray, resolution: int | tuple[int, int, int]) -> np.ndarray:
    """[Rx * Ry * Rz, 3] float32 points of the inclusive lattice `sample_grid` uses (x slowest);
    `resolution` R means R points on every axis."""
    shape = (resolution,) * 3 if isinstance(resolution, (int, np.integer)) else tuple(resolution)
    axes = [np.linspace(lo[a], hi[a], shape[a], dtype=np.float64) for a in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    return grid.reshape(-1, 3).astype(np.float32)


def observed_space(model: RendersDepth, cameras: list[Camera], lo: np.ndarray, hi: np.ndarray,
                   shape: tuple[int, int, int], image_size: int, margin: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Part 1 of the rule (module docstring) on the lattice `shape` over lo..hi [3] (world):
    (hidden, surface), both bool `shape`. Each camera is rendered at about `image_size`
    pixels on its longer side (depth and opacity); `margin` is in world units."""
    pts = lattice_points(lo, hi, shape).astype(np.float64)                # [P, 3]
    free = np.zeros(len(pts), bool)
    behind = np.zeros(len(pts), bool)
    near = np.zeros(len(pts), bool)
    for camera in cameras:
        small = camera.fitted(image_size)
        passes = model.render_camera(small, passes=("depth", "opacity"))
        uv = small.project(pts)                                           # [P, 2], NaN behind
        z = -small.world_to_camera(pts)[:, 2]                             # z-depth, as the depth pass
        with np.errstate(invalid="ignore"):
            pix = np.floor(uv)
            ok = (pix[:, 0] >= 0) & (pix[:, 0] < small.w) & (pix[:, 1] >= 0) & (pix[:, 1] < small.h)
        ok &= z > 0          # z-depths compare only in front (a fisheye also images points behind)
        idx = np.nonzero(ok)[0]
        ui, vi = pix[idx, 0].astype(np.int64), pix[idx, 1].astype(np.int64)
        depth = passes["depth"][vi, ui].astype(np.float64)
        seen = passes["opacity"][vi, ui] >= OPACITY_SEEN
        zi = z[idx]
        free[idx[~seen | (zi < depth - margin)]] = True
        behind[idx[seen & (zi > depth + margin)]] = True
        near[idx[seen & (np.abs(zi - depth) <= margin)]] = True
    hidden, surface = behind & ~free, near & ~free
    return hidden.reshape(shape), surface.reshape(shape)


def _bounded_along(classes: np.ndarray, axis: int, forward: bool) -> np.ndarray:
    """bool like `classes`: walking from each point (exclusive) along +axis (`forward`) or
    -axis, the first point that is not HIDDEN is SURFACE (the box edge counts as OPEN)."""
    c = np.moveaxis(classes, axis, -1)
    if not forward:
        c = c[..., ::-1]
    n = c.shape[-1]
    pos = np.broadcast_to(np.arange(n, dtype=np.int32), c.shape)
    stop = np.where(c != HIDDEN, pos, n)                                  # [..., n] own index or n
    first = np.minimum.accumulate(stop[..., ::-1], axis=-1)[..., ::-1]    # first stop at >= i
    edge = np.full(c.shape[:-1] + (1,), n, np.int32)
    after = np.concatenate([first[..., 1:], edge], axis=-1)               # first stop at > i
    is_surface = np.concatenate([c == SURFACE, np.zeros(edge.shape, bool)], axis=-1)
    out = np.take_along_axis(is_surface, after, axis=-1)
    if not forward:
        out = out[..., ::-1]
    return np.moveaxis(out, -1, axis)


def enclosed(hidden: np.ndarray, surface: np.ndarray) -> np.ndarray:
    """Part 2 of the rule (module docstring): the `hidden` points [Rx, Ry, Rz] (bool, z up on
    axis 2) that `surface` (bool, same shape) bounds along +x, -x, +y and -y."""
    classes = np.where(surface, SURFACE, np.where(hidden, HIDDEN, OPEN)).astype(np.int8)
    keep = hidden.copy()
    for axis in (0, 1):
        for forward in (True, False):
            keep &= _bounded_along(classes, axis, forward)
    return keep


def hidden_space(model: RendersDepth, cameras: list[Camera], resolution: int = 128,
                 image_size: int = 64, margin: float | None = None,
                 box: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """bool [Rx, Ry, Rz] over the lattice of `box` (world lo [3], hi [3]; default the model's
    scene box) with `resolution` points along its longest side: the points to fill, i.e.
    hidden behind the cameras' rendered surfaces *and* enclosed by them (module docstring).
    Points outside every camera's view are never filled.

    Cameras are rendered at about `image_size` pixels on the longer side (depth and opacity).
    `margin` (world units) keeps the fill away from the visible surface, so the surface the
    density gives stays where it is; default: three lattice cells.
    """
    lo, hi = model.scene_box_world() if box is None else box
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    shape = lattice_shape(lo, hi, resolution)
    if margin is None:
        margin = MARGIN_CELLS * float(np.max(hi - lo)) / (resolution - 1)
    hidden, surface = observed_space(model, cameras, lo, hi, shape, image_size, margin)
    return enclosed(hidden, surface)


def _upsampled(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """bool `shape`: `mask` [rx, ry, rz] over the same box, nearest lattice point per axis."""
    idx = [np.rint(np.arange(r_fine) * (r_coarse - 1) / max(r_fine - 1, 1)).astype(np.int64)
           for r_fine, r_coarse in zip(shape, mask.shape)]
    return mask[np.ix_(*idx)]


def fill_hidden(volume: np.ndarray, hidden: np.ndarray, value: float) -> np.ndarray:
    """`volume` [Rx, Ry, Rz] with every point that falls in a `hidden` cell ([rx, ry, rz] over
    the same box, any size; nearest lattice point per axis) raised to at least `value`."""
    mask = _upsampled(hidden, volume.shape)
    return np.where(mask, np.maximum(volume, np.float32(value)), volume).astype(volume.dtype)
