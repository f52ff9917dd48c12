"""Render Camera Rig: a ring of cameras around the selected objects, each view rendered into
a training dataset, one view per step (`stepped`)."""
from __future__ import annotations

import math
import shutil
import time

import bpy
import numpy as np
from mathutils import Vector

from .. import bounds, rig_geometry
from ..blender_io import cameras, meshes
from ..ngp_engine.formats import transforms
from ..properties import scene_dataset_folder
from ..render_engine import ENGINE_ID
from .feedback import fail
from .stepped import SteppedOperator, staging, swap_in

RIG_COLLECTION = "NGP Rig"
RIG_TARGET_TYPES = {"MESH", "CURVE", "SURFACE", "META", "FONT"}


class RigRender:
    """Rendering a rig, one view per `step()`, so that the UI can stay live between views.

    The new cameras go into a collection of their own and the views into a staging folder;
    `finish()` swaps both in (the previous rig and dataset go only then), `cancel()` removes
    them: whichever way it ends, the scene and the dataset folder are as they were or as
    they should be, never half of each. The render settings are the rig's from `start` to
    the end and the user's after."""

    def __init__(self, context: bpy.types.Context, targets: list[bpy.types.Object]) -> None:
        scene = self.scene = context.scene
        self.context = context
        lo, hi = self.lo, self.hi = meshes.world_bounds(targets)
        self.centre, _half = rig_geometry.box_centre_half(lo, hi)
        self.cube = bounds.unit_cube(lo, hi)
        self.folder = scene_dataset_folder(scene)
        self.staging = staging(self.folder)
        self.collection = bpy.data.collections.new(RIG_COLLECTION + " (rendering)")
        scene.collection.children.link(self.collection)
        self.settings = _RigRenderSettings(scene)
        self.cameras = _add_rig_cameras(scene, self.collection, self.centre, lo, hi)
        self.names = [f"ngp_rig_{i:03d}" for i in range(len(self.cameras))]   # what they are called in the end
        self.done = 0
        self.started = time.perf_counter()
        self.longest_view = self.last_render = 0.0

    @property
    def total(self) -> int:
        return len(self.cameras)

    def step(self) -> bool:
        """Render the next view; True while views remain."""
        cam = self.cameras[self.done]
        t0 = time.perf_counter()
        self.scene.camera = cam
        self.context.view_layer.update()
        self.scene.render.filepath = str(self.staging / "images" / f"{self.names[self.done]}.png")
        t1 = time.perf_counter()
        bpy.ops.render.render(write_still=True)
        self.last_render = time.perf_counter() - t1          # Blender's part of the step
        self.longest_view = max(self.longest_view, time.perf_counter() - t0)
        self.done += 1
        return self.done < self.total

    def finish(self) -> str:
        """The views are all rendered: write transforms.json, put the dataset and the rig in
        place of the old ones; returns the message."""
        frames = [(cam, f"images/{name}.png") for cam, name in zip(self.cameras, self.names)]
        doc = cameras.transforms_document(frames, self.scene, self.cube)   # as rendered: before restoring
        self.settings.restore()
        transforms.write_transforms(self.staging / "transforms.json", doc)
        swap_in(self.staging, self.folder)
        _remove_collection(bpy.data.collections.get(RIG_COLLECTION))
        self.collection.name = RIG_COLLECTION
        for cam, name in zip(self.cameras, self.names):
            cam.name = name
        bounds.fit_bounds(self.scene, self.lo, self.hi)
        return f"rendered {self.total} views into {self.folder}"

    def cancel(self) -> None:
        """Back to the scene and the folder as they were before `start`."""
        self.settings.restore()
        _remove_collection(self.collection)
        shutil.rmtree(self.staging, ignore_errors=True)


def _remove_collection(coll: bpy.types.Collection | None) -> None:
    """A rig collection, its cameras and their camera data (once unused); what the user
    already deleted is skipped."""
    if coll is None:
        return
    try:
        objects = list(coll.objects)
    except ReferenceError:
        return
    for obj in objects:
        try:
            data = obj.data
            bpy.data.objects.remove(obj)
            if data is not None and data.users == 0:
                bpy.data.cameras.remove(data)
        except ReferenceError:
            continue
    bpy.data.collections.remove(coll)


class NGP_OT_render_rig(SteppedOperator, bpy.types.Operator):
    """Render a ring of cameras around the selected objects into a training dataset, one
    view at a time (Esc cancels and leaves the scene and the dataset as they were)"""

    bl_idname = "ngp.render_rig"
    bl_label = "Render Camera Rig"
    bl_options = {"REGISTER"}
    what = "rendering the rig"

    def begin(self, context: bpy.types.Context) -> "RigRender | None":
        targets = [o for o in context.selected_objects if o.type in RIG_TARGET_TYPES]
        if not targets:
            fail(self, "select the objects to reconstruct first")
            return None
        if context.scene.render.engine == ENGINE_ID:
            fail(self, "the rig renders the scene itself: choose Cycles or EEVEE as the render engine, not NGP Fields")
            return None
        try:
            return RigRender(context, targets)
        except Exception as e:  # noqa: BLE001 - one line; nothing was added
            fail(self, f"rendering the rig failed: {e}")
            return None


class _RigRenderSettings:
    """The render settings of a rig view (square, RGBA PNG on a transparent film, the rig's
    samples) from construction to `restore()`, which brings the user's settings and camera
    back (once; a second call does nothing)."""

    def __init__(self, scene: bpy.types.Scene) -> None:
        render, s = scene.render, scene.ngp
        self.scene = scene
        self.saved = dict(camera=scene.camera, rx=render.resolution_x, ry=render.resolution_y,
                          pct=render.resolution_percentage, pax=render.pixel_aspect_x,
                          pay=render.pixel_aspect_y, transparent=render.film_transparent,
                          path=render.filepath, fmt=render.image_settings.file_format,
                          mode=render.image_settings.color_mode,
                          samples=scene.cycles.samples if render.engine == "CYCLES" else None)
        render.resolution_x = render.resolution_y = s.rig_resolution
        render.resolution_percentage = 100
        render.pixel_aspect_x = render.pixel_aspect_y = 1.0
        render.film_transparent = True
        render.image_settings.file_format = "PNG"
        render.image_settings.color_mode = "RGBA"
        if render.engine == "CYCLES":
            scene.cycles.samples = s.rig_samples

    def restore(self) -> None:
        saved, self.saved = self.saved, None
        if saved is None:
            return
        scene, render = self.scene, self.scene.render
        scene.camera = saved["camera"]
        render.resolution_x, render.resolution_y = saved["rx"], saved["ry"]
        render.resolution_percentage = saved["pct"]
        render.pixel_aspect_x, render.pixel_aspect_y = saved["pax"], saved["pay"]
        render.film_transparent, render.filepath = saved["transparent"], saved["path"]
        render.image_settings.file_format = saved["fmt"]
        render.image_settings.color_mode = saved["mode"]
        if saved["samples"] is not None:
            scene.cycles.samples = saved["samples"]


def _add_rig_cameras(scene: bpy.types.Scene, rig: bpy.types.Collection, centre: np.ndarray,
                     lo: np.ndarray, hi: np.ndarray) -> list[bpy.types.Object]:
    """The rig's cameras in `rig`, looking at `centre` from the scene's rig settings'
    directions, one shared camera data."""
    s = scene.ngp
    cam_data = bpy.data.cameras.new("NGP Rig Camera")
    cam_data.lens, cam_data.sensor_width, cam_data.sensor_fit = 50.0, 36.0, "HORIZONTAL"
    half_fov = math.atan(0.5 * cam_data.sensor_width / cam_data.lens)
    radius = s.rig_radius or rig_geometry.rig_radius(lo, hi, half_fov)
    cams = []
    for i, d in enumerate(rig_geometry.rig_directions(s.rig_count, s.rig_sphere)):
        cam = bpy.data.objects.new(f"ngp_rig_{i:03d}", cam_data)
        cam.location = Vector(centre + radius * d)
        cam.rotation_euler = (-Vector(d)).to_track_quat("-Z", "Y").to_euler()
        rig.objects.link(cam)
        cams.append(cam)
    return cams


classes = (NGP_OT_render_rig,)
