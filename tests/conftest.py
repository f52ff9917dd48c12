"""Shared test helpers."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# Without a GPU, Triton kernels run in Triton's interpreter on CPU tensors: set before
# anything imports triton (it reads the variable when a kernel is defined). On a GPU machine
# the same tests run the compiled kernels (tests/test_hash_grid_triton.py picks the device).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


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
# Where a machine has no Blender module (a GPU machine's Python 3.12 has no bpy wheel), the
# same scene rendered elsewhere (`scripts/gpu_check.py --prepare`) and named here.
NERF_SCENE_ENV = "NGP_TEST_NERF_SCENE"


def make_scene_module():
    """scripts/make_scene.py as a module (it imports bpy only to render)."""
    spec = importlib.util.spec_from_file_location("make_scene", ROOT / "scripts" / "make_scene.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def prerendered_scene(folder: Path, args: dict) -> Path:
    """`folder` when it holds the complete dataset make_scene.py renders with `args`; else a
    clear failure (another scene would change what the NeRF tests measure)."""
    diff = make_scene_module().differences(folder, **args)
    if diff:
        pytest.fail(f"{NERF_SCENE_ENV}={folder} is not the tests' scene {args}: "
                    + ", ".join(f"{k} {have} (wanted {want})" for k, (have, want) in diff.items()))
    return folder


@pytest.fixture(scope="session")
def nerf_scene(tmp_path_factory) -> Path:
    """A NeRF-synthetic-style dataset rendered once per session with real Blender (Cycles on
    the CPU, ~5 s): 24 training and 3 test views of 40x40 RGBA, geometry.ply, scene.json.
    The script runs in a subprocess so that bpy is never imported into pytest. With
    $NGP_TEST_NERF_SCENE, a copy of that scene rendered before (tests may write into it)."""
    out = tmp_path_factory.mktemp("nerf_scene") / "scene"
    if os.environ.get(NERF_SCENE_ENV):
        source = prerendered_scene(Path(os.environ[NERF_SCENE_ENV]), NERF_SCENE_ARGS)
        return Path(shutil.copytree(source, out))
    if importlib.util.find_spec("bpy") is None:      # find, never import
        pytest.skip(f"bpy (Blender as a Python module) is not installed, and ${NERF_SCENE_ENV} "
                    "names no scene rendered before")
    return render_with_blender("make_scene.py", out, NERF_SCENE_ARGS, "scene.json")


def render_with_blender(script: str, out: Path, args: dict, last_file: str) -> Path:
    """Run scripts/<script> --out OUT --<arg> <value>... in a subprocess (bpy never enters
    pytest) and check that it wrote `last_file`, which those scripts write last."""
    cmd = [sys.executable, str(ROOT / "scripts" / script), "--out", str(out)]
    for key, value in args.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / last_file).is_file(), proc.stderr[-3000:]
    return out


# The photo capture shared by the pose and Import Photos tests (see scripts/make_capture.py).
CAPTURE_ARGS = {"n_views": 24, "size": 320, "samples": 4, "seed": 0}   # ~45 s on 2 cores


@pytest.fixture(scope="session")
def photo_capture(tmp_path_factory) -> Path:
    """24 photos of a textured still life without poses (`photos/*.png`) and the true
    Blender cameras apart (`truth.json`), rendered once per session with real Blender in a
    subprocess (bpy is never imported into pytest; its factory reset would also wipe an
    installed extension's data)."""
    import importlib.util

    if importlib.util.find_spec("bpy") is None:      # find, never import
        pytest.skip("bpy (Blender as a Python module) is not installed")
    return render_with_blender("make_capture.py", tmp_path_factory.mktemp("capture") / "cap",
                               CAPTURE_ARGS, "truth.json")
