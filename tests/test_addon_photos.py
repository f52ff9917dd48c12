"""Import Photos in real Blender (bpy 5.0.1): the extension installed from its zip, a real
engine service subprocess finding the poses with the real pycolmap, on a capture rendered
by scripts/make_capture.py (in a subprocess: the renderer resets Blender's data).

Headless Blender has no event loop, so the tests pump engine_link in a loop as the UI's
timer would (`pump_until`)."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from addon_harness import RecordingLayout, installed_extension, pump_until  # noqa: E402

bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed")


REPO = "ngp_photos_repo"
# The capture (tests/conftest.py CAPTURE_ARGS): 24 views; SfM registers all or nearly all
# (the first view overlaps least: one end of the spiral), the tests ask for 80%.


@pytest.fixture(scope="module")
def extension(tmp_path_factory):
    """The built zip installed and enabled in a temporary user repository; yields the
    add-on module. Uninstalls at the end."""
    with installed_extension(tmp_path_factory.mktemp("ext"), REPO) as (mod, _, _):
        yield mod


@pytest.fixture(scope="module")
def capture(photo_capture) -> Path:
    """The session's rendered capture (tests/conftest.py)."""
    return photo_capture


def _fresh_scene(run: Path) -> bpy.types.Scene:
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.ngp.run_folder = str(run)
    return scene


def _scene_contents() -> tuple[set[str], set[str], set[str]]:
    return ({o.name for o in bpy.data.objects}, {c.name for c in bpy.data.collections},
            {i.name for i in bpy.data.images})


def _frames(dataset: Path) -> dict[str, np.ndarray]:
    """Image stem -> camera-to-world [4, 4] of the dataset's transforms.json."""
    doc = json.loads((dataset / "transforms.json").read_text())
    return {Path(fr["file_path"]).stem: np.array(fr["transform_matrix"]) for fr in doc["frames"]}


# ------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def imported(extension, capture, tmp_path_factory):
    """Import Photos on the capture, headless: the operator returns, the pump drives it."""
    run = tmp_path_factory.mktemp("photos_run")
    scene = _fresh_scene(run)
    before = _scene_contents()
    t0 = time.monotonic()
    assert bpy.ops.ngp.import_photos(directory=str(capture / "photos")) == {"FINISHED"}
    st = extension.engine_link.STATE
    assert st.status == "posing" and st.capture == capture.name
    seen = set()
    state = pump_until(extension, lambda s: seen.add((s.status, s.poses_stage)) or s.status not in
                       extension.engine_link.BUSY)
    assert state.status == "done", state.message
    print(f"import photos: {time.monotonic() - t0:.1f} s, {state.message}")
    return {"scene": scene, "run": run, "before": before, "seen": seen,
            "dataset": Path(state.summary["dataset"]), "summary": dict(state.summary)}


def test_progress_went_through_the_stages(extension, imported):
    stages = {stage for status, stage in imported["seen"] if status == "posing"}
    assert {"features", "mapping"} <= stages, stages


def test_cameras_come_in_with_their_photos(extension, imported, capture):
    dataset, scene = imported["dataset"], imported["scene"]
    frames = _frames(dataset)
    assert imported["summary"]["n_registered"] >= 0.8 * len(list((capture / "photos").iterdir())), imported["summary"]
    coll = bpy.data.collections[capture.name]
    assert coll.name in scene.collection.children
    cams = [o for o in coll.objects if o.type == "CAMERA"]
    assert len(cams) == len(frames) == imported["summary"]["n_registered"]
    for cam in cams:
        assert cam.data.show_background_images and len(cam.data.background_images) == 1
        img = cam.data.background_images[0].image
        photo = Path(bpy.path.abspath(img.filepath)).resolve()
        assert photo.parent == (dataset / "images").resolve() and photo.stem == cam.name
        # Where the dataset says (the NeRF convention is Blender's: matrix_world as written).
        np.testing.assert_allclose(np.array(cam.matrix_world), frames[cam.name], atol=1e-5)


def test_points_come_in_and_lie_in_front_of_the_cameras(extension, imported, capture):
    scene = imported["scene"]
    camera_io = extension.blender_io.cameras
    obj = bpy.data.objects[f"{capture.name} points"]
    assert obj.users_collection[0].name == capture.name
    n = len(obj.data.vertices)
    assert n > 100 and len(obj.data.polygons) == 0 and len(obj.data.edges) == 0
    col = obj.data.color_attributes.get("Col")
    assert col is not None and col.domain == "POINT"
    v = np.empty(3 * n, np.float32)
    obj.data.vertices.foreach_get("co", v)
    v = v.reshape(-1, 3).astype(np.float64)
    # Same world as the cameras: most points project into each camera's image, in front of it
    # (checked through the Blender cameras' own intrinsics, as they render).
    bpy.context.view_layer.update()
    for cam in (o for o in bpy.data.collections[capture.name].objects if o.type == "CAMERA"):
        k = camera_io.camera_intrinsics(cam, scene)
        w2c = np.linalg.inv(np.array(camera_io.camera_to_world(cam)))
        xc = v @ w2c[:3, :3].T + w2c[:3, 3]
        front = xc[:, 2] < 0
        u = k["cx"] + k["fl_x"] * xc[front, 0] / -xc[front, 2]
        vv = k["cy"] - k["fl_y"] * xc[front, 1] / -xc[front, 2]
        inside = (u >= 0) & (u < k["w"]) & (vv >= 0) & (vv < k["h"])
        assert front.mean() > 0.9 and inside.sum() > 0.3 * n, (cam.name, front.mean(), inside.sum() / n)


def test_the_capture_comes_with_bounds_that_leave_it_as_the_engine_made_it(extension, imported, tmp_path):
    """NGP Bounds fitted to the engine's box of the sparse points: untouched, Train writes
    nothing; scaled, the capture's unit cube follows (aabb_scale kept)."""
    import shutil

    bounds = bpy.data.objects["NGP Bounds"]
    copy = tmp_path / "transforms.json"
    shutil.copyfile(imported["dataset"] / "transforms.json", copy)
    before = copy.read_bytes()
    extension.operators.training._box_into_dataset(bpy.context, copy)
    assert copy.read_bytes() == before
    saved = tuple(bounds.scale)
    try:
        bounds.scale = tuple(0.5 * x for x in saved)
        extension.operators.training._box_into_dataset(bpy.context, copy)
        old, new = json.loads(before), json.loads(copy.read_text())
        assert new["scale"] == pytest.approx(2.0 * old["scale"], rel=1e-5)
        assert new["aabb_scale"] == old["aabb_scale"] and new["frames"] == old["frames"]
    finally:
        bounds.scale = saved
        bpy.context.view_layer.update()


def test_train_uses_the_imported_dataset(extension, imported, monkeypatch):
    scene, dataset = imported["scene"], imported["dataset"]
    assert scene.ngp.source == "PHOTOS"
    assert Path(scene.ngp.photos_dataset) == dataset
    assert extension.properties.data_folder(scene) == dataset
    # The Train request names the dataset (caught before it reaches the engine: training is
    # the NeRF tests' business).
    sent = []
    link = extension.engine_link
    monkeypatch.setattr(link, "send", sent.append)
    saved = dict(link.STATE.__dict__)
    try:
        assert bpy.ops.ngp.train() == {"FINISHED"}
    finally:
        link.STATE.__dict__.update(saved)
    assert sent and sent[0].type == "train" and Path(sent[0].data) == dataset


def test_mesh_of_the_dataset_lands_among_its_cameras(extension, imported):
    """The engine writes meshes in the dataset's world units, which are the cameras' world:
    Import Mesh adds them with no transform (a mesh file of the points' positions stands
    in for a trained model here)."""
    dataset = imported["dataset"]
    xyz, _ = extension.blender_io.points.read_point_cloud(dataset / "points.ply")
    tri = np.arange(3 * (len(xyz) // 3)).reshape(-1, 3)
    path = imported["run"] / "mesh.ply"
    extension.ngp_engine.formats.ply.write_ply(path, xyz, tri)
    obj = extension.operators.results.import_mesh_file(path, "nerf", "")
    assert tuple(obj.matrix_world.translation) == (0.0, 0.0, 0.0)
    v = np.empty(3 * len(obj.data.vertices), np.float32)
    obj.data.vertices.foreach_get("co", v)
    np.testing.assert_allclose(v.reshape(-1, 3), xyz[:len(v) // 3], atol=1e-4)


# ------------------------------------------------------------------------------ failures
def _noise_folder(folder: Path, n: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(folder / f"n{i}.png")
    return folder


@pytest.mark.parametrize("n_images", [0, 3])
def test_failed_reconstruction_is_one_line_and_the_scene_untouched(extension, tmp_path, n_images):
    scene = _fresh_scene(tmp_path / "run")
    folder = _noise_folder(tmp_path / "noise", n_images)
    before = _scene_contents()
    settings = (scene.ngp.source, scene.ngp.photos_dataset)
    assert bpy.ops.ngp.import_photos(directory=str(folder)) == {"FINISHED"}
    state = pump_until(extension, lambda s: s.status not in extension.engine_link.BUSY, timeout=120)
    assert state.status == "error", state.message
    assert state.message and "\n" not in state.message
    assert _scene_contents() == before
    assert (scene.ngp.source, scene.ngp.photos_dataset) == settings
    assert not any((tmp_path / "run" / "captures").iterdir())      # nothing half-written


def test_stop_cancels_and_leaves_nothing(extension, tmp_path, capture):
    scene = _fresh_scene(tmp_path / "run")
    before = _scene_contents()
    assert bpy.ops.ngp.import_photos(directory=str(capture / "photos")) == {"FINISHED"}
    with pytest.raises(RuntimeError, match="a job is running"):
        bpy.ops.ngp.import_photos(directory=str(capture / "photos"))
    pump_until(extension, lambda s: s.status == "posing" and s.poses_stage == "features", timeout=120)
    assert bpy.ops.ngp.stop() == {"FINISHED"}      # the one Stop, for any job
    state = pump_until(extension, lambda s: s.status not in extension.engine_link.BUSY, timeout=120)
    assert state.status == "stopped", state.message
    assert _scene_contents() == before and scene.ngp.source == "RIG"
    assert not any((tmp_path / "run" / "captures").iterdir())


def test_unreadable_dataset_leaves_the_scene_untouched(extension, tmp_path, capture):
    """A dataset whose points file is broken: nothing comes in, one line says why."""
    mod = extension
    scene = _fresh_scene(tmp_path / "run")
    dataset = tmp_path / "ds"
    (dataset / "images").mkdir(parents=True)
    truth = json.loads((capture / "truth.json").read_text())
    frames = []
    for fr in truth["frames"][:3]:
        shutil.copy(capture / "photos" / fr["file_name"], dataset / "images" / fr["file_name"])
        frames.append({"file_path": f"images/{fr['file_name']}", "transform_matrix": fr["transform_matrix"]})
    (dataset / "transforms.json").write_text(json.dumps(
        {k: truth[k] for k in ("w", "h", "fl_x", "fl_y", "cx", "cy")} | {"frames": frames}))
    (dataset / "points.ply").write_text("not a ply file")
    before = _scene_contents()
    protocol = mod.ngp_engine.service.protocol
    link = mod.engine_link
    link.STATE.pending["poses"], link.STATE.capture = "poses-test", "broken"
    done = protocol.Done(summary={"job": "poses", "dataset": str(dataset), "n_images": 3,
                                  "n_registered": 3, "stopped": False}, request="poses-test")
    link.apply_event(done)
    mod.operators.on_event(done)
    assert link.STATE.status == "error"
    assert "points.ply" in link.STATE.message and "\n" not in link.STATE.message
    assert _scene_contents() == before
    # The same dataset with its points file gone comes in: three cameras, no points object.
    (dataset / "points.ply").unlink()
    link.apply_event(done)
    mod.operators.on_event(done)
    assert link.STATE.status == "done", link.STATE.message
    assert len(bpy.data.collections["broken"].objects) == 3 and "broken points" not in bpy.data.objects
    assert scene.ngp.source == "PHOTOS"


# ------------------------------------------------------------------------------ panel
@pytest.mark.parametrize("status", ["idle", "posing", "done", "error"])
def test_panel_draws_the_photos_source(extension, status):
    link = extension.engine_link
    saved = dict(link.STATE.__dict__)
    try:
        st = link.STATE
        st.status, st.message, st.capture = status, f"state {status}", "stilllife"
        st.poses_stage, st.poses_done, st.poses_total, st.poses_registered = "mapping", 7, 20, 6
        bpy.context.scene.ngp.source = "PHOTOS"
        log = []
        bpy.types.NGP_PT_main.draw(type("P", (), {"layout": RecordingLayout(log)})(), bpy.context)
        ops = [x[1] for x in log if x[0] == "operator"]
        assert ("ngp.import_photos" in ops) == (status != "posing")
        assert ("ngp.stop" in ops) == (status == "posing")
        assert ("prop", "photos_dataset") in log
        if status == "posing":
            assert ("progress", "Mapping 7 / 20") in log
            assert ("label", "stilllife: 6 registered") in log
        assert ("label", f"state {status}") in log
    finally:
        link.STATE.__dict__.update(saved)
