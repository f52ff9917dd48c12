"""Instant NGP Fields: train neural fields from the scene in a separate engine process.

Blender side only (bpy, numpy, standard library); the engine (`ngp_engine/`, bundled in the
extension) runs in its own Python with PyTorch and is driven through `engine_link`.
"""
from __future__ import annotations

import atexit

import bpy
from bpy.app.handlers import persistent

from . import engine_link, operators, panels, preferences, properties, render_engine

classes = (*preferences.classes, *properties.classes, *operators.classes, *panels.classes,
           *render_engine.classes)


@persistent
def _on_load_pre(*_args) -> None:
    """A new file: its scene has nothing to do with the running job."""
    engine_link.shutdown()
    engine_link.reset_state()


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    properties.register()
    render_engine.register()
    engine_link.add_handler(operators.on_event)
    bpy.app.handlers.load_pre.append(_on_load_pre)
    atexit.register(engine_link.shutdown)


def unregister() -> None:
    preferences.stop_background_work()
    engine_link.shutdown()
    engine_link.stop_pump()
    engine_link.reset_state()
    atexit.unregister(engine_link.shutdown)
    if _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    render_engine.unregister()
    properties.unregister()
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
