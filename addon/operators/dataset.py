"""Making a training dataset from the scene's own cameras (Export Cameras, one photo copied
per step: `stepped`), bringing a dataset's cameras in (Import transforms.json), and fitting
the NGP Bounds box. (Render Camera Rig lives in `rig`.)

Each leaves the scene as it found it on failure: objects are only added, and datasets only
swapped in, once everything they need exists."""
from __future__ import annotations

import shutil
from pathlib import Path

import bpy
import numpy as np
from bpy.props import StringProperty
from bpy_extras.io_utils import ImportHelper

from .. import bounds, rig_geometry
from ..blender_io import SceneIOError, cameras, images, meshes
from ..engine_link import STATE
from ..ngp_engine.errors import UserError
from ..ngp_engine.formats import transforms
from ..properties import scene_dataset_folder
from .feedback import fail
from .rig import RIG_TARGET_TYPES
from .stepped import SteppedOperator, staging, swap_in

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff")


class CameraExport:
    """Copying the cameras' photos into a staging dataset, one per `step()`; `finish()` writes
    transforms.json, swaps the dataset in and fits NGP Bounds."""

    def __init__(self, scene: bpy.types.Scene, sources: list, doc: dict, box: tuple) -> None:
        self.scene, self.sources, self.doc, self.box = scene, sources, doc, box
        self.folder = scene_dataset_folder(scene)
        self.staging = staging(self.folder)
        self.done = 0

    @property
    def total(self) -> int:
        return len(self.sources)

    def step(self) -> bool:
        src, rel = self.sources[self.done]
        shutil.copyfile(src, self.staging / rel)
        self.done += 1
        return self.done < self.total

    def finish(self) -> str:
        transforms.write_transforms(self.staging / "transforms.json", self.doc)
        swap_in(self.staging, self.folder)
        bounds.fit_bounds(self.scene, *self.box)
        return f"exported {self.total} cameras into {self.folder}"

    def cancel(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


class NGP_OT_export_cameras(SteppedOperator, bpy.types.Operator):
    """Export the cameras of the chosen collection and their images as a training dataset"""

    bl_idname = "ngp.export_cameras"
    bl_label = "Export Cameras"
    what = "exporting the cameras"

    def begin(self, context: bpy.types.Context) -> CameraExport | None:
        """Every check first (cameras, their images, sizes, the box): a failure changes nothing."""
        scene, s = context.scene, context.scene.ngp
        if s.camera_collection is None:
            fail(self, "choose the collection that holds the cameras")
            return None
        cams = sorted((o for o in s.camera_collection.all_objects if o.type == "CAMERA"), key=lambda o: o.name)
        if not cams:
            fail(self, f"collection '{s.camera_collection.name}' has no cameras")
            return None
        folder_in = Path(bpy.path.abspath(s.image_folder)) if s.image_folder else None
        w, h = cameras.render_size(scene)
        sources = []
        for cam in cams:
            src = _camera_image(cam, folder_in)
            if src is None:
                fail(self, f"camera '{cam.name}' has no background image and no image named "
                           f"'{cam.name}' in the image folder")
                return None
            try:
                size = images.image_size(src)
            except ValueError:
                fail(self, f"image {src} of camera '{cam.name}' cannot be read")
                return None
            if size != (w, h):
                fail(self, f"image {src.name} is {size[0]}x{size[1]} but the render size is {w}x{h}")
                return None
            sources.append((cam, src))
        frames = [(cam, f"images/{cam.name}{src.suffix.lower()}") for cam, src in sources]
        targets = [o for o in context.selected_objects if o.type == "MESH"]
        try:
            centre, half = _scene_box(targets, cams, scene)
            doc = cameras.transforms_document(frames, scene, bounds.unit_cube(centre - half, centre + half))
            return CameraExport(scene, [(src, rel) for (_c, src), (_c2, rel) in zip(sources, frames)], doc,
                                (centre - half, centre + half))
        except (SceneIOError, UserError, OSError) as e:
            fail(self, str(e))
            return None


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


class NGP_OT_fit_bounds(bpy.types.Operator):
    """Fit the NGP Bounds box (what is trained and meshed) to the selected objects"""

    bl_idname = "ngp.fit_bounds"
    bl_label = "Fit Bounds to Selection"
    bl_options = {"REGISTER", "UNDO"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        targets = [o for o in context.selected_objects if o.type in RIG_TARGET_TYPES]
        if not targets:
            return fail(self, "select the objects the bounds should hold first")
        lo, hi = meshes.world_bounds(targets)
        bounds.fit_bounds(context.scene, lo, hi)
        size = hi - lo
        STATE.message = f"NGP Bounds fitted: {size[0]:.3g} x {size[1]:.3g} x {size[2]:.3g}"
        self.report({"INFO"}, STATE.message)
        return {"FINISHED"}


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
