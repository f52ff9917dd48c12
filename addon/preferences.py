"""Add-on preferences: which Python runs the engine, on which device, with which backend."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import bpy
from bpy.props import EnumProperty, StringProperty

from . import engine_link

DEVICES = [("auto", "Auto", "CUDA, then Apple MPS, then the CPU"), ("cpu", "CPU", ""),
           ("cuda", "CUDA", "NVIDIA GPU"), ("mps", "MPS", "Apple GPU")]
BACKENDS = [("auto", "Auto", "The fastest available hash-grid implementation"),
            ("torch", "PyTorch", "Reference implementation (any device)"),
            ("cpu", "CPU kernel", "Compiled CPU kernel (numba)"),
            ("tcnn", "tiny-cuda-nn", "NVIDIA's fused CUDA kernels")]


def _has_torch(python: str) -> bool:
    """Whether `python` can find torch, without importing it (a fraction of a second)."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        return importlib.util.find_spec("torch") is not None
    try:
        probe = "import importlib.util,sys; sys.exit(importlib.util.find_spec('torch') is None)"
        return subprocess.run([python, "-c", probe], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def detect_engine_python() -> str:
    """A Python that has torch: $NGP_ENGINE_PYTHON, this process's own interpreter (Blender
    as a module in a virtual environment), then python3/python on PATH; "" if none."""
    candidates = [os.environ.get("NGP_ENGINE_PYTHON", ""), sys.executable,
                  shutil.which("python3") or "", shutil.which("python") or ""]
    for c in candidates:
        if c and os.path.isfile(c) and _has_torch(c):
            return c
    return ""


class NGP_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    engine_python: StringProperty(
        name="Engine Python", subtype="FILE_PATH",
        description="Python interpreter with PyTorch that runs the training engine "
                    "(empty: detect one when needed)")
    device: EnumProperty(name="Device", items=DEVICES, default="auto")
    backend: EnumProperty(name="Backend", items=BACKENDS, default="auto")
    engine_status: StringProperty(name="Engine status", default="")

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        row = layout.row(align=True)
        row.prop(self, "engine_python")
        row.operator("ngp.check_engine", text="Check", icon="CHECKMARK")
        layout.prop(self, "device")
        layout.prop(self, "backend")
        if self.engine_status:
            layout.label(text=self.engine_status)


def get(context: bpy.types.Context | None = None) -> NGP_AddonPreferences:
    context = context or bpy.context
    return context.preferences.addons[__package__].preferences


def engine_python(context: bpy.types.Context | None = None) -> str:
    """The configured interpreter, detecting (and remembering) one when the field is empty."""
    prefs = get(context)
    if not prefs.engine_python:
        prefs.engine_python = detect_engine_python()
    return bpy.path.abspath(prefs.engine_python) if prefs.engine_python else ""


class NGP_OT_check_engine(bpy.types.Operator):
    """Start the engine with the configured Python and show what it can do"""

    bl_idname = "ngp.check_engine"
    bl_label = "Check Engine"

    def execute(self, context: bpy.types.Context) -> set[str]:
        prefs = get(context)
        try:
            engine_link.ensure_engine(engine_python(context))
        except engine_link.EngineError as e:
            prefs.engine_status = str(e)
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        info = engine_link.STATE.engine_info
        prefs.engine_status = (f"engine {info['engine_version']}: torch {info['torch']} on "
                               f"{info['device']}, backends {', '.join(info['backends'])}")
        self.report({"INFO"}, prefs.engine_status)
        return {"FINISHED"}


classes = (NGP_OT_check_engine, NGP_AddonPreferences)
