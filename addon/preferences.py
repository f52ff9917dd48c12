"""Add-on preferences: which Python runs the engine (installed for the user by Install
Engine, or one found by Detect), on which device, with which backend.

Install Engine and Detect run in other processes and threads; a timer on the main thread
(`_watch`) reads their progress and redraws the preferences, so Blender never waits. Called
from a script (EXEC_DEFAULT) each runs to completion before returning, as Blender's own
operators do."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from . import engine_link, engine_setup, interpreters
from .ngp_engine.service.remote import EngineLocation, LocationError

DEVICES = [("auto", "Auto", "CUDA, then Apple MPS, then the CPU"), ("cpu", "CPU", "The processor"),
           ("cuda", "CUDA", "NVIDIA GPU (AMD GPUs with ROCm's PyTorch too)"), ("mps", "MPS", "Apple GPU")]
# Blender keeps pointers into the strings a dynamic enum's callback returns: hold them.
_DEVICE_ITEMS: list[tuple[str, str, str, int]] = []


def device_items(_self: Any = None, _context: Any = None) -> list[tuple[str, str, str, int]]:
    """The Device list, worded with what the running engine found (its `ready` event):
    "CUDA: NVIDIA H200", "CUDA (not found)", "Auto: cpu, backend cpu". Same identifiers and
    numbers always, so a saved choice stays valid whatever this machine has."""
    info = engine_link.STATE.engine_info
    found: dict[str, str] = info.get("devices") or {}
    items = []
    for number, (ident, name, why) in enumerate(DEVICES):
        label = name
        if found:
            if ident == "auto":
                label = f"Auto: {info.get('device', '?')}, backend {info.get('backend', '?')}"
            elif ident in found:
                label = f"{name}: {found[ident]}"
            else:
                label = f"{name} (not found)"
        items.append((ident, label, why, number))
    _DEVICE_ITEMS[:] = items
    return _DEVICE_ITEMS
BACKENDS = [("auto", "Auto", "The fastest available hash-grid implementation"),
            ("torch", "PyTorch", "Reference implementation (any device)"),
            ("cpu", "CPU kernel", "Compiled CPU kernel (numba)"),
            ("triton", "Triton", "GPU kernels compiled at run time (NVIDIA and AMD GPUs)"),
            ("tcnn", "tiny-cuda-nn", "NVIDIA's fused CUDA kernels")]
# Numbered: Blender stores an enum preference by its number, and "auto" came last (a saved
# Float32 or BFloat16 keeps its meaning).
PRECISIONS = [("auto", "Auto", "The engine's choice: bfloat16 for a NeRF or SDF on a CPU with AMX or "
                               "AVX-512 BF16, float32 for everything else (the default)", 2),
              ("float32", "Float32", "The MLPs in float32 (exact)", 0),
              ("bfloat16", "BFloat16", "The MLPs' products in bfloat16: faster where the CPU has AMX or "
                                       "AVX-512 BF16 (14-25% less time per NeRF step on the two CPUs "
                                       "measured, the same quality per minute or better) or the GPU has bfloat16; emulated and slower "
                                       "elsewhere", 1)]
TORCH_BUILDS = [("AUTO", "Auto", "CUDA when an NVIDIA driver is found, the default wheels on macOS, else the CPU build"),
                ("CPU", "CPU", "The CPU build of PyTorch (download.pytorch.org/whl/cpu)"),
                ("CUDA", "CUDA", "The CUDA build of PyTorch (download.pytorch.org/whl/cu128)"),
                ("DEFAULT", "Package index", "Whatever plain `pip install torch` gives (PyPI, or your pip settings)")]
REQUIREMENTS = Path(__file__).resolve().parent / "ngp_engine" / "requirements.txt"
WATCH_INTERVAL = 0.2


def engine_folder() -> Path:
    """Where Install Engine puts its virtual environment (the extension's user folder)."""
    return Path(bpy.utils.extension_path_user(__package__, path="engine", create=True)) / "venv"


def _has_torch(python: str) -> bool:
    """Whether `python` can find torch, without importing it (a fraction of a second)."""
    if interpreters.same_python(python, sys.executable):
        return importlib.util.find_spec("torch") is not None
    try:
        probe = "import importlib.util,sys; sys.exit(importlib.util.find_spec('torch') is None)"
        return subprocess.run([python, "-c", probe], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def detect_engine_python() -> str:
    """A Python that has torch: the installed environment, $NGP_ENGINE_PYTHON, this process's
    own interpreter (Blender as a module in a virtual environment), then python3/python on
    PATH; "" if none."""
    for python, _origin in interpreters.candidates(engine_setup.installed_python(engine_folder())):
        if _has_torch(python):
            return python
    return ""


def torch_build(prefs: "NGP_AddonPreferences") -> tuple[str, str]:
    """(engine_setup build, why) for the preference."""
    if prefs.torch_build == "AUTO":
        return engine_setup.detect_torch_build()
    return prefs.torch_build.lower(), "chosen in the preferences"


@dataclass
class _Work:
    """What runs in the background for the preferences: at most one install, one detection."""

    install: engine_setup.InstallJob | None = None
    detection: interpreters.Detection | None = None


WORK = _Work()


class NGP_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    engine_location: EnumProperty(
        name="Engine On", default="LOCAL",
        items=[("LOCAL", "This Computer", "The engine runs as a child process of Blender"),
               ("SSH", "Remote (SSH)", "The engine runs on another machine, reached with your SSH key")])
    ssh_host: StringProperty(name="SSH Host", default="",
                             description="user@host[:port], or a Host of your ~/.ssh/config")
    remote_python: StringProperty(name="Remote Python", default="python3",
                                  description="The engine's Python on the remote machine")
    remote_folder: StringProperty(name="Remote Folder", default="~/ngp_runs",
                                  description="Where runs live on the remote machine (the engine touches nothing else)")
    ssh_config: StringProperty(name="SSH Config", subtype="FILE_PATH", default="",
                               description="An ssh_config file to use (empty: ~/.ssh/config)")
    engine_python: StringProperty(
        name="Engine Python", subtype="FILE_PATH",
        description="Python interpreter with PyTorch that runs the training engine "
                    "(empty: the installed engine, or one detected when needed)")
    device: EnumProperty(name="Device", items=device_items, default=0,
                         description="Where the engine trains (the list shows what it found)")
    backend: EnumProperty(name="Backend", items=BACKENDS, default="auto")
    mlp_precision: EnumProperty(name="MLP Precision", items=PRECISIONS, default="auto")
    processes: IntProperty(name="Processes", default=1, min=1, max=64,
                           description="Data-parallel training: this many engine processes split each "
                                       "step's batch and sum their gradients (one per GPU on a "
                                       "multi-GPU machine; on a CPU they share its cores)")
    engine_status: StringProperty(name="Engine status", default="")
    torch_build: EnumProperty(name="PyTorch Build", items=TORCH_BUILDS, default="AUTO",
                              description="Which PyTorch Install Engine downloads")
    torch_index: StringProperty(name="PyTorch Index", default="",
                                description="Package index URL for PyTorch (empty: the build's own)")
    install_status: StringProperty(name="Install status", default="")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "engine_location", expand=True)
        if self.engine_location == "SSH":
            box = layout.box()
            box.prop(self, "ssh_host")
            box.prop(self, "remote_python")
            box.prop(self, "remote_folder")
            box.prop(self, "ssh_config")
        row = layout.row(align=True)
        row.prop(self, "engine_python")
        row.operator("ngp.check_engine", text="Check", icon="CHECKMARK")
        row.operator("ngp.detect_engines", text="Detect", icon="VIEWZOOM")
        if self.engine_status:
            layout.label(text=self.engine_status)
        _draw_detection(layout)
        box = layout.box()
        box.label(text="Install Engine", icon="PACKAGE")
        build, why = torch_build(self)
        row = box.row(align=True)
        row.prop(self, "torch_build")
        row.prop(self, "torch_index", text="Index")
        box.label(text=f"PyTorch {engine_setup.TORCH_VERSION}, {build} build: {why}")
        box.label(text=f"Downloads about {engine_setup.DOWNLOAD_MB[build] + 250} MB into {engine_folder()}")
        job = WORK.install
        if job is not None and job.running:
            box.progress(factor=min(1.0, job.fraction), type="BAR", text=job.stage[:90])
            box.operator("ngp.cancel_install", icon="CANCEL")
        else:
            installed = engine_setup.installed_python(engine_folder())
            box.operator("ngp.install_engine", text="Repair / Upgrade Engine" if installed else "Install Engine",
                         icon="IMPORT")
        if self.install_status:
            box.label(text=self.install_status)
        layout.prop(self, "device")
        layout.prop(self, "backend")
        layout.prop(self, "mlp_precision")
        layout.prop(self, "processes")


def _draw_detection(layout: bpy.types.UILayout) -> None:
    det = WORK.detection
    if det is None:
        return
    box = layout.box()
    found = det.snapshot()
    box.label(text=f"Interpreters: {len(found)} of {det.total} answered" + ("" if det.done else " ..."))
    for it in found:
        row = box.row()
        row.label(text=f"{it.python}  ({it.origin})", icon="CHECKMARK" if it.ok else "ERROR")
        if it.ok:
            row.operator("ngp.use_engine_python", text="Use").python = it.python
        box.label(text="    " + it.summary())
        if not it.ok and it.report.get("fix"):
            box.label(text="    fix: " + it.report["fix"])


def get(context: bpy.types.Context | None = None) -> NGP_AddonPreferences:
    context = context or bpy.context
    return context.preferences.addons[__package__].preferences


def engine_python(context: bpy.types.Context | None = None) -> str:
    """The configured interpreter, detecting (and remembering) one when the field is empty."""
    prefs = get(context)
    if not prefs.engine_python:
        prefs.engine_python = detect_engine_python()
    return bpy.path.abspath(prefs.engine_python) if prefs.engine_python else ""


def location(context: bpy.types.Context | None = None) -> EngineLocation:
    """Where the engine runs, from the preferences (EngineError with one line if unusable)."""
    prefs = get(context)
    if prefs.engine_location != "SSH":
        return EngineLocation()
    if not prefs.ssh_host.strip():
        raise engine_link.EngineError(f"the engine is set to run over SSH but no SSH Host is set ({engine_link.PREFERENCES})")
    try:
        return EngineLocation.parse(prefs.ssh_host, python=prefs.remote_python, root=prefs.remote_folder,
                                    ssh_config=bpy.path.abspath(prefs.ssh_config) if prefs.ssh_config else "")
    except LocationError as e:
        raise engine_link.EngineError(str(e)) from None


def check_engine(prefs: NGP_AddonPreferences) -> bool:
    """Start the engine with the configured Python; the answer goes to engine_status."""
    python = engine_python()
    running = engine_link.client()
    if (running is not None and engine_link.STATE.status not in engine_link.BUSY
            and interpreters.same_python(running.python, python or running.python) is False):
        engine_link.shutdown()                         # a changed Engine Python takes effect now
    try:
        engine_link.ensure_engine(python, location=location())
    except engine_link.EngineError as e:
        prefs.engine_status = str(e)
        return False
    info = engine_link.STATE.engine_info
    name = (info.get("devices") or {}).get(info["device"], "")
    prefs.engine_status = (f"engine {info['engine_version']}: torch {info['torch']} on "
                           f"{info['device']}" + (f" ({name})" if name else "") +
                           f", backend {info.get('backend') or info['backends'][-1]} "
                           f"(of {', '.join(info['backends'])})")
    return True


class NGP_OT_check_engine(bpy.types.Operator):
    """Start the engine with the configured Python and show what it can do"""

    bl_idname = "ngp.check_engine"
    bl_label = "Check Engine"

    def execute(self, context: bpy.types.Context) -> set[str]:
        prefs = get(context)
        if not check_engine(prefs):
            self.report({"ERROR"}, prefs.engine_status)
            return {"CANCELLED"}
        self.report({"INFO"}, prefs.engine_status)
        return {"FINISHED"}


class NGP_OT_install_engine(bpy.types.Operator):
    """Create a Python environment for the engine in the add-on's user folder and install
    PyTorch and the engine's packages into it (downloads about 1 GB; CUDA builds more)"""

    bl_idname = "ngp.install_engine"
    bl_label = "Install Engine"

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        """The UI path: start, and let the timer follow it (headless Blender has no event to
        invoke with, so bpy.ops runs `execute` there)."""
        if start_install(get(context)) is None:
            self.report({"ERROR"}, get(context).install_status)
            return {"CANCELLED"}
        return {"FINISHED"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        job = start_install(get(context), watch_it=False)
        if job is None:
            self.report({"ERROR"}, get(context).install_status)
            return {"CANCELLED"}
        while job.poll():
            time.sleep(WATCH_INTERVAL)
        ok = _install_finished(get(context), job)
        self.report({"INFO"} if ok else {"ERROR"}, get(context).install_status)
        return {"FINISHED"} if ok else {"CANCELLED"}


def start_install(prefs: NGP_AddonPreferences, watch_it: bool = True) -> engine_setup.InstallJob | None:
    """Start the installer process (None, with the reason in install_status, if it cannot);
    with `watch_it` the timer follows it and finishes it."""
    if WORK.install is not None and WORK.install.running:
        prefs.install_status = "Install Engine is already running"
        return None
    if engine_link.STATE.status in engine_link.BUSY:
        prefs.install_status = "a job is running in the engine; stop it before installing the engine again"
        return None
    if not bpy.app.online_access:
        prefs.install_status = ("Install Engine needs the internet, and online access is off "
                                "(Preferences > System > Network > Allow Online Access)")
        return None
    build, _why = torch_build(prefs)
    engine_link.shutdown()        # an engine running from the environment must not hold its files
    try:
        job = engine_setup.InstallJob.start(engine_folder(), REQUIREMENTS, build, prefs.torch_index or None)
    except OSError as e:
        prefs.install_status = f"Install Engine could not start: {e}"
        return None
    WORK.install = job
    prefs.install_status = f"installing (log: {job.log})"
    if watch_it:
        _start_watch()
    return job


def _install_finished(prefs: NGP_AddonPreferences, job: engine_setup.InstallJob) -> bool:
    """Set Engine Python and run Check after a good install; one line either way."""
    WORK.install = None
    if not job.result:
        prefs.install_status = ("Install Engine cancelled; the Engine Python is unchanged" if job.error == "cancelled"
                                else f"Install Engine failed: {job.error} (log: {job.log})")
        return False
    prefs.engine_python = job.result
    ok = check_engine(prefs)
    prefs.install_status = (f"installed in {time.monotonic() - job.started:.0f} s: {job.result}" if ok
                            else f"installed, but the engine does not start: {prefs.engine_status}")
    return ok


class NGP_OT_cancel_install(bpy.types.Operator):
    """Stop Install Engine (the environment is left as it was, to be repaired by the next install)"""

    bl_idname = "ngp.cancel_install"
    bl_label = "Cancel Install"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return WORK.install is not None and WORK.install.running

    def execute(self, context: bpy.types.Context) -> set[str]:
        job = WORK.install
        job.cancel()
        _install_finished(get(context), job)
        return {"FINISHED"}


class NGP_OT_detect_engines(bpy.types.Operator):
    """List the Pythons on this computer that could run the engine, and what each has"""

    bl_idname = "ngp.detect_engines"
    bl_label = "Detect Engine Pythons"

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[str]:
        self._start(context)
        _start_watch()
        return {"FINISHED"}

    def execute(self, context: bpy.types.Context) -> set[str]:
        self._start(context).wait()
        good = [it for it in WORK.detection.snapshot() if it.ok]
        self.report({"INFO"}, f"{len(good)} of {WORK.detection.total} interpreters can run the engine")
        return {"FINISHED"}

    def _start(self, context: bpy.types.Context) -> interpreters.Detection:
        prefs = get(context)
        found = interpreters.candidates(engine_setup.installed_python(engine_folder()),
                                        bpy.path.abspath(prefs.engine_python) if prefs.engine_python else "")
        WORK.detection = interpreters.Detection(found)
        return WORK.detection


class NGP_OT_use_engine_python(bpy.types.Operator):
    """Run the engine with this Python"""

    bl_idname = "ngp.use_engine_python"
    bl_label = "Use This Python"

    python: StringProperty(name="Python")

    def execute(self, context: bpy.types.Context) -> set[str]:
        prefs = get(context)
        if not os.path.isfile(self.python):
            self.report({"ERROR"}, f"{self.python} is not a file")
            return {"CANCELLED"}
        prefs.engine_python = self.python
        ok = check_engine(prefs)
        self.report({"INFO"} if ok else {"ERROR"}, prefs.engine_status)
        return {"FINISHED"} if ok else {"CANCELLED"}


def watch() -> float | None:
    """Timer: follow the install and the detection, redraw the preferences; stops itself
    when neither runs."""
    job = WORK.install
    if job is not None and not job.poll():
        _install_finished(get(), job)
    _redraw_preferences()
    busy = (WORK.install is not None) or (WORK.detection is not None and not WORK.detection.done)
    return WATCH_INTERVAL if busy else None


def _start_watch() -> None:
    if not bpy.app.timers.is_registered(watch):
        bpy.app.timers.register(watch, first_interval=WATCH_INTERVAL)


def _redraw_preferences() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    for window in (wm.windows if wm is not None else ()):
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()


def stop_background_work() -> None:
    """Unregistering: cancel an install, forget the detection."""
    if WORK.install is not None:
        WORK.install.cancel()
    WORK.install = WORK.detection = None
    if bpy.app.timers.is_registered(watch):
        bpy.app.timers.unregister(watch)


classes = (NGP_OT_check_engine, NGP_OT_install_engine, NGP_OT_cancel_install, NGP_OT_detect_engines,
           NGP_OT_use_engine_python, NGP_AddonPreferences)
