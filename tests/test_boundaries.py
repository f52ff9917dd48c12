"""Architecture rules: what each side may import (checked in fresh interpreters)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT

HEAVY = ("torch", "numpy", "numba", "tinycudann", "mcubes")


def _modules_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nimport json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_config_and_package_root_are_standard_library_only():
    mods = _modules_after("import ngp_engine, ngp_engine.config, ngp_engine.schema, ngp_engine.tasks, "
                          "ngp_engine.formats.camera, ngp_engine.formats.unit_cube")
    assert not [m for m in HEAVY if m in mods]


def test_formats_need_numpy_at_most():
    # The add-on bundles formats/ and reads and writes the engine's files with it in Blender.
    import pkgutil

    import ngp_engine.formats

    names = [f"ngp_engine.formats.{m.name}" for m in pkgutil.iter_modules(ngp_engine.formats.__path__)]
    assert {"ngp_engine.formats.camera", "ngp_engine.formats.unit_cube"} <= set(names)
    mods = _modules_after("import " + ", ".join(names))
    assert not [m for m in ("torch", "numba", "tinycudann", "mcubes", "scipy", "PIL", "plyfile", "igl")
                if m in mods]


def test_protocol_and_client_are_standard_library_only():
    # The add-on imports both inside Blender, whose Python has no torch.
    mods = _modules_after("import ngp_engine.service.protocol, ngp_engine.service.client")
    assert not [m for m in HEAVY if m in mods]


def test_addon_never_imports_engine_libraries(tmp_path):
    # The extension as it ships: addon/ with the engine bundled inside (scripts/build_extension.py).
    import importlib.util

    if importlib.util.find_spec("bpy") is None:
        pytest.skip("bpy (Blender as a Python module) is not installed")
    sys.path.insert(0, str(ROOT / "scripts"))
    import build_extension

    build_extension.stage(tmp_path / "instant_ngp_fields")
    mods = _modules_after(f"sys.path.insert(0, {str(tmp_path)!r})\nimport instant_ngp_fields")
    assert "instant_ngp_fields.engine_link" in mods and "instant_ngp_fields.ngp_engine.service.client" in mods
    assert not [m for m in ("torch", "numba", "tinycudann", "mcubes", "scipy", "PIL") if m in mods]


def test_fast_paths_load_lazily():
    mods = _modules_after("import ngp_engine.encoding, ngp_engine.fields.image, ngp_engine.cli")
    assert "torch" in mods and "numba" not in mods and "tinycudann" not in mods


def test_engine_never_imports_blender():
    for path in (ROOT / "ngp_engine").rglob("*.py"):
        text = path.read_text()
        for mod in ("bpy", "mathutils", "bmesh"):
            assert f"import {mod}" not in text, path
