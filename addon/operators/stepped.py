"""Operators that build something one piece per step (a rig view, a copied photo), so that
Blender's UI stays live: from the UI (INVOKE_DEFAULT) one step per timer event, progress in
the panel and the status bar, Esc or Cancel to stop; from a script (EXEC_DEFAULT) every step,
then return, as Blender's own operators do.

A job has `total`, `done`, `step() -> more to do`, `finish() -> message` and `cancel()`;
whichever way it ends, the scene and the dataset folder are as they were or as they should
be. Datasets are built in a staging folder (`staging`) and swapped in at the end (`swap_in`).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import bpy

from ..engine_link import STATE
from .feedback import fail


class SteppedOperator:
    """Mixin for a bpy Operator: subclasses give `what` ("rendering the rig") and `begin(context)
    -> job or None` (None after reporting why)."""

    what = "working"
    _job = None
    _timer = None

    def begin(self, context: bpy.types.Context):
        raise NotImplementedError

    def _begin(self, context: bpy.types.Context):
        if STATE.job_status:
            fail(self, f"{STATE.job_what} is still under way; wait for it or cancel it first")
            return None
        return self.begin(context)

    def _end(self, job, error: Exception | None = None) -> set[str]:
        """Finish (or, after an error, cancel) the job; one line either way."""
        if error is None:
            try:
                STATE.message = job.finish()
            except Exception as e:  # noqa: BLE001 - reported in one line, the scene put back
                error = e
        STATE.job_status = ""
        if error is not None:
            job.cancel()
            return fail(self, f"{self.what} failed: {error}")
        self.report({"INFO"}, STATE.message)
        return {"FINISHED"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        """From a script: every step, then return."""
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
        """From the UI: one step per timer event."""
        job = self._begin(context)
        if job is None:
            return {"CANCELLED"}
        self._job = job
        STATE.job_status, STATE.job_what = "running", self.what
        STATE.job_done, STATE.job_total = 0, job.total
        STATE.message = f"{self.what}: 0 of {job.total}"
        self._timer = context.window_manager.event_timer_add(0.01, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        job = self._job
        if event.type == "ESC" or STATE.job_status == "cancelling":
            self._stop_timer(context)
            job.cancel()
            STATE.job_status = ""
            STATE.message = f"{self.what} cancelled; nothing changed"
            self.report({"INFO"}, STATE.message)
            return {"CANCELLED"}
        if event.type == "Z" and (event.ctrl or event.oskey):
            return {"RUNNING_MODAL"}             # no undo under a job adding to the scene
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            more = job.step()
        except Exception as e:  # noqa: BLE001 - e.g. a camera the user deleted meanwhile
            self._stop_timer(context)
            return self._end(job, e)
        STATE.job_done = job.done
        STATE.message = f"{self.what}: {job.done} of {job.total}"
        context.workspace.status_text_set(STATE.message)
        if more:
            return {"RUNNING_MODAL"}
        self._stop_timer(context)
        return self._end(job)

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender ends the modal operator itself (a file is loaded, the window closes)."""
        self._stop_timer(context)
        STATE.job_status = ""
        if self._job is not None:
            self._job.cancel()

    def _stop_timer(self, context: bpy.types.Context) -> None:
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
        if context.workspace is not None:
            context.workspace.status_text_set(None)


class NGP_OT_cancel_job(bpy.types.Operator):
    """Stop rendering the rig or exporting the cameras: the scene and the dataset stay as they were"""

    bl_idname = "ngp.cancel_job"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return STATE.job_status == "running"

    def execute(self, context: bpy.types.Context) -> set[str]:
        STATE.job_status = "cancelling"            # the modal operator sees it at its next event
        return {"FINISHED"}


def staging(folder: Path) -> Path:
    """An empty `<folder>.partial/images` to build a dataset in; returns `<folder>.partial`."""
    built = folder.with_name(folder.name + ".partial")
    shutil.rmtree(built, ignore_errors=True)
    (built / "images").mkdir(parents=True)
    return built


def swap_in(built: Path, folder: Path) -> None:
    """The finished dataset in `built` becomes `folder`; the previous one goes only now."""
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    try:
        built.rename(folder)
    except OSError:
        if old.exists():
            old.rename(folder)                # the previous dataset back in its place
        raise
    shutil.rmtree(old, ignore_errors=True)
