"""Blender add-on side (bpy, stdlib and numpy only; never torch).

Nothing is registered yet: the N-panel, operators and the engine client arrive with the
Blender-extension issue. Until then this package registers no classes, so nothing in
Blender pretends to work.
"""

classes: tuple = ()


def register() -> None:
    """Register the add-on's classes (none yet)."""
    import bpy  # noqa: PLC0415 (only inside Blender)

    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    """Unregister in reverse order."""
    import bpy  # noqa: PLC0415

    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
