"""User actions: make a dataset (scene cameras or a rendered rig), import cameras, train,
stop, import the mesh, preview. Each reports one clear sentence on failure and leaves the
scene as it found it (settings changed for rendering are restored, objects are only added
once everything they need exists)."""
from __future__ import annotations

import itertools
import math
import shutil
from pathlib import Path

import bpy
import numpy as np
from bpy.props import StringProperty
from bpy_extras.io_utils import ImportHelper
from mathutils import Vector

from . import engine_link, preferences, scene_io
from .engine_link import STATE, EngineError
from .ngp_engine.service.protocol import Camera, ExportMesh, Preview, Stop, Train
from .properties import run_folder
from .scene_io import SceneIOError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff")
RIG_COLLECTION = "NGP Rig"
_ids = itertools.count(1)


def _budget(s: bpy.types.PropertyGroup) -> dict:
    """The Train request's budget fields from the scene settings: seconds or steps."""
    return {"steps": s.train_steps} if s.train_budget == "STEPS" else {"seconds": s.train_seconds}


def _request_id(kind: str) -> str:
    rid = f"{kind}-{next(_ids)}"
    STATE.pending[kind] = rid
    return rid


def _fail(op: bpy.types.Operator, message: str) -> set[str]:
    STATE.message = message
    op.report({"ERROR"}, message)
    return {"CANCELLED"}


def data_folder(scene: bpy.types.Scene) -> Path:
    return run_folder(scene) / "data"


# ---------------------------------------------------------------------------------- datasets
def objects_bounds(objects) -> tuple[Vector, Vector]:
    """World-space bounding box (min corner, max corner) of `objects`."""
    pts = [obj.matrix_world @ Vector(c) for obj in objects for c in obj.bound_box]
    lo = Vector((min(p[i] for p in pts) for i in range(3)))
    hi = Vector((max(p[i] for p in pts) for i in range(3)))
    return lo, hi


def objects_box(objects) -> tuple[Vector, float]:
    """Centre and half of the largest side of the world bounding box of `objects`."""
    lo, hi = objects_bounds(objects)
    return (lo + hi) / 2, max(hi - lo) / 2


def rig_directions(n: int, sphere: bool) -> np.ndarray:
    """n unit vectors, evenly spread (Fibonacci spiral) over the sphere or upper hemisphere
    (elevation 5..85 degrees)."""
    z_lo, z_hi = (-0.95, 0.95) if sphere else (math.sin(math.radians(5)), math.sin(math.radians(85)))
    z = z_lo + (z_hi - z_lo) * (np.arange(n) + 0.5) / n
    az = np.arange(n) * math.pi * (3.0 - math.sqrt(5.0))
    r = np.sqrt(1.0 - z * z)
    return np.stack([r * np.cos(az), r * np.sin(az), z], axis=1)


class NGP_OT_render_rig(bpy.types.Operator):
    """Render a ring of cameras around the selected objects into a training dataset"""

    bl_idname = "ngp.render_rig"
    bl_label = "Render Camera Rig"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        scene, s = context.scene, context.scene.ngp
        targets = [o for o in context.selected_objects if o.type in {"MESH", "CURVE", "SURFACE", "META", "FONT"}]
        if not targets:
            return _fail(self, "select the objects to reconstruct first")
        centre, half = objects_box(targets)
        folder = data_folder(scene)
        images = folder / "images"
        images.mkdir(parents=True, exist_ok=True)
        # Remove the previous rig (cameras only, in its own collection).
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
        render = scene.render
        saved = dict(camera=scene.camera, rx=render.resolution_x, ry=render.resolution_y,
                     pct=render.resolution_percentage, pax=render.pixel_aspect_x, pay=render.pixel_aspect_y,
                     transparent=render.film_transparent, path=render.filepath,
                     fmt=render.image_settings.file_format, mode=render.image_settings.color_mode,
                     samples=scene.cycles.samples if render.engine == "CYCLES" else None)
        frames = []
        try:
            render.resolution_x = render.resolution_y = s.rig_resolution
            render.resolution_percentage = 100
            render.pixel_aspect_x = render.pixel_aspect_y = 1.0
            render.film_transparent = True
            render.image_settings.file_format = "PNG"
            render.image_settings.color_mode = "RGBA"
            if render.engine == "CYCLES":
                scene.cycles.samples = s.rig_samples
            cam_data = bpy.data.cameras.new("NGP Rig Camera")
            cam_data.lens, cam_data.sensor_width, cam_data.sensor_fit = 50.0, 36.0, "HORIZONTAL"
            half_fov = math.atan(0.5 * cam_data.sensor_width / cam_data.lens)
            lo, hi = objects_bounds(targets)
            # Far enough that the box's bounding sphere fits every view, with a 10% margin.
            radius = s.rig_radius or 1.1 * 0.5 * (hi - lo).length / math.sin(half_fov)
            for i, d in enumerate(rig_directions(s.rig_count, s.rig_sphere)):
                cam = bpy.data.objects.new(f"ngp_rig_{i:03d}", cam_data)
                cam.location = centre + radius * Vector(d)
                cam.rotation_euler = (-Vector(d)).to_track_quat("-Z", "Y").to_euler()
                rig.objects.link(cam)
                scene.camera = cam
                context.view_layer.update()
                render.filepath = str(images / f"{cam.name}.png")
                bpy.ops.render.render(write_still=True)
                frames.append((cam, f"images/{cam.name}.png"))
            doc = scene_io.transforms_document(frames, scene, tuple(centre), half)
        except (SceneIOError, RuntimeError) as e:
            return _fail(self, f"rendering the rig failed: {e}")
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
        scene_io.write_json_atomic(folder / "transforms.json", doc)
        STATE.message = f"rendered {len(frames)} views into {folder}"
        self.report({"INFO"}, STATE.message)
        return {"FINISHED"}


class NGP_OT_export_cameras(bpy.types.Operator):
    """Export the cameras of the chosen collection and their images as a training dataset"""

    bl_idname = "ngp.export_cameras"
    bl_label = "Export Cameras"

    def execute(self, context: bpy.types.Context) -> set[str]:
        scene, s = context.scene, context.scene.ngp
        if s.camera_collection is None:
            return _fail(self, "choose the collection that holds the cameras")
        cams = sorted((o for o in s.camera_collection.all_objects if o.type == "CAMERA"), key=lambda o: o.name)
        if not cams:
            return _fail(self, f"collection '{s.camera_collection.name}' has no cameras")
        folder_in = Path(bpy.path.abspath(s.image_folder)) if s.image_folder else None
        w, h = scene_io.render_size(scene)
        sources = []
        for cam in cams:
            src = _camera_image(cam, folder_in)
            if src is None:
                return _fail(self, f"camera '{cam.name}' has no background image and no image named "
                                   f"'{cam.name}' in the image folder")
            size = _image_size(src)
            if size is None:
                return _fail(self, f"image {src} of camera '{cam.name}' cannot be read")
            if size != (w, h):
                return _fail(self, f"image {src.name} is {size[0]}x{size[1]} but the render size is {w}x{h}")
            sources.append((cam, src))
        folder = data_folder(scene)
        (folder / "images").mkdir(parents=True, exist_ok=True)
        frames = []
        for cam, src in sources:
            rel = f"images/{cam.name}{src.suffix.lower()}"
            shutil.copyfile(src, folder / rel)
            frames.append((cam, rel))
        targets = [o for o in context.selected_objects if o.type == "MESH"]
        centre, half = objects_box(targets) if targets else _cameras_focus(cams, scene)
        try:
            doc = scene_io.transforms_document(frames, scene, tuple(centre), half)
        except SceneIOError as e:
            return _fail(self, str(e))
        scene_io.write_json_atomic(folder / "transforms.json", doc)
        STATE.message = f"exported {len(frames)} cameras into {folder}"
        self.report({"INFO"}, STATE.message)
        return {"FINISHED"}


def _camera_image(cam: bpy.types.Object, folder: Path | None) -> Path | None:
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


def _image_size(path: Path) -> tuple[int, int] | None:
    try:
        img = bpy.data.images.load(str(path), check_existing=False)
    except RuntimeError:
        return None
    try:
        size = tuple(img.size)
        return (int(size[0]), int(size[1])) if size[0] and size[1] else None
    finally:
        bpy.data.images.remove(img)


def _cameras_focus(cams, scene) -> tuple[Vector, float]:
    """Where the cameras look (least-squares meeting point of their axes) and the half-width
    they see there, when no object is selected to bound the scene."""
    a = np.zeros((3, 3))
    b = np.zeros(3)
    origins, dists = [], []
    for cam in cams:
        o = np.array(cam.matrix_world.translation)
        d = -np.array(cam.matrix_world.to_3x3().col[2].normalized())
        p = np.eye(3) - np.outer(d, d)
        a += p
        b += p @ o
        origins.append(o)
    centre = np.linalg.lstsq(a, b, rcond=None)[0]
    dists = [np.linalg.norm(o - centre) for o in origins]
    k = scene_io.camera_intrinsics(cams[0], scene)
    return Vector(centre), float(np.median(dists) * math.tan(0.5 * k["camera_angle_x"]))


class NGP_OT_import_transforms(bpy.types.Operator, ImportHelper):
    """Import the cameras of an instant-ngp or NeRF-synthetic transforms file"""

    bl_idname = "ngp.import_transforms"
    bl_label = "Import transforms.json"
    filename_ext = ".json"
    filter_glob: StringProperty(default="*.json", options={"HIDDEN"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            frames = scene_io.read_transforms(Path(self.filepath))
        except SceneIOError as e:
            return _fail(self, str(e))
        coll = bpy.data.collections.new(Path(self.filepath).stem)
        context.scene.collection.children.link(coll)
        scene_io.create_cameras(frames, context.scene, coll)
        self.report({"INFO"}, f"imported {len(frames)} cameras into '{coll.name}'")
        return {"FINISHED"}


# ---------------------------------------------------------------------------------- training
class _TrainingOperator:
    """Starts a job in the engine and, in the UI, stays modal until it ends (ESC stops it),
    so its result lands in the status bar. Headless Blender has no event loop: there the
    operator returns at once and the caller pumps engine_link."""

    _timer = None

    def start(self, context: bpy.types.Context, mode: str, data: Path, run_dir: Path) -> set[str]:
        s = context.scene.ngp
        prefs = preferences.get(context)
        STATE.status, STATE.message = "starting", "starting the engine"
        try:
            engine_link.ensure_engine(preferences.engine_python(context))
            STATE.mode, STATE.run_dir = mode, str(run_dir)
            STATE.step, STATE.fraction, STATE.psnr, STATE.eta_seconds = 0, 0.0, None, None
            STATE.artifacts.clear()
            engine_link.send(Train(mode=mode, data=str(data), run_dir=STATE.run_dir, preset=s.preset,
                                   **_budget(s), device=prefs.device,
                                   checkpoint_every=30.0, id=_request_id("train")))
        except EngineError as e:
            STATE.status = "error"
            return _fail(self, str(e))
        STATE.status, STATE.message = "training", f"training ({mode})"
        if context.window_manager.windows and not bpy.app.background:
            self._timer = context.window_manager.event_timer_add(0.25, window=context.window)
            context.window_manager.modal_handler_add(self)
            return {"RUNNING_MODAL"}
        return {"FINISHED"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.type == "ESC":
            _send_stop()
        if STATE.status not in ("starting", "training"):
            context.window_manager.event_timer_remove(self._timer)
            level = {"ERROR"} if STATE.status == "error" else {"INFO"}
            self.report(level, STATE.message)
            return {"FINISHED"}
        return {"PASS_THROUGH"}


class NGP_OT_train(_TrainingOperator, bpy.types.Operator):
    """Train a NeRF on the exported dataset in the engine process (Blender stays responsive)"""

    bl_idname = "ngp.train"
    bl_label = "Train"

    def execute(self, context: bpy.types.Context) -> set[str]:
        scene = context.scene
        if STATE.status in ("starting", "training"):
            return _fail(self, "training is already running; stop it first")
        data = data_folder(scene)
        if not (data / "transforms.json").is_file():
            return _fail(self, "no dataset yet: render a camera rig or export cameras first")
        STATE.source_object = ""
        return self.start(context, "nerf", data, run_folder(scene) / "run")


class NGP_OT_train_sdf(_TrainingOperator, bpy.types.Operator):
    """Learn a signed distance field of the active mesh object (modifiers applied) and, when
    it is trained, import its marching-cubes mesh beside the object"""

    bl_idname = "ngp.train_sdf"
    bl_label = "Train SDF from Active Mesh"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        obj = context.active_object
        if obj is None or obj.type != "MESH":
            cls.poll_message_set("select a mesh object (it becomes the active object)")
            return False
        return True

    def execute(self, context: bpy.types.Context) -> set[str]:
        if STATE.status in ("starting", "training"):
            return _fail(self, "training is already running; stop it first")
        obj = context.active_object
        v, f = scene_io.object_triangles(obj, context.evaluated_depsgraph_get())
        if len(f) == 0:
            return _fail(self, f"{obj.name}: the mesh has no faces to learn a distance field of")
        folder = run_folder(context.scene) / "sdf" / bpy.path.clean_name(obj.name)
        data = folder / "input.ply"
        scene_io.write_ply(data, v, f)
        STATE.source_object = obj.name
        return self.start(context, "sdf", data, folder / "run")


def _send_stop() -> None:
    try:
        engine_link.send(Stop(id=_request_id("stop")))
    except EngineError as e:
        STATE.message = str(e)


class NGP_OT_stop(bpy.types.Operator):
    """Stop training; the engine keeps a checkpoint of where it got to"""

    bl_idname = "ngp.stop"
    bl_label = "Stop"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return STATE.status == "training"

    def execute(self, context: bpy.types.Context) -> set[str]:
        _send_stop()
        return {"FINISHED"}


# ---------------------------------------------------------------------------------- results
def _need_model(op: bpy.types.Operator) -> bool:
    if engine_link.client() is None or STATE.status in ("idle", "starting"):
        _fail(op, "nothing trained in this session yet: train first")
        return False
    return True


class NGP_OT_import_mesh(bpy.types.Operator):
    """Extract the reconstructed mesh and add it to the scene, over the source objects"""

    bl_idname = "ngp.import_mesh"
    bl_label = "Import Mesh"

    def execute(self, context: bpy.types.Context) -> set[str]:
        if not _need_model(self):
            return {"CANCELLED"}
        try:
            _request_mesh(context.scene)
        except EngineError as e:
            return _fail(self, str(e))
        STATE.message = "extracting the mesh"
        return {"FINISHED"}


def _request_mesh(scene: bpy.types.Scene) -> None:
    """Ask the engine for the mesh, remembering where it is to go."""
    rid = _request_id("mesh")
    STATE.mesh_targets[rid] = (STATE.mode, STATE.source_object)
    engine_link.send(ExportMesh(resolution=scene.ngp.mesh_resolution, id=rid))


class NGP_OT_preview(bpy.types.Operator):
    """Render the field from the active camera into the images 'NGP Preview' and 'NGP Depth'"""

    bl_idname = "ngp.preview"
    bl_label = "Preview"

    def execute(self, context: bpy.types.Context) -> set[str]:
        scene = context.scene
        if scene.camera is None or scene.camera.type != "CAMERA":
            return _fail(self, "the scene has no active camera to preview from")
        if not _need_model(self):
            return {"CANCELLED"}
        try:
            k = scene_io.camera_intrinsics(scene.camera, scene)
        except SceneIOError as e:
            return _fail(self, str(e))
        long_side = scene.ngp.preview_resolution
        s = long_side / max(k["w"], k["h"])
        res = [max(1, round(k["w"] * s)), max(1, round(k["h"] * s))]
        cam = Camera(transform_matrix=scene_io.camera_to_world(scene.camera), w=k["w"], h=k["h"],
                     fl_x=k["fl_x"], fl_y=k["fl_y"], cx=k["cx"], cy=k["cy"])
        try:
            engine_link.send(Preview(camera=cam, passes=["rgb", "depth"], resolution=res,
                                     id=_request_id("preview")))
        except EngineError as e:
            return _fail(self, str(e))
        return {"FINISHED"}


def on_event(ev) -> None:
    """Engine events that change the scene (main thread, from the pump)."""
    if (ev.type == "done" and STATE.mode == "sdf" and ev.request == STATE.pending.get("train")
            and not ev.summary.get("stopped")):
        # A finished SDF comes into the scene by itself: that is what the button promised.
        try:
            _request_mesh(bpy.context.scene)
            STATE.message = "extracting the SDF mesh"
        except EngineError as e:
            STATE.message = str(e)
        return
    if ev.type != "artifact":
        return
    if ev.kind == "mesh" and ev.path.endswith(".ply") and ev.request in STATE.mesh_targets:
        import_mesh_file(Path(ev.path), *STATE.mesh_targets.pop(ev.request))
    elif ev.kind == "pass" and ev.request == STATE.pending.get("preview"):
        arr = np.load(ev.path)
        if ev.info.get("pass") == "rgb":
            linear = np.where(arr <= 0.04045, arr / 12.92, ((arr + 0.055) / 1.055) ** 2.4)
            img = scene_io.image_from_array("NGP Preview", linear)
        else:
            img = scene_io.image_from_array("NGP Depth", arr, is_data=True)
        _show_image(img)


def import_mesh_file(path: Path, mode: str, source_name: str) -> bpy.types.Object:
    """Add the engine's mesh to the scene: a NeRF mesh as "NGP Mesh" over the objects it came
    from; an SDF mesh as "<object> SDF", moved beside its source along X. An earlier import
    of the same name is replaced."""
    v, f, colors = scene_io.read_ply(path)
    scene = bpy.context.scene
    source = bpy.data.objects.get(source_name) if mode == "sdf" else None
    # Blender names hold 63 bytes: shorten the source's so that " SDF" always fits.
    short = source_name.encode()[:59].decode(errors="ignore")
    name = f"{short} SDF" if mode == "sdf" else "NGP Mesh"
    old = bpy.data.objects.get(name)
    if old is not None:
        mesh = old.data
        bpy.data.objects.remove(old)
        if mesh.users == 0:
            bpy.data.meshes.remove(mesh)
    obj = scene_io.mesh_object(name, v, f, colors, scene.collection)
    if source is not None:
        lo, hi = objects_bounds([source])
        obj.location.x += 1.2 * (hi.x - lo.x)          # vertices are in world units: shift beside
    STATE.message = f"imported {name}: {len(v):,} vertices, {len(f):,} triangles"
    return obj


def _show_image(img: bpy.types.Image) -> None:
    wm = getattr(bpy.context, "window_manager", None)
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR":
                area.spaces.active.image = img
                return


classes = (NGP_OT_render_rig, NGP_OT_export_cameras, NGP_OT_import_transforms, NGP_OT_train,
           NGP_OT_train_sdf, NGP_OT_stop, NGP_OT_import_mesh, NGP_OT_preview)
