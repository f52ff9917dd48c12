"""The engine service with real processes: `python -m ngp_engine serve` driven by EngineClient.

- A NeRF session on the tiny Blender scene: ready, train, preview mid-training (files on disk,
  shapes, values), stop (done + loadable checkpoint), export a mesh, status, shutdown.
- Garbage (property-based: random bytes, JSON of every shape, valid requests with a field
  replaced by any value, a 2 MiB line) gets one error event per line and the engine then
  still trains on a valid request.
- kill -9 mid-training: the client says so, the run folder keeps a loadable checkpoint.
- stdin closed mid-training: the engine saves, says done and exits within seconds.
- Start-up failures (no such interpreter, torch missing, protocol mismatch) are one clear line.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ngp_engine.service.client import EngineClient, EngineError
from ngp_engine.mesh import read_mesh
from ngp_engine.nn.mlp import resolve_precision
from ngp_engine.tasks.nerf.task import NerfTask

load_checkpoint = NerfTask.read_checkpoint
from ngp_engine.service.protocol import (PROTOCOL_VERSION, Camera, ExportMesh, Hello, Poses, Preview, ProtocolError, Status,
                                        Stop, Train, parse_request)

PASSES = ["rgb", "depth", "opacity", "normals"]


def test_camera(scene) -> Camera:
    """The first test view of the scene as a protocol camera."""
    meta = json.loads((scene / "transforms_test.json").read_text())
    frame = meta["frames"][0]
    w = h = 40
    return Camera(transform_matrix=frame["transform_matrix"], w=w, h=h,
                  fl_x=0.5 * w / np.tan(0.5 * meta["camera_angle_x"]))


test_camera.__test__ = False  # a helper, not a test


def events_of(client: EngineClient, kind: str, request: str | None = None) -> list:
    return [e for e in client.received if e.type == kind and (request is None or e.request == request)]


# ------------------------------------------------------------------------------- NeRF session
@pytest.fixture(scope="module")
def nerf_session(nerf_scene, tmp_path_factory):
    """Train (no budget), preview mid-training, stop, export a mesh, status, shut down."""
    run = tmp_path_factory.mktemp("serve") / "run"
    client = EngineClient()
    t0 = time.monotonic()
    ready = client.start()
    spawn_seconds = time.monotonic() - t0
    client.send(Train(mode="nerf", data=str(nerf_scene), run_dir=str(run), checkpoint_every=2.0, id="t"))
    client.wait_for(lambda e: e.type == "progress" and e.step >= 40, timeout=120)
    client.send(Preview(camera=test_camera(nerf_scene), passes=PASSES, resolution=[32, 24], id="p"))
    previews = [client.wait_for(lambda e: e.type == "artifact" and e.request == "p", timeout=60)
                for _ in PASSES]
    step_at_preview = previews[0].info["step"]
    # Training goes on after the preview, then runs a while longer so the mesh has a surface.
    client.wait_for(lambda e: e.type == "progress" and e.step >= max(step_at_preview + 1, 60), timeout=120)
    client.send(Stop(id="s"))
    done = client.wait_for("done", timeout=60)
    client.send(ExportMesh(resolution=64, id="m"))
    meshes = [client.wait_for(lambda e: e.type in ("artifact", "error") and e.request == "m", timeout=120)
              for _ in range(2)]
    client.send(Status(id="q"))
    state = client.wait_for("state", timeout=30)
    rc = client.close()
    return dict(client=client, ready=ready, run=run, previews=previews, done=done, meshes=meshes,
                state=state, rc=rc, step_at_preview=step_at_preview, spawn_seconds=spawn_seconds)


def test_ready_describes_the_engine(nerf_session):
    ready = nerf_session["ready"]
    assert ready.protocol == PROTOCOL_VERSION and ready.engine_version and ready.pid > 0
    assert ready.device == ("cuda" if torch.cuda.is_available() else ready.device)
    assert "torch" in ready.backends and {"nerf", "image"} <= set(ready.modes)
    assert ready.torch == torch.__version__
    # What the engine found and what auto runs on it, for the add-on's device list.
    from ngp_engine.device import device_name

    assert ready.devices["cpu"] == device_name("cpu") and "threads" in ready.devices["cpu"]
    assert ("cuda" in ready.devices) == torch.cuda.is_available()
    assert ready.backend == ready.backends[-1] == ("cpu" if ready.device == "cpu" else ready.backend)
    # The job says where it really runs, before its first progress event.
    received = nerf_session["client"].received
    config = events_of(nerf_session["client"], "artifact", "t")[0]
    assert config.kind == "config"
    assert received.index(config) < received.index(events_of(nerf_session["client"], "progress", "t")[0])
    assert config.info == {"device": ready.device, "device_name": ready.devices[ready.device],
                           "backend": ready.backend, "processes": 1,
                           "mlp_precision": resolve_precision("auto", torch.device(ready.device))}


def test_preview_mid_training_writes_every_pass(nerf_session):
    client, previews = nerf_session["client"], nerf_session["previews"]
    assert [p.info["pass"] for p in previews] == PASSES
    arrays = {p.info["pass"]: np.load(p.path) for p in previews}
    assert all(os.path.isfile(p.info["png"]) for p in previews)
    assert arrays["rgb"].shape == (24, 32, 3) and arrays["rgb"].dtype == np.float32
    assert arrays["depth"].shape == arrays["opacity"].shape == (24, 32)
    assert arrays["normals"].shape == (24, 32, 3)
    assert 0.0 <= arrays["rgb"].min() and arrays["rgb"].max() <= 1.0
    # The objects fill the middle of the view: some pixels are covered, the corners are not.
    opacity = arrays["opacity"]
    assert opacity.max() > 0.9 and opacity[0, 0] < 0.5
    covered = opacity > 0.5
    assert (arrays["depth"][covered] > 0).all()
    norms = np.linalg.norm(arrays["normals"][covered], axis=-1)
    assert np.median(np.abs(norms - 1.0)) < 1e-3
    # Answered while training: progress continued past the preview's step.
    progress = events_of(client, "progress", "t")
    assert 0 < nerf_session["step_at_preview"] < progress[-1].step


def test_progress_is_throttled_and_complete(nerf_session):
    progress = events_of(nerf_session["client"], "progress", "t")
    done = nerf_session["done"]
    steps = [p.step for p in progress]
    assert steps == sorted(steps) and steps[-1] == done.summary["steps"]
    assert all(p.fraction is None and p.loss > 0 and p.rays_per_second > 0 for p in progress)
    # At most one event per 0.1 s of training (plus the final one that `stop` sends).
    seconds = progress[-1].seconds - progress[0].seconds
    assert len(progress) <= seconds / 0.1 + 2


def test_stop_leaves_a_loadable_checkpoint(nerf_session):
    done, run = nerf_session["done"], nerf_session["run"]
    s = done.summary
    assert s["stopped"] is True and s["reason"] == "stop requested" and s["mode"] == "nerf"
    assert s["checkpoint"] == str(run / "checkpoint.pt")
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["steps"] == s["steps"] >= 60
    task = NerfTask.from_checkpoint(run / "checkpoint.pt", torch.device("cpu"), for_training=False)
    assert task.n_params == s["n_params"]
    assert json.loads((run / "metrics.json").read_text())["steps"] == s["steps"]
    assert json.loads((run / "config.json").read_text())["schema_version"] == 1
    kinds = [e.kind for e in events_of(nerf_session["client"], "artifact", "t")]
    assert kinds[0] == "config" and kinds.count("checkpoint") >= 1 and kinds[-1] == "metrics"


def test_export_mesh_after_stop(nerf_session, nerf_scene):
    meshes = nerf_session["meshes"]
    assert [m.type for m in meshes] == ["artifact", "artifact"], meshes
    assert [m.info["format"] for m in meshes] == ["ply", "obj"]
    v, f, colors = read_mesh(meshes[0].path)
    assert len(f) > 100 and colors is not None
    meta = json.loads((nerf_scene / "scene.json").read_text())
    lo, hi = np.array(meta["bbox_min"]), np.array(meta["bbox_max"])
    diag = np.linalg.norm(hi - lo)
    # World units: the mesh sits around the true objects (loosely: a short run).
    centre = 0.5 * (v.min(0) + v.max(0))
    assert np.linalg.norm(centre - 0.5 * (lo + hi)) < 0.2 * diag
    assert (v.min(0) > lo - 0.25 * diag).all() and (v.max(0) < hi + 0.25 * diag).all()


def test_status_and_shutdown(nerf_session):
    state = nerf_session["state"]
    assert state.job == "stopped" and state.mode == "nerf" and state.step == nerf_session["done"].summary["steps"]
    assert state.run_dir == str(nerf_session["run"])
    assert nerf_session["rc"] == 0
    assert not events_of(nerf_session["client"], "error")


# ------------------------------------------------------------------------------- garbage
@pytest.fixture(scope="module")
def engine():
    client = EngineClient()
    client.start()
    yield client
    client.close()


def answer_to(client: EngineClient, line: bytes):
    """Send one line and return the engine's answer to it (the next error/state event)."""
    client.send_raw(line + b"\n")
    return client.wait_for(lambda e: e.type in ("error", "state", "exited"), timeout=30)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12)
VALID = Train(mode="image", data="/nonexistent/image.png", run_dir="/nonexistent/run", steps=1).to_dict()


def invalid_lines():
    raw = st.binary(min_size=1, max_size=200).map(lambda b: b.replace(b"\n", b" "))
    json_any = json_values.map(lambda v: json.dumps(v).encode())
    wrong_field = st.tuples(st.sampled_from([k for k in VALID if k != "type"]), json_values).map(
        lambda kv: json.dumps({**VALID, kv[0]: kv[1]}).encode())
    return st.one_of(raw, json_any, wrong_field)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(line=invalid_lines())
def test_garbage_gets_one_error_each_and_the_engine_keeps_serving(engine, line):
    assume(line.strip())
    try:
        parse_request(line)
    except ProtocolError as e:
        expected = str(e)
    else:
        assume(False)   # a valid request by chance: not garbage
    answer = answer_to(engine, line)
    assert answer.type == "error" and answer.message == expected
    assert engine.alive


def test_a_huge_line_is_refused_without_reading_it_into_memory(engine):
    answer = answer_to(engine, b'{"type":"status","id":"' + b"x" * (2 << 20) + b'"}')
    assert answer.type == "error" and "longer than" in answer.message
    assert answer_to(engine, Status(id="after").to_json().encode()).type == "state"


def test_bad_requests_fail_alone_then_training_works(engine, photo_256, tmp_path):
    # A missing file and a request while idle are errors for that request only.
    engine.send(Train(mode="image", data=str(tmp_path / "missing.png"), run_dir=str(tmp_path / "r0"),
                      steps=5, id="bad"))
    err = engine.wait_for("error", timeout=60)
    assert err.request == "bad" and "missing.png" in err.message and err.detail == ""
    engine.send(Train(mode="image", data="relative.png", run_dir=str(tmp_path / "r0"), id="rel"))
    assert "must be an absolute path" in engine.wait_for("error", timeout=30).message
    engine.send(Stop(id="idle"))
    assert "no job is training" in engine.wait_for("error", timeout=30).message
    engine.send(Train(mode="sdf", data=str(photo_256), run_dir=str(tmp_path / "r0"), id="sdf"))
    assert "not a mesh file" in engine.wait_for("error", timeout=30).message     # a PNG is no mesh
    engine.send(Preview(id="nothing"))
    assert "no model yet" in engine.wait_for("error", timeout=30).message
    # Then a valid image run trains to its budget.
    run = tmp_path / "image_run"
    engine.send(Train(mode="image", data=str(photo_256), run_dir=str(run), preset="cpu-fast", steps=40,
                      id="ok"))
    done = engine.wait_for("done", timeout=120)
    assert done.request == "ok" and done.summary["steps"] == 40 and done.summary["stopped"] is False
    assert done.summary["psnr"] > 15 and (run / "checkpoint.pt").is_file()
    engine.send(Preview(resolution=[64, 32], id="img"))
    art = engine.wait_for("artifact", timeout=60)
    assert np.load(art.path).shape == (32, 64, 3)
    engine.send(ExportMesh(id="nomesh"))
    assert "has no surface" in engine.wait_for("error", timeout=30).message
    engine.send(Train(mode="image", data=str(photo_256), run_dir=str(run), id="busy"))   # no budget
    engine.wait_for("progress", timeout=60)
    engine.send(Train(mode="image", data=str(photo_256), run_dir=str(run), id="second"))
    assert "already training" in engine.wait_for("error", timeout=30).message
    engine.send(Stop())
    assert engine.wait_for("done", timeout=60).summary["reason"] == "stop requested"


def test_train_request_sets_the_backend_and_mlp_precision(engine, photo_256, tmp_path):
    """`backend` and `mlp_precision` (the add-on's preferences) reach the job: its config
    artifact and config.json say so; a resumed run may change its backend, not its
    precision (one line)."""
    run = tmp_path / "picked"
    engine.send(Train(mode="image", data=str(photo_256), run_dir=str(run), preset="cpu-fast", steps=5,
                      backend="torch", mlp_precision="bfloat16", id="pick"))
    config = engine.wait_for(lambda e: e.type == "artifact" and e.request == "pick", timeout=60)
    assert config.kind == "config" and config.info["backend"] == "torch"
    assert engine.wait_for("done", timeout=120).request == "pick"
    saved = json.loads((run / "config.json").read_text())
    assert saved["backend"] == "torch" and saved["mlp_precision"] == "bfloat16"
    engine.send(Train(mode="image", data=str(photo_256), run_dir=str(tmp_path / "again"),
                      resume=str(run / "checkpoint.pt"), steps=1, mlp_precision="float32", id="re"))
    err = engine.wait_for("error", timeout=60)
    assert err.request == "re"
    assert err.message == "train.mlp_precision: a resumed run keeps its checkpoint's configuration"


def test_poses_job_fails_alone_and_stop_cancels_it(engine, tmp_path):
    """A poses job on a folder without photos is one error line; one on real (noise) photos
    refuses other jobs while it runs, and stop cancels it without leaving anything on disk."""
    from PIL import Image

    empty = tmp_path / "empty"
    empty.mkdir()
    engine.send(Poses(input=str(empty), out=str(tmp_path / "ds0"), id="none"))
    err = engine.wait_for(lambda e: e.type in ("error", "done") and e.request == "none", timeout=120)
    assert err.type == "error" and str(empty) in err.message and "\n" not in err.message
    assert err.detail == "" and not (tmp_path / "ds0").exists()
    photos = tmp_path / "noise"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)).save(photos / f"n{i:02d}.png")
    out = tmp_path / "out" / "ds1"
    engine.send(Poses(input=str(photos), out=str(out), id="sfm"))
    engine.send(Train(mode="image", data="/nonexistent.png", run_dir=str(tmp_path / "r"), id="busy"))
    busy = engine.wait_for(lambda e: e.type == "error" and e.request == "busy", timeout=60)
    assert "finding camera poses is running" in busy.message
    engine.send(Stop(id="cancel"))
    done = engine.wait_for(lambda e: e.type in ("done", "error") and e.request == "sfm", timeout=120)
    assert done.type == "done" and done.summary["job"] == "poses" and done.summary["stopped"] is True
    assert not out.exists()                       # nor a staging folder beside it
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    engine.send(Status(id="after-poses"))
    assert engine.wait_for("state", timeout=30).job == "stopped"


# ------------------------------------------------------------------------------- process life
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_kill_9_mid_training_is_reported_and_the_checkpoint_survives(nerf_scene, tmp_path):
    run = tmp_path / "run"
    client = EngineClient()
    client.start()
    client.send(Train(mode="nerf", data=str(nerf_scene), run_dir=str(run), checkpoint_every=0.5, id="t"))
    for _ in range(2):
        client.wait_for(lambda e: e.type == "artifact" and e.kind == "checkpoint", timeout=120)
    os.kill(client.pid, signal.SIGKILL)
    exited = client.wait_for("exited", timeout=30)
    assert exited.returncode == -signal.SIGKILL and exited.message == "engine was killed (SIGKILL)"
    with pytest.raises(EngineError, match="killed"):
        client.send(Status())
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["steps"] >= 1
    NerfTask.from_checkpoint(run / "checkpoint.pt", torch.device("cpu"), for_training=False)
    client.close()


def test_closing_stdin_stops_the_job_and_exits(nerf_scene, tmp_path):
    run = tmp_path / "run"
    client = EngineClient()
    client.start()
    client.send(Train(mode="nerf", data=str(nerf_scene), run_dir=str(run), id="t"))
    client.wait_for(lambda e: e.type == "progress" and e.step >= 3, timeout=120)
    t0 = time.monotonic()
    client.close_stdin()
    client.proc.wait(timeout=30)
    seconds = time.monotonic() - t0
    assert client.proc.returncode == 0
    assert seconds < 5.0, seconds      # one step plus a checkpoint (target: a second or two)
    done = client.wait_for("done", timeout=10)
    assert done.summary["reason"] == "stdin closed"
    assert load_checkpoint(run / "checkpoint.pt")["steps"] == done.summary["steps"]
    assert client.wait_for("exited", timeout=10).message == "engine exited"
    client.close()


def test_missing_interpreter_is_one_clear_error():
    with pytest.raises(EngineError, match=r"engine Python '/no/such/python' not found"):
        EngineClient(python="/no/such/python").start()


def test_interpreter_without_torch_is_one_clear_error():
    # -S: no site-packages, so torch cannot be imported (the engine package still is).
    with pytest.raises(EngineError, match=r"cannot import torch"):
        EngineClient(python_args=["-S"]).start(timeout=60)


def test_protocol_mismatch_is_refused(engine):
    engine.send(Hello(protocol=99, id="old"))
    err = engine.wait_for("error", timeout=30)
    assert err.request == "old" and f"client speaks protocol 99, this engine speaks {PROTOCOL_VERSION}" in err.message
