"""A stand-in for Blender's UILayout in headless tests: headless Blender has no UI to draw
into, so panels draw into this, which records what they ask for and checks that it exists
(every prop on its data, every operator registered)."""
from __future__ import annotations


class RecordingLayout:
    """Records ("label" | "prop" | "operator" | "progress", text-or-name) into `log`."""

    def __init__(self, log: list) -> None:
        self.log, self.enabled, self.alert = log, True, False

    def _child(self, *a, **k) -> "RecordingLayout":
        return RecordingLayout(self.log)

    box = row = column = _child

    def label(self, text="", icon="NONE"):
        self.log.append(("label", text))

    def prop(self, data, name, **k):
        assert name in data.bl_rna.properties, name
        self.log.append(("prop", name))

    def operator(self, idname, **k):
        import bpy  # noqa: PLC0415 - only the add-on tests, which run in bpy, use this

        group, name = idname.split(".")
        assert name in dir(getattr(bpy.ops, group)), idname
        self.log.append(("operator", idname))

    def progress(self, factor=0.0, type="BAR", text=""):
        assert 0.0 <= factor <= 1.0
        self.log.append(("progress", text))
