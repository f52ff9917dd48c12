"""What the add-on tests share: installing the built extension into real bpy, and a
stand-in for Blender's UILayout (headless Blender has no UI to draw into, so panels draw into
`RecordingLayout`, which records what they ask for and checks that it exists: every prop on
its data, every operator registered). Imported only by tests that already imported bpy."""
from __future__ import annotations

import contextlib
import importlib
import sys
import time
from pathlib import Path
from typing import Iterator

PKG_ID = "instant_ngp_fields"


@contextlib.contextmanager
def installed_extension(tmp: Path, repo_name: str) -> Iterator[tuple[object, str, int]]:
    """Build the zip, install and enable it in a temporary user repository `repo_name`
    (factory settings first: a clean slate), point its Engine Python at this interpreter;
    yields (add-on module, module name, repository index); uninstalls at the end."""
    import addon_utils  # noqa: PLC0415 - ships with bpy
    import bpy  # noqa: PLC0415

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import build_extension  # noqa: PLC0415

    zip_path = build_extension.build(tmp / "dist")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    module_name = build_extension.install_in_blender(zip_path, tmp / "repo", repo_name)
    repo = bpy.context.preferences.extensions.repos[repo_name]
    repo_index = list(bpy.context.preferences.extensions.repos).index(repo)
    assert module_name in {m.__name__ for m in addon_utils.modules()}
    mod = importlib.import_module(module_name)
    bpy.context.preferences.addons[module_name].preferences.engine_python = sys.executable
    try:
        yield mod, module_name, repo_index
    finally:
        mod.engine_link.shutdown()
        bpy.ops.extensions.package_uninstall(repo_index=repo_index, pkg_id=PKG_ID)
        bpy.context.preferences.extensions.repos.remove(repo)


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


def scene_snapshot(*folders: Path) -> dict:
    """What a failing or cancelled operator must leave as it was: the objects, collections,
    cameras, meshes and images of the file, the render settings, the active camera, and the
    files (names and bytes) under `folders`."""
    import bpy  # noqa: PLC0415

    scene, render = bpy.context.scene, bpy.context.scene.render
    files = {}
    for folder in folders:
        for p in sorted(Path(folder).rglob("*")) if Path(folder).exists() else ():
            files[str(p)] = p.read_bytes() if p.is_file() else None
    return {
        "objects": sorted((o.name, tuple(round(x, 6) for x in o.matrix_world.translation)) for o in bpy.data.objects),
        "collections": sorted((c.name, len(c.objects)) for c in bpy.data.collections),
        "cameras": sorted(c.name for c in bpy.data.cameras),
        "meshes": sorted(m.name for m in bpy.data.meshes),
        "images": sorted(i.name for i in bpy.data.images),
        "render": (render.resolution_x, render.resolution_y, render.resolution_percentage,
                   render.pixel_aspect_x, render.pixel_aspect_y, render.film_transparent, render.filepath,
                   render.image_settings.file_format, render.image_settings.color_mode,
                   scene.cycles.samples if render.engine == "CYCLES" else None),
        "camera": scene.camera.name if scene.camera else None,
        "files": files,
    }


def pump_until(mod, predicate, timeout: float = 300.0):
    """Pump the add-on `mod`'s engine link (what the UI's timer does) until `predicate(STATE)`;
    returns STATE, AssertionError with the state on timeout."""
    link = mod.engine_link
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        link.pump()
        if predicate(link.STATE):
            return link.STATE
        time.sleep(0.05)
    raise AssertionError(f"timed out; state {link.STATE}")
