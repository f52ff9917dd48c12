"""Packages that only some commands need (ngp_engine/packages.py): a NeRF trains on an
interpreter without libigl or PyMCubes (a GPU machine's Python, say), and the command that
needs one of them says so in one line."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT
from ngp_engine.errors import UserError
from ngp_engine.packages import require

# What a GPU machine's Python (3.12, torch and triton, no bpy wheel) was seen to lack.
ABSENT = ("igl", "mcubes", "pycolmap", "av", "OpenEXR", "bpy")


def blocking(absent: tuple[str, ...], tmp_path: Path) -> Path:
    """A folder whose sitecustomize module makes importing any of `absent` fail as for a
    package that is not installed (on PYTHONPATH, it runs before anything else)."""
    site = tmp_path / "block"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import importlib.abc, sys
        class _Absent(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in {absent!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, _Absent())
    """))
    return site


def run_without(absent: tuple[str, ...], tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m ngp_engine ARGS` in a fresh interpreter where `absent` do not import."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocking(absent, tmp_path)), str(ROOT)])}
    return subprocess.run([sys.executable, "-m", "ngp_engine", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_nerf_trains_and_evaluates_without_the_mesh_packages(nerf_scene, tmp_path):
    check = subprocess.run([sys.executable, "-c", "import mcubes"], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(blocking(ABSENT, tmp_path))})
    assert check.returncode != 0 and "No module named 'mcubes'" in check.stderr
    run = tmp_path / "run"
    proc = run_without(ABSENT, tmp_path, "nerf", "train", str(nerf_scene), "--out", str(run),
                       "--steps", "8", "--quiet")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 8 and math.isfinite(metrics["psnr"]) and metrics["psnr"] > 5
    # Meshing needs PyMCubes: one line that names it and the pip line, said before any work
    # (train --mesh: before training); nothing written.
    for args in (["nerf", "mesh", str(run / "checkpoint.pt"), "--out", str(tmp_path / "mesh")],
                 ["nerf", "train", str(nerf_scene), "--out", str(tmp_path / "run2"), "--mesh"],
                 ["sdf", "train", str(tmp_path / "missing.ply"), "--out", str(tmp_path / "sdf")]):
        proc = run_without(ABSENT, tmp_path, *args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (args, proc.stderr)
        assert lines[0].startswith("error: Marching cubes (mesh extraction) needs PyMCubes"), lines
        assert lines[0].endswith("pip install 'PyMCubes>=0.1.4'"), lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["block", "run"]


def test_require_names_the_package_and_its_pip_line():
    assert require("PyMCubes", "x").marching_cubes is not None     # installed here
    with pytest.raises(UserError) as e:
        require("nonexistent-dist", "Something")
    assert str(e.value).startswith("Something needs nonexistent-dist, which does not import here")
    assert str(e.value).endswith("pip install nonexistent-dist")
