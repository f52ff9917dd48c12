"""Install Engine from a clean user folder to a trained field, in real Blender (bpy 5.0.1):
pip reaches the package index from these machines, and torch is pinned to 2.13.0 (the CPU
build pip finds, as scripts/setup.sh installs it). The Blender side runs in a process of its
own (tests/addon_install_run.py) so that its user folder can be a temporary one; this
module judges what it saw. About two minutes, most of it pip."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def seen(tmp_path_factory):
    if importlib.util.find_spec("bpy") is None:      # find, never import
        pytest.skip("bpy (Blender as a Python module) is not installed")
    tmp = tmp_path_factory.mktemp("install")
    out = tmp / "seen.json"
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp / "user"))
    env.pop("NGP_ENGINE_PYTHON", None)
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "addon_install_run.py"), str(tmp), str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    data = json.loads(out.read_text())
    data["tmp"] = str(tmp)
    return data


def test_the_engine_goes_into_the_extensions_user_folder(seen):
    venv = Path(seen["venv"])
    assert venv.is_relative_to(Path(seen["tmp"]) / "user" / "extensions" / ".user"), venv
    assert venv.parts[-2:] == ("engine", "venv")
    assert seen["log_exists"]


def test_offline_install_is_refused_and_makes_nothing(seen):
    assert "online access is off" in seen["offline_error"], seen["offline_error"]
    assert "\n" not in seen["offline_error"].strip()
    assert not seen["offline_made_venv"]


def test_invoked_install_returns_at_once_shows_progress_and_cancels_cleanly(seen):
    assert seen["invoke_timer"]
    assert seen["invoke_return_s"] < 1.0, seen["invoke_return_s"]
    assert any("virtual environment" in s for s in seen["stages_before_cancel"]), seen["stages_before_cancel"]
    assert seen["watch_longest_tick_ms"] < 100, seen["watch_longest_tick_ms"]
    assert seen["cancel_process_ended"] and seen["cancel_group_gone"]      # pip under it too
    assert "cancelled" in seen["cancel_status"] and seen["cancel_engine_python"] == ""
    assert not seen["cancel_marker"]


def test_install_to_completion_sets_engine_python_and_checks_it(seen):
    assert seen["exec_result"] == ["FINISHED"], seen["install_status"]
    venv = Path(seen["venv"])
    assert Path(seen["engine_python"]).is_relative_to(venv), seen["engine_python"]
    assert seen["engine_status"].startswith("engine 0.1.0: torch 2.13.0"), seen["engine_status"]
    assert seen["marker"]["torch"].startswith("2.13.0") and seen["marker"]["build"] == "default"
    assert seen["install_status"].startswith("installed in"), seen["install_status"]
    # Blender's own interpreter got nothing.
    assert seen["site_after"] == seen["site_before"]


def test_detect_lists_what_each_python_has_and_how_to_fix_it(seen):
    by_python = {d["python"]: d for d in seen["detected"]}
    installed = next(d for d in seen["detected"] if d["python"] == seen["engine_python"])
    assert installed["ok"] and installed["origin"] == "installed by Install Engine"
    assert "torch 2.13.0" in installed["summary"]
    bare = by_python[seen["bare_python"]]
    assert bare["origin"] == "$NGP_ENGINE_PYTHON"
    assert not bare["ok"] and "lacks torch" in bare["summary"]
    assert bare["fix"].startswith(bare["python"]) and "-m pip install" in bare["fix"] and "numba" in bare["fix"]


def test_a_python_without_the_engines_packages_gets_one_line_with_the_fix(seen):
    err = seen["bare_check_error"]
    assert "lacks torch" in err and "-m pip install" in err and "Install Engine" in err, err
    assert "\n" not in err.strip() and "Traceback" not in err


def test_a_mismatched_engine_is_refused_with_how_to_update(seen):
    err = seen["mismatch_error"]
    assert "version 0.0.1" in err and "needs 0.1.0" in err and "Install Engine" in err, err
    assert not seen["mismatch_engine_running"]


def test_the_installed_engine_trains_a_field(seen):
    assert seen["train_result"] == ["FINISHED"]
    assert seen["train_python"] == seen["engine_python"]
    assert seen["train_status"] == "done", seen["train_message"]
    assert seen["sdf_vertices"] > 100, seen["train_message"]
