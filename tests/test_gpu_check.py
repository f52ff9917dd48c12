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


def test_a_test_part_stopped_by_its_timeout_still_reports_the_tests_it_finished(tmp_path, monkeypatch):
    # pytest writes its JUnit XML only at its end: the part reads the verbose lines instead
    # when --test-timeout stops it (one slow test must not cost a GPU run all its results).
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import gpu_check

    tests = tmp_path / "test_three.py"
    tests.write_text("import time, pytest\n"
                     "def test_quick():\n    assert True\n"
                     "def test_skipped():\n    pytest.skip('no GPU here')\n"
                     "def test_broken():\n    assert 1 == 2\n"
                     "def test_slow():\n    time.sleep(120)\n")
    result = gpu_check.gpu_tests(20.0, tmp_path / "no_scene", tests=[str(tests)])
    assert result["timed_out_after_s"] == 20.0
    assert result["passed"] == 1
    assert [f["test"].rsplit("::", 1)[1] for f in result["failed"]] == ["test_broken"]
    assert [s["test"].rsplit("::", 1)[1] for s in result["skipped"]] == ["test_skipped"]


def test_each_part_runs_in_its_own_process_and_is_stopped_at_its_budget(tmp_path, monkeypatch):
    # A hang (or a CUDA error that poisons a process) costs one part, not the run: the part
    # runs as `gpu_check.py --part NAME` and is killed after its budget; the report so far
    # is on disk after every part.
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import gpu_check

    out = tmp_path / "check.json"
    report: dict = {}
    gpu_check.part_in_own_process(report, "environment", ["--device", "cpu"], 120.0, out)
    assert report["environment"]["device_asked"] == "cpu"
    gpu_check.part_in_own_process(report, "mlp", ["--device", "cpu"], 0.5, out)
    assert report["mlp"] == {"error": "stopped after 0 s (its processes were killed)"}
    on_disk = json.loads(out.read_text())
    assert on_disk["environment"]["device_asked"] == "cpu" and "error" in on_disk["mlp"]


def test_the_commands_part_trains_image_and_sdf_through_the_cli_and_the_service(nerf_scene, monkeypatch):
    # Part 7 on the CPU: what it will check with --device cuda. The CLI's and the service's
    # image runs are the same run (same seed, same steps): the same PSNR.
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import gpu_check
    import torch

    out = gpu_check.commands_on_device(torch.device("cpu"), nerf_scene, steps=100)
    image, sdf, service = out["image_cli"], out["sdf_cli"], out["image_service"]
    assert image["returncode"] == 0 and sdf["returncode"] == 0, out
    assert image["metrics"]["device"] == "cpu" and image["metrics"]["steps"] == 100
    assert image["metrics"]["psnr"] > 20
    assert sdf["metrics"]["iou"] > 0.8
    assert service["engine_exit"] == 0 and service["steps"] == 100
    assert service["psnr"] == image["metrics"]["psnr"]
