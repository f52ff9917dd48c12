"""Shared test helpers."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def photo_256(tmp_path_factory) -> Path:
    """scikit-image's bundled astronaut photograph, resized to 256x256, as a PNG."""
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("photo") / "astronaut256.png"
    Image.fromarray(data.astronaut()).resize((256, 256), Image.LANCZOS).save(path)
    return path


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m ngp_engine ...` in a fresh interpreter from the repo root."""
    return subprocess.run([sys.executable, "-m", "ngp_engine", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


# The tiny Blender-rendered scene shared by the NeRF tests (see scripts/make_scene.py).
NERF_SCENE_ARGS = {"size": 40, "n_train": 24, "n_test": 3, "samples": 8, "seed": 0}


@pytest.fixture(scope="session")
def nerf_scene(tmp_path_factory) -> Path:
    """A NeRF-synthetic-style dataset rendered once per session with real Blender (Cycles on
    the CPU, ~5 s): 24 training and 3 test views of 40x40 RGBA, geometry.ply, scene.json.
    The script runs in a subprocess so that bpy is never imported into pytest."""
    import importlib.util

    if importlib.util.find_spec("bpy") is None:      # find, never import
        pytest.skip("bpy (Blender as a Python module) is not installed")
    out = tmp_path_factory.mktemp("nerf_scene") / "scene"
    cmd = [sys.executable, str(ROOT / "scripts" / "make_scene.py"), "--out", str(out)]
    for key, value in NERF_SCENE_ARGS.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "scene.json").is_file(), proc.stderr[-3000:]
    return out
