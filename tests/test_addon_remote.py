"""The Blender flow with the engine on a "remote" machine: the add-on's preferences point at
an SSH host (a real OpenSSH server on a loopback port, tests/ssh_server.py, whose engine is
this checkout's Python serving from its own folder). Render the rig, Train (the dataset goes
up first), Import Mesh and Preview (their files come down), and Load Trained Field from the
checkpoint that stayed on the remote."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from addon_harness import installed_extension, pump_until
from ssh_server import ssh_server

bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed")
from test_addon import _tiny_scene  # noqa: E402

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the test SSH server is OpenSSH's sshd")


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ext_remote")
    with ssh_server(tmp / "sshd") as srv, installed_extension(tmp, "ngp_remote_repo") as (mod, name, _):
        prefs = bpy.context.preferences.addons[name].preferences
        prefs.engine_location, prefs.ssh_host = "SSH", "ngp-test"
        prefs.remote_python, prefs.remote_folder, prefs.ssh_config = sys.executable, str(tmp / "remote"), str(srv.config)
        run = tmp / "run_folder"
        scene, sphere = _tiny_scene(run)
        assert bpy.ops.ngp.render_rig() == {"FINISHED"}
        assert bpy.ops.ngp.train() == {"FINISHED"}
        seen = set()
        state = pump_until(mod, lambda st: seen.add(st.status) or st.status in ("done", "error"), timeout=300)
        assert state.status == "done", state.message
        yield {"module": mod, "tmp": tmp, "run": run, "scene": scene, "sphere": sphere, "seen": seen}


def test_train_uploads_the_dataset_and_trains_remotely(remote):
    st = remote["module"].engine_link.STATE
    assert "uploading" in remote["seen"] and st.transfer_done == st.transfer_total > 0
    assert st.summary["steps"] == 150 and st.summary["run_dir"] == str(remote["run"] / "run")
    # The checkpoint stayed on the remote; the metrics came down.
    assert not (remote["run"] / "run" / "checkpoint.pt").exists()
    assert (remote["run"] / "run" / "metrics.json").is_file()
    assert len(list((remote["tmp"] / "remote").glob("runs/*/run/checkpoint.pt"))) == 1
    assert remote["module"].engine_link.client().location.remote


def test_import_mesh_and_preview_through_ssh(remote):
    mod, scene = remote["module"], remote["scene"]
    assert bpy.ops.ngp.import_mesh() == {"FINISHED"}
    pump_until(mod, lambda st: "NGP Mesh" in bpy.data.objects, timeout=300)
    obj = bpy.data.objects["NGP Mesh"]
    v = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", v)
    dist = np.abs(np.linalg.norm(v.reshape(-1, 3) - np.array(remote["sphere"].location), axis=1) - 0.5)
    assert len(obj.data.polygons) > 100 and np.median(dist) < 0.05, np.median(dist)
    scene.camera = bpy.data.collections["NGP Rig"].objects[0]
    assert bpy.ops.ngp.preview() == {"FINISHED"}
    pump_until(mod, lambda st: "NGP Preview" in bpy.data.images, 120)
    px = np.empty(len(bpy.data.images["NGP Preview"].pixels), np.float32)
    bpy.data.images["NGP Preview"].pixels.foreach_get(px)
    assert px.reshape(-1, 4)[:, :3].std() > 0.02


def test_load_trained_field_from_the_remote_checkpoint(remote):
    mod = remote["module"]
    link = mod.engine_link
    link.shutdown()                          # as after a dropped link or a reopened file
    link.reset_state()
    assert bpy.ops.ngp.load_field() == {"FINISHED"}
    state = pump_until(mod, lambda st: st.status in ("done", "error"), timeout=120)
    assert state.status == "done" and state.summary["steps"] == 150, state.message


def test_an_unusable_ssh_host_is_one_line(remote):
    mod = remote["module"]
    mod.engine_link.shutdown()
    prefs = bpy.context.preferences.addons[mod.__name__].preferences
    saved = prefs.ssh_host
    prefs.ssh_host = "ssh://a b"
    try:
        with pytest.raises(RuntimeError, match=r"engine location 'ssh://a b' is not ssh://\[user@\]host\[:port\]"):
            bpy.ops.ngp.train()
        assert mod.engine_link.STATE.status == "error"
    finally:
        prefs.ssh_host = saved
