"""What the training cameras saw, on a lattice over a box: free space in front of the
rendered surfaces, the observed surfaces themselves, and the hidden space behind them that
those surfaces enclose.

Why: photographs constrain density only where rays reach. Inside the objects and in the
shadow under them (no camera on the upper hemisphere looks up) the density is whatever the
network extrapolates, and at the mesh threshold that leaves hollow shells with inner walls
and open bottoms, or a skirt of spilled density hanging under the object. Marching cubes
over a density whose enclosed hidden points are filled, and whose other hidden points are
emptied, gives the solid the cameras actually support.

The rule, per lattice point, in two parts:

1. Carving (the classic space-carving rule): a point is *free* when some camera sees
   through it (nearer than its depth - margin, or on a background pixel); *surface* when it
   is not free and lies within the margin of some camera's depth; *hidden* when it is not
   free and some camera sees it behind its surface. Points no camera sees are none of these.
   With the photos' alpha (renders, masked photos), a point on a photo's background is free
   and *carved* whatever the network renders there: early in training the density spills
   past the object (under it, most of all), and the network's own depth maps would call
   that spill surface.
2. Enclosure: a hidden point is filled only when the observed surface bounds it. Walking
   from it along each of the four horizontal directions (+x, -x, +y, -y), the first point
   that is not plain hidden space must be surface, not free or unseen space (nor the edge of
   the box). The other hidden points, and the carved ones, are emptied: outside every
   observed surface, the network's density there is extrapolation, never evidence. The
   surface band itself (within the margin of a rendered depth) keeps the network's density,
   so the visible surface stays where training put it.

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

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ...formats.camera import Camera

OPACITY_SEEN = 0.5       # pixels below this are background: their rays pass through the box
# A photo's alpha below this (bilinear at the point's projection) carves the point: a point
# on the silhouette's edge reads about 0.5, one a pixel outside 0, so a quarter keeps every
# point inside the outline (and the anti-aliased edge) while carving from half a pixel out.
ALPHA_CARVED = 0.25
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


@dataclass(frozen=True)
class Observed:
    """Part 1 of the rule on a lattice: bool arrays of the lattice's shape."""
    hidden: np.ndarray
    """Seen behind some camera's surface, never free, not surface."""
    surface: np.ndarray
    """Within the margin of some camera's surface, never free: the walls of the enclosure
    walks, and left as the network has it."""
    carved: np.ndarray
    """On the background of some photo (its alpha, bilinear at the point's projection, below
    ALPHA_CARVED): outside the object for certain, whatever the network's density says there
    (all False without alpha)."""


def _alpha_at(alpha: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """alpha [H, W] (float in [0, 1]) at image points u, v [N] (pixels, centres at +0.5),
    bilinear; points less than half a pixel inside the border read the border; NaN where
    the point is outside the image."""
    h, w = alpha.shape
    x = np.clip(u - 0.5, 0.0, w - 1.0)
    y = np.clip(v - 0.5, 0.0, h - 1.0)
    x0 = np.minimum(np.floor(x).astype(np.int64), max(w - 2, 0))
    y0 = np.minimum(np.floor(y).astype(np.int64), max(h - 2, 0))
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = x - x0, y - y0
    out = ((1 - fx) * (1 - fy) * alpha[y0, x0] + fx * (1 - fy) * alpha[y0, x1]
           + (1 - fx) * fy * alpha[y1, x0] + fx * fy * alpha[y1, x1])
    return np.where((u >= 0) & (u < w) & (v >= 0) & (v < h), out, np.nan)


def observed_space(model: RendersDepth, cameras: list[Camera], lo: np.ndarray, hi: np.ndarray,
                   shape: tuple[int, int, int], image_size: int, margin: float,
                   alphas: "np.ndarray | None" = None) -> Observed:
    """Part 1 of the rule (module docstring) on the lattice `shape` over lo..hi [3] (world).
    Each camera is rendered at about `image_size` pixels on its longer side (depth and
    opacity); `margin` is in world units. `alphas` [N, H, W] (the training photos' alpha,
    uint8 or float in [0, 1], one per camera at its own size) adds the photos' background
    as free space: the network's opacity there (a spill a brief training leaves) is ignored."""
    pts = lattice_points(lo, hi, shape).astype(np.float64)                # [P, 3]
    free = np.zeros(len(pts), bool)
    carved = np.zeros(len(pts), bool)
    behind = np.zeros(len(pts), bool)
    near = np.zeros(len(pts), bool)
    for k, camera in enumerate(cameras):
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
        if alphas is not None:
            # The photo at its own size: pixel positions scale exactly (`resized` scales the
            # intrinsics per axis; the lens acts on normalised coordinates).
            alpha = alphas[k].astype(np.float32) / (255.0 if alphas.dtype == np.uint8 else 1.0)
            h, w = alpha.shape
            a = _alpha_at(alpha, uv[idx, 0] * (w / small.w), uv[idx, 1] * (h / small.h))
            carved[idx[a < ALPHA_CARVED]] = True
    free |= carved
    surface = near & ~free
    return Observed(hidden=(behind & ~free & ~surface).reshape(shape), surface=surface.reshape(shape),
                    carved=carved.reshape(shape))


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


@dataclass(frozen=True)
class SpaceEdit:
    """What the mesh changes in the density, bool [Rx, Ry, Rz] each (disjoint)."""
    fill: np.ndarray
    """Hidden and enclosed by observed surfaces: solid."""
    empty: np.ndarray
    """Carved by a photo's background, or hidden but not enclosed (the shadow under an
    object): empty, whatever the network extrapolated there."""


def space_edit(model: RendersDepth, cameras: list[Camera], resolution: int = 128,
               image_size: int = 64, margin: float | None = None,
               box: tuple[np.ndarray, np.ndarray] | None = None,
               alphas: "np.ndarray | None" = None) -> SpaceEdit:
    """The rule (module docstring) over the lattice of `box` (world lo [3], hi [3]; default
    the model's scene box) with `resolution` points along its longest side.

    Cameras are rendered at about `image_size` pixels on the longer side (depth and opacity).
    `margin` (world units) keeps both edits away from the visible surface, so the surface
    the density gives stays where it is; default: three lattice cells. `alphas` [N, H, W]:
    the training photos' alpha (see `observed_space`). Points outside every camera's view,
    and the surface shell itself, are left as they are.
    """
    lo, hi = model.scene_box_world() if box is None else box
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    shape = lattice_shape(lo, hi, resolution)
    if margin is None:
        margin = MARGIN_CELLS * float(np.max(hi - lo)) / (resolution - 1)
    seen = observed_space(model, cameras, lo, hi, shape, image_size, margin, alphas)
    inside = enclosed(seen.hidden, seen.surface)
    return SpaceEdit(fill=inside, empty=seen.carved | (seen.hidden & ~inside))


def hidden_space(model: RendersDepth, cameras: list[Camera], resolution: int = 128,
                 image_size: int = 64, margin: float | None = None,
                 box: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """bool [Rx, Ry, Rz]: the points `space_edit` fills (hidden behind the cameras' rendered
    surfaces *and* enclosed by them)."""
    return space_edit(model, cameras, resolution, image_size, margin, box).fill


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


def apply_edit(volume: np.ndarray, edit: SpaceEdit, fill_value: float, empty_value: float = 0.0
               ) -> np.ndarray:
    """`volume` [Rx, Ry, Rz] with `edit` ([rx, ry, rz] over the same box, any size) applied:
    filled points raised to at least `fill_value`, emptied ones lowered to at most
    `empty_value`."""
    volume = fill_hidden(volume, edit.fill, fill_value)
    mask = _upsampled(edit.empty, volume.shape)
    return np.where(mask, np.minimum(volume, np.float32(empty_value)), volume).astype(volume.dtype)
