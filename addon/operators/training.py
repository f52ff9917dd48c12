"""Training in the engine: a NeRF on the scene's dataset, an SDF of the active mesh, and
stopping either. Requests carry ids, so that the events answering them are told apart from
those of an earlier request of the same kind."""
from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import bpy

from .. import bounds, engine_link, preferences
from ..blender_io import meshes
from ..engine_link import STATE, EngineError
from ..ngp_engine.errors import UserError
from ..ngp_engine.formats import ply, transforms
from ..ngp_engine.service.protocol import Stop, Train
from ..properties import data_folder, run_folder
from .feedback import fail

_ids = itertools.count(1)


def request_id(kind: str) -> str:
    """A fresh id for a request of `kind` (train, stop, mesh, preview), remembered as the
    latest of its kind in STATE.pending."""
    rid = f"{kind}-{next(_ids)}"
    STATE.pending[kind] = rid
    return rid


def next_run_name() -> str:
    """"NGP Run <n>", n one more than the highest run collection in the file."""
    numbers = [int(c.name[len("NGP Run "):]) for c in bpy.data.collections
               if c.name.startswith("NGP Run ") and c.name[len("NGP Run "):].isdigit()]
    return f"NGP Run {max(numbers, default=0) + 1}"


def _budget(s: bpy.types.PropertyGroup) -> dict:
    """The Train request's budget fields from the scene settings: seconds or steps."""
    return {"steps": s.train_steps} if s.train_budget == "STEPS" else {"seconds": s.train_seconds}


class _TrainingOperator:
    """Starts a job in the engine and, in the UI, stays modal until it ends (ESC stops it),
    so its result lands in the status bar. Headless Blender has no event loop: there the
    operator returns at once and the caller pumps engine_link."""

    _timer = None

    def start(self, context: bpy.types.Context, mode: str, data: Path, run_dir: Path,
              resume: Path | None = None) -> set[str]:
        """Send the Train request: the scene's preset and budget, or with `resume` the
        checkpoint's own configuration and no further steps (the field is only loaded); the
        preferences' device, backend, MLP precision and processes."""
        s = context.scene.ngp
        prefs = preferences.get(context)
        STATE.status, STATE.message = "starting", "starting the engine"
        try:
            engine_link.ensure_engine(preferences.engine_python(context), location=preferences.location(context))
            STATE.mode, STATE.run_dir, STATE.run_name = mode, str(run_dir), next_run_name()
            STATE.step, STATE.fraction, STATE.psnr, STATE.eta_seconds = 0, 0.0, None, None
            STATE.artifacts.clear()
            how = {"steps": 0, "resume": str(resume)} if resume else {"preset": s.preset, **_budget(s)}
            # A resumed run keeps its checkpoint's configuration: only the backend may change.
            engine_link.send(Train(mode=mode, data=str(data), run_dir=STATE.run_dir, **how, device=prefs.device,
                                   checkpoint_every=30.0, processes=1 if resume else prefs.processes,
                                   backend=prefs.backend,
                                   # auto: the job's configuration decides (bfloat16 for a NeRF or
                                   # SDF on a CPU with bfloat16 units, else float32)
                                   mlp_precision=None if resume or prefs.mlp_precision == "auto"
                                   else prefs.mlp_precision,
                                   id=request_id("train")))
        except EngineError as e:
            STATE.status = "error"
            return fail(self, str(e))
        STATE.status = "training"
        STATE.message = f"loading the trained field from {resume}" if resume else f"training ({mode})"
        if context.window_manager.windows and not bpy.app.background:
            self._timer = context.window_manager.event_timer_add(0.25, window=context.window)
            context.window_manager.modal_handler_add(self)
            return {"RUNNING_MODAL"}
        return {"FINISHED"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        if event.type == "ESC":
            _send_stop()
        if STATE.status not in ("starting", "uploading", "training"):
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
        if STATE.status in ("starting", "uploading", "training"):
            return fail(self, "training is already running; stop it first")
        data = data_folder(scene)
        if not (data / "transforms.json").is_file():
            return fail(self, "no dataset yet: render a camera rig, export cameras or import photos first")
        STATE.source_object = ""
        uses_bounds = bounds.get_bounds() is not None
        if uses_bounds:
            try:
                _box_into_dataset(context, data / "transforms.json")
            except (OSError, ValueError, UserError) as e:
                return fail(self, f"{data / 'transforms.json'}: cannot apply the NGP Bounds box ({e})")
        result = self.start(context, "nerf", data, run_folder(scene) / "run")
        STATE.bounds_run = uses_bounds and STATE.status == "training"
        return result


class NGP_OT_load_field(_TrainingOperator, bpy.types.Operator):
    """Load the NeRF this file trained last (its run's checkpoint) into the engine, to preview,
    mesh or render it without training again (after reopening the file, say)"""

    bl_idname = "ngp.load_field"
    bl_label = "Load Trained Field"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return STATE.status not in engine_link.BUSY

    def execute(self, context: bpy.types.Context) -> set[str]:
        scene = context.scene
        run = run_folder(scene, create=False) / "run"
        checkpoint = run / "checkpoint.pt"
        try:
            remote = preferences.location(context).remote      # a remote run's checkpoint stays there
        except EngineError as e:
            return fail(self, str(e))
        if not checkpoint.is_file() and not remote:
            return fail(self, f"nothing trained for this file yet ({checkpoint} does not exist): train first")
        data = data_folder(scene)
        if not (data / "transforms.json").is_file():
            return fail(self, f"the dataset the field was trained on is gone ({data / 'transforms.json'})")
        STATE.source_object = ""
        result = self.start(context, "nerf", data, run, resume=checkpoint)
        STATE.bounds_run = bounds.get_bounds() is not None and STATE.status == "training"
        return result


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
            return fail(self, "training is already running; stop it first")
        obj = context.active_object
        v, f = meshes.object_triangles(obj, context.evaluated_depsgraph_get())
        if len(f) == 0:
            return fail(self, f"{obj.name}: the mesh has no faces to learn a distance field of")
        folder = run_folder(context.scene) / "sdf" / bpy.path.clean_name(obj.name)
        data = folder / "input.ply"
        ply.write_ply(data, v, f)
        STATE.source_object = obj.name
        return self.start(context, "sdf", data, folder / "run")


def _box_into_dataset(context: bpy.types.Context, path: Path) -> None:
    """The NGP Bounds object, as the user left it, becomes the dataset's unit cube (scale and
    offset of its transforms.json, rewritten only when they differ; aabb_scale stays)."""
    context.view_layer.update()                  # a script may just have moved it
    box = bounds.bounds_box()
    if box is None:
        return
    cube = bounds.unit_cube(*box)
    doc = json.loads(path.read_text())
    same = (isinstance(doc.get("scale"), (int, float)) and math.isclose(doc["scale"], cube.world_to_unit, rel_tol=1e-6)
            and isinstance(doc.get("offset"), list) and len(doc["offset"]) == 3
            and all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(doc["offset"], cube.offset)))
    if same:                                     # Blender keeps float32: never compare exactly
        return
    doc["scale"], doc["offset"] = cube.world_to_unit, list(cube.offset)
    transforms.write_transforms(path, doc)


def _send_stop() -> None:
    try:
        engine_link.send(Stop(id=request_id("stop")))
    except EngineError as e:
        STATE.message = str(e)


class NGP_OT_stop(bpy.types.Operator):
    """Stop the engine's job: training keeps a checkpoint of where it got to; finding camera
    poses adds nothing to the scene"""

    bl_idname = "ngp.stop"
    bl_label = "Stop"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return STATE.status in ("uploading", "training", "posing")

    def execute(self, context: bpy.types.Context) -> set[str]:
        if STATE.status == "posing":
            from .photos import stop_poses  # noqa: PLC0415  (photos imports this module)
            stop_poses()
        else:
            _send_stop()
        return {"FINISHED"}
