"""Making a training dataset from the scene: render a rig of cameras around the selected
objects, export the scene's own cameras with their images, or bring a dataset's cameras in.

Each leaves the scene as it found it on failure: render settings changed for the rig are
restored, and objects are only added once everything they need exists."""
from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bpy
import numpy as np
from bpy.props import StringProperty
from bpy_extras.io_utils import ImportHelper
from mathutils import Vector

from .. import rig_geometry
from ..blender_io import SceneIOError, cameras, images, meshes
from ..engine_link import STATE
from ..ngp_engine.errors import UserError
from ..ngp_engine.formats import transforms
from ..ngp_engine.formats.unit_cube import UnitCube
from ..properties import scene_dataset_folder
from .feedback import fail

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff")
RIG_COLLECTION = "NGP Rig"
RIG_TARGET_TYPES = {"MESH", "CURVE", "SURFACE", "META", "FONT"}


class NGP_OT_render_rig(bpy.types.Operator):
    """Render a ring of cameras around the selected objects into a training dataset"""

    bl_idname = "ngp.render_rig"
    bl_label = "Render Camera Rig"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        scene = context.scene
        targets = [o for o in context.selected_objects if o.type in RIG_TARGET_TYPES]
        if not targets:
            return fail(self, "select the objects to reconstruct first")
        lo, hi = meshes.world_bounds(targets)
        centre, half = rig_geometry.box_centre_half(lo, hi)
        folder = scene_dataset_folder(scene)
        (folder / "images").mkdir(parents=True, exist_ok=True)
        rig = _empty_rig_collection(scene)
        try:
            with _rig_render_settings(scene):
                frames = _render_views(context, rig, folder, centre, lo, hi)
                doc = cameras.transforms_document(frames, scene, _unit_cube(centre, half))
        except (SceneIOError, UserError, RuntimeError) as e:
            return fail(self, f"rendering the rig failed: {e}")
        transforms.write_transforms(folder / "transforms.json", doc)
        STATE.message = f"rendered {len(frames)} views into {folder}"
        self.report({"INFO"}, STATE.message)
        return {"FINISHED"}


def _empty_rig_collection(scene: bpy.types.Scene) -> bpy.types.Collection:
    """The rig's own collection, linked to the scene, with the previous rig's cameras (and
    their camera data, once unused) removed: nothing else is ever in it."""
    old = bpy.data.collections.get(RIG_COLLECTION)
    if old is not None:
        for obj in list(old.objects):
            data = obj.data
            bpy.data.objects.remove(obj)
            if data is not None and data.users == 0:
                bpy.data.cameras.remove(data)
    rig = old or bpy.data.collections.new(RIG_COLLECTION)
    if rig.name not in scene.collection.children:
        scene.collection.children.link(rig)
    return rig


@contextmanager
def _rig_render_settings(scene: bpy.types.Scene) -> Iterator[None]:
    """The render settings of a rig view (square, RGBA PNG on a transparent film, the rig's
    samples) for the duration of the block; the user's settings and camera come back after,
    whatever happens inside."""
    render, s = scene.render, scene.ngp
    saved = dict(camera=scene.camera, rx=render.resolution_x, ry=render.resolution_y,
                 pct=render.resolution_percentage, pax=render.pixel_aspect_x, pay=render.pixel_aspect_y,
                 transparent=render.film_transparent, path=render.filepath,
                 fmt=render.image_settings.file_format, mode=render.image_settings.color_mode,
                 samples=scene.cycles.samples if render.engine == "CYCLES" else None)
    try:
        render.resolution_x = render.resolution_y = s.rig_resolution
        render.resolution_percentage = 100
        render.pixel_aspect_x = render.pixel_aspect_y = 1.0
        render.film_transparent = True
        render.image_settings.file_format = "PNG"
        render.image_settings.color_mode = "RGBA"
        if render.engine == "CYCLES":
            scene.cycles.samples = s.rig_samples
        yield
    finally:
        scene.camera = saved["camera"]
        render.resolution_x, render.resolution_y = saved["rx"], saved["ry"]
        render.resolution_percentage = saved["pct"]
        render.pixel_aspect_x, render.pixel_aspect_y = saved["pax"], saved["pay"]
        render.film_transparent, render.filepath = saved["transparent"], saved["path"]
        render.image_settings.file_format = saved["fmt"]
        render.image_settings.color_mode = saved["mode"]
        if saved["samples"] is not None:
            scene.cycles.samples = saved["samples"]


def _render_views(context: bpy.types.Context, rig: bpy.types.Collection, folder: Path,
                  centre: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list[tuple[bpy.types.Object, str]]:
    """Add the rig's cameras to `rig`, looking at `centre` from the scene's rig settings'
    directions, and render each into folder/images; returns (camera, image path relative to
    folder) pairs."""
    scene, s = context.scene, context.scene.ngp
    cam_data = bpy.data.cameras.new("NGP Rig Camera")
    cam_data.lens, cam_data.sensor_width, cam_data.sensor_fit = 50.0, 36.0, "HORIZONTAL"
    half_fov = math.atan(0.5 * cam_data.sensor_width / cam_data.lens)
    radius = s.rig_radius or rig_geometry.rig_radius(lo, hi, half_fov)
    frames = []
    for i, d in enumerate(rig_geometry.rig_directions(s.rig_count, s.rig_sphere)):
        cam = bpy.data.objects.new(f"ngp_rig_{i:03d}", cam_data)
        cam.location = Vector(centre + radius * d)
        cam.rotation_euler = (-Vector(d)).to_track_quat("-Z", "Y").to_euler()
        rig.objects.link(cam)
        scene.camera = cam
        context.view_layer.update()
        scene.render.filepath = str(folder / "images" / f"{cam.name}.png")
        bpy.ops.render.render(write_still=True)
        frames.append((cam, f"images/{cam.name}.png"))
    return frames


class NGP_OT_export_cameras(bpy.types.Operator):
    """Export the cameras of the chosen collection and their images as a training dataset"""

    bl_idname = "ngp.export_cameras"
    bl_label = "Export Cameras"

    def execute(self, context: bpy.types.Context) -> set[str]:
        scene, s = context.scene, context.scene.ngp
        if s.camera_collection is None:
            return fail(self, "choose the collection that holds the cameras")
        cams = sorted((o for o in s.camera_collection.all_objects if o.type == "CAMERA"), key=lambda o: o.name)
        if not cams:
            return fail(self, f"collection '{s.camera_collection.name}' has no cameras")
        folder_in = Path(bpy.path.abspath(s.image_folder)) if s.image_folder else None
        w, h = cameras.render_size(scene)
        sources = []
        for cam in cams:
            src = _camera_image(cam, folder_in)
            if src is None:
                return fail(self, f"camera '{cam.name}' has no background image and no image named "
                                  f"'{cam.name}' in the image folder")
            try:
                size = images.image_size(src)
            except ValueError:
                return fail(self, f"image {src} of camera '{cam.name}' cannot be read")
            if size != (w, h):
                return fail(self, f"image {src.name} is {size[0]}x{size[1]} but the render size is {w}x{h}")
            sources.append((cam, src))
        folder = scene_dataset_folder(scene)
        (folder / "images").mkdir(parents=True, exist_ok=True)
        frames = []
        for cam, src in sources:
            rel = f"images/{cam.name}{src.suffix.lower()}"
            shutil.copyfile(src, folder / rel)
            frames.append((cam, rel))
        targets = [o for o in context.selected_objects if o.type == "MESH"]
        try:
            centre, half = _scene_box(targets, cams, scene)
            doc = cameras.transforms_document(frames, scene, _unit_cube(centre, half))
        except (SceneIOError, UserError) as e:
            return fail(self, str(e))
        transforms.write_transforms(folder / "transforms.json", doc)
        STATE.message = f"exported {len(frames)} cameras into {folder}"
        self.report({"INFO"}, STATE.message)
        return {"FINISHED"}


def _camera_image(cam: bpy.types.Object, folder: Path | None) -> Path | None:
    """The camera's image: its first background image on disk, else the file named like the
    camera in `folder` (any of IMAGE_EXTS, either case)."""
    for bg in cam.data.background_images:
        if bg.image is not None and bg.image.filepath:
            path = Path(bpy.path.abspath(bg.image.filepath))
            if path.is_file():
                return path
    if folder is not None:
        for ext in IMAGE_EXTS:
            for name in (cam.name + ext, cam.name + ext.upper()):
                if (folder / name).is_file():
                    return folder / name
    return None


def _unit_cube(centre: np.ndarray, half: float) -> UnitCube:
    """The engine's unit cube around the box centre +- half, with the dataset's margin."""
    return UnitCube.around(centre, rig_geometry.scene_cube_side(half))


def _scene_box(targets: list[bpy.types.Object], cams: list[bpy.types.Object],
               scene: bpy.types.Scene) -> tuple[np.ndarray, float]:
    """Centre and half-extent of what the dataset shows: the selected meshes' box, else where
    the cameras look (their view axes' meeting point) and the half-width they see there."""
    if targets:
        return rig_geometry.box_centre_half(*meshes.world_bounds(targets))
    origins = np.array([cam.matrix_world.translation for cam in cams])          # [N, 3]
    forwards = np.array([-cam.matrix_world.to_3x3().col[2] for cam in cams])    # cameras look down -Z
    angle_x = cameras.camera_intrinsics(cams[0], scene)["camera_angle_x"]
    return rig_geometry.cameras_focus(origins, forwards, angle_x)


class NGP_OT_import_transforms(bpy.types.Operator, ImportHelper):
    """Import the cameras of an instant-ngp or NeRF-synthetic transforms file"""

    bl_idname = "ngp.import_transforms"
    bl_label = "Import transforms.json"
    filename_ext = ".json"
    filter_glob: StringProperty(default="*.json", options={"HIDDEN"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            dataset = transforms.read_transforms(Path(self.filepath), image_size=images.image_size,
                                                 images_required=False)
        except UserError as e:
            return fail(self, str(e))
        coll = bpy.data.collections.new(Path(self.filepath).stem)
        context.scene.collection.children.link(coll)
        cameras.create_cameras([(fr.camera, fr.file_path) for fr in dataset.frames], context.scene, coll)
        self.report({"INFO"}, f"imported {len(dataset.frames)} cameras into '{coll.name}'")
        return {"FINISHED"}
