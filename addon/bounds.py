"""The "NGP Bounds" object: the box that is reconstructed, shown in the viewport and edited
like any object.

An empty drawn as a wire cube (never rendered, never a rig target), fitted when a dataset is
made (to the selected objects, to where the cameras look, or for imported photos to the box
the engine fitted to their sparse points). Its world box (the cube's eight
corners through the object's matrix, so moving, scaling and even parenting count) is what
Train writes into the dataset's transforms.json (scale and offset of the unit cube, with the
usual margin) and what Import Mesh cuts the mesh to."""
from __future__ import annotations

import bpy
import numpy as np
from mathutils import Vector

from . import rig_geometry
from .ngp_engine.formats.unit_cube import UnitCube

BOUNDS_NAME = "NGP Bounds"


def get_bounds() -> bpy.types.Object | None:
    obj = bpy.data.objects.get(BOUNDS_NAME)
    return obj if obj is not None and obj.type == "EMPTY" else None


def fit_bounds(scene: bpy.types.Scene, lo: np.ndarray, hi: np.ndarray) -> bpy.types.Object:
    """Create the bounds object (or reuse it) and fit it to the world box lo..hi [3]."""
    obj = get_bounds()
    if obj is None:
        obj = bpy.data.objects.new(BOUNDS_NAME, None)
        obj.empty_display_type = "CUBE"
        obj.empty_display_size = 1.0
        obj.hide_render = True
        obj.lock_rotation = (True, True, True)      # an axis-aligned box: rotation would mean nothing
        scene.collection.objects.link(obj)
    elif obj.name not in scene.objects:
        scene.collection.objects.link(obj)
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    # Whatever the user did to a reused one (parent, rotation, deltas, display size) is undone:
    # the fit is exact.
    obj.parent = None
    obj.empty_display_size = 1.0
    obj.rotation_mode = "XYZ"
    obj.rotation_euler = (0.0, 0.0, 0.0)
    obj.delta_location, obj.delta_rotation_euler, obj.delta_scale = (0, 0, 0), (0, 0, 0), (1, 1, 1)
    obj.location = Vector((0.5 * (lo + hi)).tolist())
    obj.scale = Vector(np.maximum(0.5 * (hi - lo), 1e-4).tolist())   # the cube is 2 x display size
    return obj


def bounds_box(obj: bpy.types.Object | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """World (lo [3], hi [3]) of the bounds object, or None when there is none: the
    axis-aligned box around its cube's corners (rotated, it is larger than the cube drawn).
    Reads matrix_world: callers update the view layer first when a script may have moved it."""
    obj = obj or get_bounds()
    if obj is None:
        return None
    size = obj.empty_display_size
    mw = obj.matrix_world
    corners = np.array([list(mw @ Vector((x * size, y * size, z * size)))
                        for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
    return corners.min(axis=0), corners.max(axis=0)


def unit_cube(lo: np.ndarray, hi: np.ndarray) -> UnitCube:
    """The engine's unit cube around the box lo..hi, with the dataset's margin."""
    centre, half = rig_geometry.box_centre_half(lo, hi)
    return UnitCube.around(centre, rig_geometry.scene_cube_side(half))


def box_of_unit_cube(cube: UnitCube) -> tuple[np.ndarray, np.ndarray]:
    """The box whose `unit_cube` is `cube` (a dataset the engine made: its cube without the
    margin), so that bounds fitted to it leave the dataset as it is until the user moves them."""
    centre = cube.to_world(np.full(3, 0.5))
    half = 0.5 / cube.world_to_unit / rig_geometry.RIG_MARGIN
    return centre - half, centre + half
