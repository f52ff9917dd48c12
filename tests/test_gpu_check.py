"""What scripts/gpu_check.py relies on to run where Blender cannot: the NeRF tests' scene
rendered beforehand and named by $NGP_TEST_NERF_SCENE (tests/conftest.py)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from conftest import NERF_SCENE_ARGS, ROOT, prerendered_scene


def test_a_scene_rendered_before_is_taken_only_with_the_tests_settings(nerf_scene, tmp_path):
    scene = tmp_path / "scene"
    shutil.copytree(nerf_scene, scene)
    assert prerendered_scene(scene, NERF_SCENE_ARGS) == scene
    meta = json.loads((scene / "scene.json").read_text())
    (scene / "scene.json").write_text(json.dumps({**meta, "size": 41, "samples": 8}))
    with pytest.raises(pytest.fail.Exception, match=r"not the tests' scene .*: size 41 \(wanted 40\)$"):
        prerendered_scene(scene, NERF_SCENE_ARGS)
    (scene / "scene.json").write_text(json.dumps({**meta, "scene": "pedestal"}))
    with pytest.raises(pytest.fail.Exception, match=r"scene pedestal \(wanted default\)$"):
        prerendered_scene(scene, NERF_SCENE_ARGS)
    (scene / "scene.json").write_text(json.dumps(meta))
    (scene / "train" / "r_3.png").unlink()
    with pytest.raises(pytest.fail.Exception, match=r"files incomplete \(wanted complete\)$"):
        prerendered_scene(scene, NERF_SCENE_ARGS)
    (scene / "scene.json").unlink()
    with pytest.raises(pytest.fail.Exception, match=r"scene.json None \(wanted present\)$"):
        prerendered_scene(scene, NERF_SCENE_ARGS)


def test_prepare_refuses_a_folder_that_cannot_travel_before_any_work(tmp_path):
    # Only the checkout travels to a GPU machine: a scene elsewhere is refused at once,
    # before rendering (minutes) or fetching wheels.
    for option in ("--scene", "--test-scene", "--capture"):
        proc = subprocess.run([sys.executable, "scripts/gpu_check.py", "--prepare", option,
                               str(tmp_path / "elsewhere")], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
            f"error: {option} {tmp_path / 'elsewhere'} is not a folder inside {ROOT} "
            "(copy it under out/)"], proc.stderr
        assert not (tmp_path / "elsewhere").exists() and proc.stdout == ""
