"""Making a training dataset from the scene: render a rig of cameras around the selected
objects, export the scene's own cameras with their images, or bring a dataset's cameras in.

Each leaves the scene as it found it on failure: render settings changed for the rig are
restored, and objects are only added once everything they need exists."""
from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import bpy
import numpy as np
from bpy.props import StringProperty
from bpy_extras.io_utils import ImportHelper
from mathutils import Vector

from .. import bounds, rig_geometry
from ..render_engine import ENGINE_ID
from ..blender_io import SceneIOError, cameras, images, meshes
from ..engine_link import STATE
from ..ngp_engine.errors import UserError
from ..ngp_engine.formats import transforms
from ..properties import scene_dataset_folder
from .feedback import fail

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff")
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
        self.staging = _staging(self.folder)
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
        STATE.rig_done, STATE.rig_total = self.done, self.total
        STATE.message = f"rendering the rig: view {self.done} of {self.total}"
        return self.done < self.total

    def finish(self) -> str:
        """The views are all rendered: write transforms.json, put the dataset and the rig in
        place of the old ones; returns the message."""
        frames = [(cam, f"images/{name}.png") for cam, name in zip(self.cameras, self.names)]
        doc = cameras.transforms_document(frames, self.scene, self.cube)   # as rendered: before restoring
        self.settings.restore()
        transforms.write_transforms(self.staging / "transforms.json", doc)
        _swap_in(self.staging, self.folder)
        _remove_collection(bpy.data.collections.get(RIG_COLLECTION))
        self.collection.name = RIG_COLLECTION
        for cam, name in zip(self.cameras, self.names):
            cam.name = name
        bounds.fit_bounds(self.scene, self.lo, self.hi)
        STATE.rig_status = ""
        return f"rendered {self.total} views into {self.folder}"

    def cancel(self) -> None:
        """Back to the scene and the folder as they were before `start`."""
        self.settings.restore()
        _remove_collection(self.collection)
        shutil.rmtree(self.staging, ignore_errors=True)
        STATE.rig_status = ""


def _staging(folder: Path) -> Path:
    """An empty `<folder>.partial/images` to build a dataset in; returns `<folder>.partial`."""
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)
    return staging


def _swap_in(staging: Path, folder: Path) -> None:
    """The finished dataset in `staging` becomes `folder`; the previous one goes only now."""
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    try:
        staging.rename(folder)
    except OSError:
        if old.exists():
            old.rename(folder)                # the previous dataset back in its place
        raise
    shutil.rmtree(old, ignore_errors=True)


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


class NGP_OT_render_rig(bpy.types.Operator):
    """Render a ring of cameras around the selected objects into a training dataset, one
    view at a time (Esc cancels and leaves the scene and the dataset as they were)"""

    bl_idname = "ngp.render_rig"
    bl_label = "Render Camera Rig"
    bl_options = {"REGISTER"}

    _job: RigRender | None = None
    _timer = None

    def _begin(self, context: bpy.types.Context) -> RigRender | None:
        targets = [o for o in context.selected_objects if o.type in RIG_TARGET_TYPES]
        if not targets:
            fail(self, "select the objects to reconstruct first")
            return None
        if STATE.rig_status:
            fail(self, "a rig is already rendering")
            return None
        if context.scene.render.engine == ENGINE_ID:
            fail(self, "the rig renders the scene itself: choose Cycles or EEVEE as the render engine, not NGP Fields")
            return None
        try:
            return RigRender(context, targets)
        except (SceneIOError, UserError, RuntimeError, OSError) as e:
            fail(self, f"rendering the rig failed: {e}")
            return None

    def _end(self, job: RigRender, error: Exception | None = None) -> set[str]:
        """Finish (or, after an error, cancel) the job; one line either way."""
        if error is None:
            try:
                STATE.message = job.finish()
            except Exception as e:  # noqa: BLE001 - reported in one line, the scene put back
                error = e
        if error is not None:
            job.cancel()
            return fail(self, f"rendering the rig failed: {error}")
        self.report({"INFO"}, STATE.message)
        return {"FINISHED"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        """From a script: every view, then return (as Blender's own operators do)."""
        job = self._begin(context)
        if job is None:
            return {"CANCELLED"}
        try:
            while job.step():
                pass
        except Exception as e:  # noqa: BLE001 - whatever stopped it, the scene goes back as it was
            return self._end(job, e)
        return self._end(job)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        """From the UI: one view per timer event, progress in the panel and status bar."""
        job = self._begin(context)
        if job is None:
            return {"CANCELLED"}
        self._job = job
        STATE.rig_status, STATE.message = "rendering", f"rendering the rig: view 0 of {job.total}"
        STATE.rig_done, STATE.rig_total = 0, job.total
        self._timer = context.window_manager.event_timer_add(0.01, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        job = self._job
        if event.type == "ESC" or STATE.rig_status == "cancelling":
            self._stop_timer(context)
            job.cancel()
            STATE.message = "rendering the rig cancelled; nothing changed"
            self.report({"INFO"}, STATE.message)
            return {"CANCELLED"}
        if event.type == "Z" and (event.ctrl or event.oskey):
            return {"RUNNING_MODAL"}             # no undo under a rig being built (its cameras would go)
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            more = job.step()
        except Exception as e:  # noqa: BLE001 - e.g. a rig camera the user deleted meanwhile
            self._stop_timer(context)
            return self._end(job, e)
        context.workspace.status_text_set(STATE.message)
        if more:
            return {"RUNNING_MODAL"}
        self._stop_timer(context)
        return self._end(job)

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender ends the modal operator itself (a file is loaded, the window closes)."""
        self._stop_timer(context)
        if self._job is not None:
            self._job.cancel()

    def _stop_timer(self, context: bpy.types.Context) -> None:
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        if context.workspace is not None:
            context.workspace.status_text_set(None)


class NGP_OT_cancel_rig(bpy.types.Operator):
    """Stop rendering the rig: the scene and the dataset stay as they were"""

    bl_idname = "ngp.cancel_rig"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return STATE.rig_status == "rendering"

    def execute(self, context: bpy.types.Context) -> set[str]:
        STATE.rig_status = "cancelling"                   # the modal operator sees it at its next event
        return {"FINISHED"}


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
        frames = [(cam, f"images/{cam.name}{src.suffix.lower()}") for cam, src in sources]
        targets = [o for o in context.selected_objects if o.type == "MESH"]
        try:
            centre, half = _scene_box(targets, cams, scene)
            doc = cameras.transforms_document(frames, scene, bounds.unit_cube(centre - half, centre + half))
        except (SceneIOError, UserError) as e:
            return fail(self, str(e))
        folder = scene_dataset_folder(scene)
        staging = _staging(folder)
        try:
            for (cam, rel), (_cam, src) in zip(frames, sources):
                shutil.copyfile(src, staging / rel)
            transforms.write_transforms(staging / "transforms.json", doc)
            _swap_in(staging, folder)
        except OSError as e:
            shutil.rmtree(staging, ignore_errors=True)
            return fail(self, f"exporting the cameras failed: {e}")
        bounds.fit_bounds(scene, centre - half, centre + half)
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
