"""What a trained field gives back: its mesh (asked for by Import Mesh, or by itself when
an SDF finishes) and previews from the active camera, brought into the scene as the
engine's events arrive (`on_event`, on the main thread)."""
from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np

from .. import bounds, engine_link
from ..blender_io import SceneIOError, cameras, images, meshes
from ..engine_link import STATE, EngineError
from ..ngp_engine.errors import UserError
from ..ngp_engine.formats import ply
from ..ngp_engine.service.protocol import ExportMesh, Preview
from .feedback import fail
from .training import request_id


def _need_model(op: bpy.types.Operator) -> bool:
    """Whether this session has a field to ask for results (reported as a failure if not)."""
    if engine_link.client() is None or STATE.status in ("idle", "starting", "uploading"):
        fail(op, "nothing trained in this session yet: train first")
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
            return fail(self, str(e))
        STATE.message = "extracting the mesh"
        return {"FINISHED"}


def _request_mesh(scene: bpy.types.Scene) -> None:
    """Ask the engine for the mesh, remembering where it is to go. A NeRF trained in NGP
    Bounds is cut to the box as it is now (EngineError with one line for a flat box)."""
    box = None
    if STATE.mode == "nerf" and STATE.bounds_run:
        bpy.context.view_layer.update()
        box = bounds.bounds_box()
    try:
        msg = ExportMesh(resolution=scene.ngp.mesh_resolution, id=request_id("mesh"),
                         box=[box[0].tolist(), box[1].tolist()] if box is not None else None)
    except ValueError as e:                  # the protocol's check: a box flat on an axis
        raise EngineError(f"NGP Bounds: {e}") from None
    engine_link.send(msg)
    STATE.mesh_targets[msg.id] = (STATE.mode, STATE.source_object, STATE.run_name)


class NGP_OT_preview(bpy.types.Operator):
    """Render the field from the active camera into the images 'NGP Preview' and 'NGP Depth'"""

    bl_idname = "ngp.preview"
    bl_label = "Preview"

    def execute(self, context: bpy.types.Context) -> set[str]:
        scene = context.scene
        if scene.camera is None or scene.camera.type != "CAMERA":
            return fail(self, "the scene has no active camera to preview from")
        if not _need_model(self):
            return {"CANCELLED"}
        try:
            cam = cameras.pinhole_camera(scene.camera, scene)
        except SceneIOError as e:
            return fail(self, str(e))
        # The camera as rendered; the passes at the preview size, the render's aspect kept.
        s = scene.ngp.preview_resolution / max(cam.w, cam.h)
        res = [max(1, round(cam.w * s)), max(1, round(cam.h * s))]
        try:
            engine_link.send(Preview(camera=cam, passes=["rgb", "depth"], resolution=res,
                                     id=request_id("preview")))
        except EngineError as e:
            return fail(self, str(e))
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
        try:
            import_mesh_file(Path(ev.path), *STATE.mesh_targets.pop(ev.request))   # mode, source, run
        except UserError as e:                         # an unreadable file: one sentence
            STATE.message = str(e)
    elif ev.kind == "pass" and ev.request == STATE.pending.get("preview"):
        arr = np.load(ev.path)
        if ev.info.get("pass") == "rgb":
            linear = np.where(arr <= 0.04045, arr / 12.92, ((arr + 0.055) / 1.055) ** 2.4)
            img = images.image_from_array("NGP Preview", linear)
        else:
            img = images.image_from_array("NGP Depth", arr, is_data=True)
        _show_image(img)


def import_mesh_file(path: Path, mode: str, source_name: str, run_name: str = "") -> bpy.types.Object:
    """Add the engine's mesh to the scene, in the collection of its run (`run_name`, made when
    missing; "" for the scene collection): a NeRF mesh as "NGP Mesh" over the objects it came
    from; an SDF mesh as "<object> SDF", moved beside its source along X. Each import is
    kept (Blender numbers repeats) unless the scene's Replace setting is on, which replaces
    the run's latest import of that name. Smooth shading and a Decimate modifier to the
    target triangle count follow the scene's settings."""
    v, f, colors = ply.read_ply(path)
    scene = bpy.context.scene
    s = scene.ngp
    source = bpy.data.objects.get(source_name) if mode == "sdf" else None
    # Blender names hold 63 bytes: shorten the source's so that " SDF" always fits.
    short = source_name.encode()[:59].decode(errors="ignore")
    name = f"{short} SDF" if mode == "sdf" else "NGP Mesh"
    collection = run_collection(scene, run_name)
    if s.mesh_replace:
        for old in [o for o in collection.objects if o.type == "MESH" and _base_name(o.name) == name]:
            mesh = old.data
            bpy.data.objects.remove(old)
            if mesh.users == 0:
                bpy.data.meshes.remove(mesh)
    obj = meshes.mesh_object(name, v, f, colors, collection)
    if s.mesh_smooth:
        obj.data.shade_smooth()
    else:
        obj.data.shade_flat()
    if 0 < s.mesh_triangles < len(f):
        mod = obj.modifiers.new("NGP Decimate", "DECIMATE")
        mod.decimate_type, mod.ratio = "COLLAPSE", s.mesh_triangles / len(f)
    if source is not None:
        lo, hi = meshes.world_bounds([source])
        obj.location.x += 1.2 * (hi[0] - lo[0])        # vertices are in world units: shift beside
    STATE.message = f"imported {obj.name}: {len(v):,} vertices, {len(f):,} triangles"
    return obj


def _base_name(name: str) -> str:
    """"NGP Mesh.002" -> "NGP Mesh": the name before Blender's numbering of repeats."""
    stem, dot, num = name.rpartition(".")
    return stem if dot and num.isdigit() and len(num) == 3 else name


def run_collection(scene: bpy.types.Scene, run_name: str) -> bpy.types.Collection:
    """The collection a run's results go to (created and linked to the scene when missing)."""
    if not run_name:
        return scene.collection
    coll = bpy.data.collections.get(run_name)
    if coll is None:
        coll = bpy.data.collections.new(run_name)
    if coll.name not in scene.collection.children:
        scene.collection.children.link(coll)
    return coll


def _show_image(img: bpy.types.Image) -> None:
    """Show `img` in the first Image Editor open (none in headless Blender)."""
    wm = getattr(bpy.context, "window_manager", None)
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type == "IMAGE_EDITOR":
                area.spaces.active.image = img
                return
