"""Import Photos: a real capture (a folder of photos or a video) becomes a posed dataset.

The engine finds the camera poses (structure from motion, a `poses` job: minutes, with
progress) and writes a dataset folder: transforms.json, images/, points.ply. When it is
done (`on_event`, on the main thread) the cameras come into a new collection named after
the capture, each with its photo as background image, the sparse points beside them as
"<capture> points", and the dataset becomes the one Train uses (source Photos). The
engine's meshes are in the dataset's world units, which are these cameras' world, so
Import Mesh puts the mesh among them with no transform.

A failed job, or a dataset that cannot be brought in, is one line in the panel and leaves
the scene as it was: nothing is added before everything has been read, and what a Blender
error interrupts is removed again.
"""
from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, StringProperty

from .. import bounds, engine_link, preferences
from ..blender_io import SceneIOError, cameras, images, points
from ..engine_link import BUSY, STATE, EngineError
from ..ngp_engine.errors import UserError
from ..ngp_engine.formats import transforms
from ..ngp_engine.formats.unit_cube import UnitCube
from ..ngp_engine.service.protocol import Poses, Stop
from ..properties import captures_folder
from .feedback import fail
from .training import request_id

PHOTO_EXTS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr", ".bmp", ".webp", ".heic"}
# Folder names that say nothing about the capture: its parent's name is used instead.
GENERIC_NAMES = {"photos", "images", "frames", "pictures", "input", "jpg", "png", "dcim"}


class NGP_OT_import_photos(bpy.types.Operator):
    """Find the camera poses of a folder of photos or of a video in the engine, then add
    the cameras (each showing its photo) and the sparse points, and train on them"""

    bl_idname = "ngp.import_photos"
    bl_label = "Import Photos"

    # The file browser fills these: a video is `filepath`; for a folder of photos, open it
    # (or pick any photo in it) and accept.
    filepath: StringProperty(name="File", subtype="FILE_PATH", options={"SKIP_SAVE"})
    directory: StringProperty(name="Folder", subtype="DIR_PATH", options={"SKIP_SAVE"})
    filter_folder: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    filter_image: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    filter_movie: BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        if STATE.status in BUSY:
            return fail(self, "a job is running in the engine; wait for it or stop it first")
        source = chosen_input(self.filepath, self.directory)
        if source is None:
            return fail(self, "choose a folder of photos or a video file")
        try:
            start_poses(context, source)
        except EngineError as e:
            STATE.status = "error"
            return fail(self, str(e))
        self.report({"INFO"}, STATE.message)
        if not bpy.app.background:
            _watch_later()
        return {"FINISHED"}


def chosen_input(filepath: str, directory: str) -> Path | None:
    """What the user chose in the file browser: a video file, or the folder of photos (a
    photo picked inside it stands for its folder); None when nothing usable was chosen."""
    for raw in (filepath, directory):
        if not raw:
            continue
        path = Path(bpy.path.abspath(raw))
        if path.is_file():
            return path.parent if path.suffix.lower() in PHOTO_EXTS else path
        if path.is_dir():
            return path
    return None


def capture_name(source: Path) -> str:
    """The capture's name: the video's or the folder's (its parent's, for a folder called
    "photos", "images", ...), cut to fit Blender's names with " points" appended."""
    source = source.resolve()
    name = source.stem if source.is_file() else source.name
    if name.lower() in GENERIC_NAMES and source.parent.name:
        name = source.parent.name
    return bpy.path.clean_name(name).encode()[:48].decode(errors="ignore") or "capture"


def fresh_folder(parent: Path, name: str) -> Path:
    """parent/name, or parent/name-2, -3, ...: the first that does not exist (the engine
    creates it, and only once the dataset is complete)."""
    out, n = parent / name, 1
    while out.exists():
        n += 1
        out = parent / f"{name}-{n}"
    return out


def start_poses(context: bpy.types.Context, source: Path) -> None:
    """Start the engine if needed and send it the `poses` job for `source`; EngineError
    with one line when the engine cannot be started or reached."""
    s = context.scene.ngp
    name = capture_name(source)
    out = fresh_folder(captures_folder(context.scene), name)
    STATE.status, STATE.message = "starting", "starting the engine"
    engine_link.ensure_engine(preferences.engine_python(context))   # poses: this machine (remote: not yet)
    STATE.capture = name
    STATE.poses_stage, STATE.poses_done, STATE.poses_total, STATE.poses_registered = "reading", 0, 0, 0
    STATE.artifacts.pop("dataset", None)
    engine_link.send(Poses(input=str(source), out=str(out), matching=s.photos_matching,
                           image_size=s.photos_image_size or None,
                           video_frames=s.photos_video_frames, id=request_id("poses")))
    STATE.status, STATE.message = "posing", f"finding the camera poses of {name}"


def stop_poses() -> None:
    """Ask the engine to cancel the poses job (it answers with done, stopped, or an error
    saying so; either way nothing is left on disk or in the scene)."""
    try:
        engine_link.send(Stop(id=request_id("stop")))
        STATE.message = "stopping: the engine finishes its current step first"
    except EngineError as e:
        STATE.message = str(e)


class NGP_OT_watch_photos(bpy.types.Operator):
    """While camera poses are being found: ESC stops it, and the result goes to the status bar"""

    bl_idname = "ngp.watch_photos"
    bl_label = "Finding Camera Poses"
    bl_options = {"INTERNAL"}

    _timer = None

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        self._timer = context.window_manager.event_timer_add(0.25, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.type == "ESC" and event.value == "PRESS" and STATE.status == "posing":
            stop_poses()
        if STATE.status not in BUSY:
            context.window_manager.event_timer_remove(self._timer)
            self.report({"ERROR"} if STATE.status == "error" else {"INFO"}, STATE.message)
            return {"FINISHED"}
        return {"PASS_THROUGH"}


def _watch_later() -> None:
    """Start the ESC watcher in the main window once the file browser has closed: a modal
    handler added while the browser runs the operator would go with the browser's window."""
    def start() -> None:
        wm = bpy.context.window_manager
        if wm is not None and wm.windows and STATE.status in BUSY:
            with bpy.context.temp_override(window=wm.windows[0]):
                bpy.ops.ngp.watch_photos("INVOKE_DEFAULT")
        return None

    bpy.app.timers.register(start, first_interval=0.2)


# ------------------------------------------------------------------------------ the result
def on_event(ev) -> None:
    """The end of the latest poses job: bring its dataset into the scene (main thread)."""
    if ev.type != "done" or ev.request is None or ev.request != STATE.pending.get("poses"):
        return
    if ev.summary.get("stopped"):
        return                                  # engine_link has said so in the panel
    dataset = ev.summary.get("dataset") or STATE.artifacts.get("dataset")
    scene = bpy.context.scene
    try:
        if not dataset:
            raise UserError("the engine reported no dataset folder")
        coll, cloud, n_distorted, cube = import_capture(Path(dataset), STATE.capture or "capture", scene)
    except (UserError, SceneIOError, OSError, ValueError, RuntimeError) as e:
        STATE.status = "error"
        lines = str(e).strip().splitlines()
        STATE.message = f"importing the dataset failed: {lines[0] if lines else type(e).__name__}"
        return
    s = scene.ngp
    s.photos_dataset, s.source = str(Path(dataset)), "PHOTOS"     # what Train uses from now on
    bounds.fit_bounds(scene, *bounds.box_of_unit_cube(cube))      # the box the engine fitted to the points
    n_img = ev.summary.get("n_images", "?")
    n_cams = sum(obj.type == "CAMERA" for obj in coll.objects)
    n_pts = len(cloud.data.vertices) if cloud is not None else 0
    STATE.message = f"{coll.name}: {n_cams} of {n_img} photos posed, {n_pts:,} points"
    if n_distorted:
        # Blender cameras are pinholes: the lens distortion the engine trains with is not shown.
        STATE.message += " (lens distortion not shown in Blender)"
        print(f"[instant-ngp-fields] {coll.name}: {n_distorted} cameras have lens distortion; "
              "Blender shows their pinhole part, the engine trains with the full lens")


def import_capture(dataset: Path, name: str, scene: bpy.types.Scene
                   ) -> tuple[bpy.types.Collection, bpy.types.Object | None, int, UnitCube]:
    """The dataset's cameras (photo behind each) and sparse points in a new collection
    `name` of `scene`; returns (collection, points object or None, how many cameras have a
    lens distortion Blender cannot show, the dataset's unit cube). Everything is read first; a failure while
    building removes what was built and puts the scene's render size back."""
    data = transforms.read_transforms(dataset, image_size=images.image_size)
    ply = dataset / "points.ply"
    cloud = points.read_point_cloud(ply) if ply.is_file() else None
    render = scene.render
    saved = (render.resolution_x, render.resolution_y, render.resolution_percentage,
             render.pixel_aspect_x, render.pixel_aspect_y)
    coll = bpy.data.collections.new(name)
    try:
        scene.collection.children.link(coll)
        cameras.create_cameras([(fr.camera, fr.file_path) for fr in data.frames], scene, coll,
                               photos=[fr.image for fr in data.frames])
        obj = None
        if cloud is not None and len(cloud[0]):
            obj = points.point_cloud_object(f"{coll.name} points", cloud[0], cloud[1], coll)
    except Exception:
        _remove_collection(coll)
        (render.resolution_x, render.resolution_y, render.resolution_percentage,
         render.pixel_aspect_x, render.pixel_aspect_y) = saved
        raise
    return coll, obj, cameras.distorted([fr.camera for fr in data.frames]), data.transform


def _remove_collection(coll: bpy.types.Collection) -> None:
    """Remove `coll`, its objects and their data (cameras, meshes) and the photos they
    alone used."""
    for obj in list(coll.objects):
        data = obj.data
        photos = [bg.image for bg in getattr(data, "background_images", ()) if bg.image is not None]
        bpy.data.objects.remove(obj)
        if isinstance(data, bpy.types.Camera) and data.users == 0:
            bpy.data.cameras.remove(data)
        elif isinstance(data, bpy.types.Mesh) and data.users == 0:
            bpy.data.meshes.remove(data)
        for img in photos:
            if img.users == 0:
                bpy.data.images.remove(img)
    bpy.data.collections.remove(coll)


classes = (NGP_OT_import_photos, NGP_OT_watch_photos)
