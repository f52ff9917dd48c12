"""Render Camera Rig, one view at a time (real bpy 5.0.1): from a script it runs to the end;
the UI path renders a view per timer event (`RigRender.step`, what the modal operator calls
each tick: headless Blender has no event loop, so the test calls it) and cancelling leaves
the scene and the dataset folder exactly as they were."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from addon_harness import RecordingLayout, installed_extension, scene_snapshot  # noqa: E402

bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed")


@pytest.fixture(scope="module")
def ext(tmp_path_factory):
    with installed_extension(tmp_path_factory.mktemp("ext"), "ngp_rig_repo") as (mod, name, _index):
        yield mod


def _scene(tmp: Path, views: int = 6):
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.render.resolution_x, scene.render.resolution_y = 320, 240
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.5, segments=16, ring_count=8)
    sphere = bpy.context.object
    sphere.select_set(True)
    s = scene.ngp
    s.rig_count, s.rig_resolution, s.rig_samples = views, 24, 2
    s.run_folder = str(tmp)
    return scene, sphere


def test_script_path_renders_every_view_then_returns(ext, tmp_path):
    scene, _ = _scene(tmp_path, views=6)
    assert bpy.ops.ngp.render_rig() == {"FINISHED"}
    data = tmp_path / "data"
    doc = json.loads((data / "transforms.json").read_text())
    assert doc["w"] == doc["h"] == 24                     # the rig's size, not the scene's
    assert [fr["file_path"] for fr in doc["frames"]] == [f"images/ngp_rig_{i:03d}.png" for i in range(6)]
    assert all((data / fr["file_path"]).is_file() for fr in doc["frames"])
    assert sorted(o.name for o in bpy.data.collections["NGP Rig"].objects) == [f"ngp_rig_{i:03d}" for i in range(6)]
    assert (scene.render.resolution_x, scene.render.resolution_y, scene.camera) == (320, 240, None)
    assert not (tmp_path / "data.partial").exists() and not (tmp_path / "data.old").exists()
    # A second rig replaces the first: its cameras, its images, its camera data.
    scene.ngp.rig_count = 4
    assert bpy.ops.ngp.render_rig() == {"FINISHED"}
    assert len(json.loads((data / "transforms.json").read_text())["frames"]) == 4
    assert sorted(p.name for p in (data / "images").iterdir()) == [f"ngp_rig_{i:03d}.png" for i in range(4)]
    assert sorted(o.name for o in bpy.data.collections["NGP Rig"].objects) == [f"ngp_rig_{i:03d}" for i in range(4)]
    assert len(bpy.data.cameras) == 1 and len(bpy.data.collections) == 1


def test_view_by_view_and_cancel_leaves_everything_as_it_was(ext, tmp_path):
    scene, sphere = _scene(tmp_path, views=5)
    assert bpy.ops.ngp.render_rig() == {"FINISHED"}        # an earlier dataset and rig to keep
    scene.ngp.rig_count = 7
    before = scene_snapshot(tmp_path)
    job = ext.operators.rig.RigRender(bpy.context, [sphere])
    assert job.total == 7
    assert job.step() and job.step()                       # two views, five to go
    assert len(list((tmp_path / "data.partial" / "images").iterdir())) == 2
    assert job.done == 2
    assert scene.render.resolution_x == 24                 # the rig's settings while it renders
    job.cancel()
    assert scene_snapshot(tmp_path) == before
    assert not (tmp_path / "data.partial").exists()


def test_view_by_view_to_the_end_swaps_the_dataset_in(ext, tmp_path):
    scene, sphere = _scene(tmp_path, views=4)
    job = ext.operators.rig.RigRender(bpy.context, [sphere])
    steps = 1
    while job.step():
        steps += 1
    assert steps == 4 and not (tmp_path / "data" / "transforms.json").exists()   # nothing until finish
    assert "4 views" in job.finish()
    assert len(json.loads((tmp_path / "data" / "transforms.json").read_text())["frames"]) == 4
    assert job.longest_view > 0


def test_nothing_selected_fails_and_changes_nothing(ext, tmp_path):
    _scene(tmp_path)
    bpy.ops.object.select_all(action="DESELECT")
    before = scene_snapshot(tmp_path)
    with pytest.raises(RuntimeError, match="select the objects to reconstruct first"):
        bpy.ops.ngp.render_rig()
    assert scene_snapshot(tmp_path) == before


@pytest.mark.parametrize("source, what, op", [("RIG", "rendering the rig", "ngp.render_rig"),
                                              ("CAMERAS", "exporting the cameras", "ngp.export_cameras")])
def test_panel_shows_progress_and_cancel_while_building(ext, source, what, op):
    st = ext.engine_link.STATE
    saved = dict(st.__dict__)
    try:
        st.job_status, st.job_what, st.job_done, st.job_total = "running", what, 3, 8
        bpy.context.scene.ngp.source = source
        log = []
        bpy.types.NGP_PT_main.draw(type("P", (), {"layout": RecordingLayout(log)})(), bpy.context)
        assert ("progress", "3 / 8") in log and ("operator", "ngp.cancel_job") in log
        assert ("operator", op) not in log
        assert bpy.ops.ngp.cancel_job.poll()
        bpy.ops.ngp.cancel_job()
        assert st.job_status == "cancelling"
    finally:
        st.__dict__.update(saved)


# ------------------------------------------------------------------------------ NGP Bounds
def test_a_rig_dataset_comes_with_bounds_fitted_to_the_objects(ext, tmp_path):
    _, sphere = _scene(tmp_path, views=4)
    sphere.location = (0.3, -0.2, 0.4)
    bpy.context.view_layer.update()
    assert bpy.ops.ngp.render_rig() == {"FINISHED"}
    obj = bpy.data.objects["NGP Bounds"]
    assert obj.type == "EMPTY" and obj.empty_display_type == "CUBE" and obj.hide_render
    lo, hi = ext.bounds.bounds_box()
    np.testing.assert_allclose(lo, np.array(sphere.location) - 0.5, atol=1e-3)
    np.testing.assert_allclose(hi, np.array(sphere.location) + 0.5, atol=1e-3)


def test_moving_and_scaling_the_bounds_changes_what_is_trained(ext, tmp_path):
    from ngp_engine.formats.transforms import read_transforms

    _scene(tmp_path, views=4)
    assert bpy.ops.ngp.render_rig() == {"FINISHED"}
    path = tmp_path / "data" / "transforms.json"
    obj = bpy.data.objects["NGP Bounds"]
    obj.location = (1.0, 0.0, 0.25)
    obj.scale = (1.0, 0.5, 0.5)                           # a 2 x 1 x 1 box
    bpy.context.view_layer.update()
    ext.operators.training._box_into_dataset(bpy.context, path)   # what Train does first
    cube = read_transforms(path, image_size=lambda p: (24, 24), images_required=False).transform
    np.testing.assert_allclose(cube.to_world(np.full(3, 0.5)), (1.0, 0.0, 0.25), atol=1e-9)
    # The unit cube holds the box's longest side with the dataset's margin.
    side = cube.to_world(np.ones(3))[0] - cube.to_world(np.zeros(3))[0]
    assert side == pytest.approx(ext.rig_geometry.scene_cube_side(1.0))


def test_a_rotated_parented_bounds_counts_by_its_corners_and_refits_exactly(ext, tmp_path):
    _, sphere = _scene(tmp_path)
    assert bpy.ops.ngp.fit_bounds() == {"FINISHED"}
    obj = bpy.data.objects["NGP Bounds"]
    parent = bpy.data.objects.new("holder", None)
    bpy.context.scene.collection.objects.link(parent)
    parent.location = (2.0, 0.0, 0.0)
    obj.parent = parent
    obj.rotation_euler = (0.0, 0.0, math.radians(45.0))
    obj.empty_display_size = 2.0
    bpy.context.view_layer.update()
    lo, hi = ext.bounds.bounds_box()
    # A 2 x 2 x 2 cube turned 45 degrees about Z: 2 sqrt(2) wide in x and y, shifted by the parent.
    np.testing.assert_allclose(hi - lo, (2 * math.sqrt(2), 2 * math.sqrt(2), 2.0), atol=1e-5)
    np.testing.assert_allclose(0.5 * (lo + hi), (2.0, 0.0, 0.0), atol=1e-5)
    assert bpy.ops.ngp.fit_bounds() == {"FINISHED"}          # refitting undoes all of it
    bpy.context.view_layer.update()
    lo, hi = ext.bounds.bounds_box()
    np.testing.assert_allclose(lo, (-0.5, -0.5, -0.5), atol=1e-5)
    np.testing.assert_allclose(hi, (0.5, 0.5, 0.5), atol=1e-5)


def test_fit_bounds_to_selection(ext, tmp_path):
    _, sphere = _scene(tmp_path)
    bpy.ops.object.select_all(action="DESELECT")
    before = scene_snapshot(tmp_path)
    with pytest.raises(RuntimeError, match="select the objects the bounds should hold first"):
        bpy.ops.ngp.fit_bounds()
    assert scene_snapshot(tmp_path) == before and "NGP Bounds" not in bpy.data.objects
    sphere.select_set(True)
    assert bpy.ops.ngp.fit_bounds() == {"FINISHED"}
    lo, hi = ext.bounds.bounds_box()
    np.testing.assert_allclose(hi - lo, (1.0, 1.0, 1.0), atol=1e-3)
    log = []
    bpy.types.NGP_PT_main.draw(type("P", (), {"layout": RecordingLayout(log)})(), bpy.context)
    assert ("label", "Bounds 1 x 1 x 1") in log and ("operator", "ngp.fit_bounds") in log


# ------------------------------------------------------------------------------ Import Mesh options
def _sphere_ply(ext, tmp: Path) -> tuple[Path, int]:
    bpy.ops.mesh.primitive_ico_sphere_add(subdivisions=5, radius=0.5)
    ico = bpy.context.object
    v, f = ext.blender_io.meshes.object_triangles(ico, bpy.context.evaluated_depsgraph_get())
    bpy.data.objects.remove(ico)
    path = tmp / "mesh.ply"
    ext.ngp_engine.formats.ply.write_ply(path, v, f)
    return path, len(f)


def test_each_import_is_kept_in_its_runs_collection_unless_replace(ext, tmp_path):
    scene, _ = _scene(tmp_path)
    path, _n = _sphere_ply(ext, tmp_path)
    results = ext.operators.results
    a = results.import_mesh_file(path, "nerf", "", "NGP Run 1")
    b = results.import_mesh_file(path, "nerf", "", "NGP Run 1")
    c = results.import_mesh_file(path, "nerf", "", "NGP Run 2")
    assert (a.name, b.name) == ("NGP Mesh", "NGP Mesh.001") and c.name == "NGP Mesh.002"
    assert sorted(o.name for o in bpy.data.collections["NGP Run 1"].objects) == ["NGP Mesh", "NGP Mesh.001"]
    assert [o.name for o in bpy.data.collections["NGP Run 2"].objects] == ["NGP Mesh.002"]
    assert {"NGP Run 1", "NGP Run 2"} <= {ch.name for ch in scene.collection.children}
    scene.ngp.mesh_replace = True
    d = results.import_mesh_file(path, "nerf", "", "NGP Run 1")
    assert [o.name for o in bpy.data.collections["NGP Run 1"].objects] == [d.name]
    assert [o.name for o in bpy.data.collections["NGP Run 2"].objects] == ["NGP Mesh.002"]   # other runs kept
    assert ext.operators.training.next_run_name() == "NGP Run 3"


def test_import_shades_smooth_and_decimates_to_the_target(ext, tmp_path):
    scene, _ = _scene(tmp_path)
    path, n = _sphere_ply(ext, tmp_path)
    results = ext.operators.results
    scene.ngp.mesh_smooth, scene.ngp.mesh_triangles = False, 0
    flat = results.import_mesh_file(path, "nerf", "", "NGP Run 1")
    assert not any(p.use_smooth for p in flat.data.polygons) and not flat.modifiers
    scene.ngp.mesh_smooth, scene.ngp.mesh_triangles = True, 1000
    obj = results.import_mesh_file(path, "nerf", "", "NGP Run 1")
    assert all(p.use_smooth for p in obj.data.polygons) and len(obj.data.polygons) == n == 5120
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).data
    assert 900 <= len(evaluated.polygons) <= 1100, len(evaluated.polygons)


# ------------------------------------------------------------------------------ failing operators
def _no_dataset(tmp):
    return {}


def _nothing_selected(tmp):
    bpy.ops.object.select_all(action="DESELECT")
    return {}


def _empty_mesh(tmp):
    mesh = bpy.data.meshes.new("empty")
    obj = bpy.data.objects.new("empty", mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    return {}


def _no_camera_collection(tmp):
    bpy.context.scene.ngp.source = "CAMERAS"
    return {}


def _unreadable_image(tmp):
    scene = bpy.context.scene
    scene.render.resolution_x = scene.render.resolution_y = 24
    coll = bpy.data.collections.new("shots")
    scene.collection.children.link(coll)
    coll.objects.link(bpy.data.objects.new("shot1", bpy.data.cameras.new("shot1")))
    (tmp / "photos").mkdir()
    (tmp / "photos" / "shot1.png").write_text("not an image")
    scene.ngp.camera_collection, scene.ngp.image_folder = coll, str(tmp / "photos")
    return {}


def _bad_transforms(tmp):
    (tmp / "bad.json").write_text('{"frames": [{"file_path": "a.png"}]}')
    return {"filepath": str(tmp / "bad.json")}


def _ngp_fields_engine(tmp):
    bpy.context.scene.render.engine = "NGP_FIELDS"
    return {}


def _no_photos(tmp):
    return {"filepath": str(tmp / "nothing_here")}


def _missing_python(tmp):
    return {"python": str(tmp / "no_python")}


# (operator, set-up making it fail -> its arguments, words of the one-line error)
FAILURES = [
    ("render_rig", _nothing_selected, "select the objects"),
    ("render_rig", _ngp_fields_engine, "choose Cycles or EEVEE"),
    ("fit_bounds", _nothing_selected, "select the objects"),
    ("export_cameras", _no_camera_collection, "choose the collection"),
    ("export_cameras", _unreadable_image, "cannot be read"),
    ("import_transforms", _bad_transforms, "bad.json"),
    ("import_photos", _no_photos, "choose a folder of photos or a video file"),
    ("train", _no_dataset, "no dataset yet"),
    ("load_field", _no_dataset, "nothing trained for this file yet"),
    ("train_sdf", _empty_mesh, "no faces"),
    ("import_mesh", _no_dataset, "nothing trained in this session yet"),
    ("preview", _no_dataset, "no active camera"),
    ("use_engine_python", _missing_python, "is not a file"),
]


@pytest.mark.parametrize("op, setup, words", FAILURES, ids=[f"{f[0]}-{i}" for i, f in enumerate(FAILURES)])
def test_a_failing_operator_leaves_the_scene_as_it_was(ext, tmp_path, op, setup, words):
    _scene(tmp_path / "run")
    ext.engine_link.shutdown()
    ext.engine_link.reset_state()
    kwargs = setup(tmp_path)
    before = scene_snapshot(tmp_path)
    with pytest.raises(RuntimeError, match=words) as e:
        getattr(bpy.ops.ngp, op)(**kwargs)
    assert "\n" not in str(e.value).strip() and "Traceback" not in str(e.value)
    assert scene_snapshot(tmp_path) == before


# ------------------------------------------------------------------------------ awaited requests
class _FakeClient:
    """An engine that answers over a few polls: the job's progress, the awaited request's
    two artifacts, then the job's end (events of both interleaved, as the engine sends them)."""

    def __init__(self, protocol) -> None:
        P = protocol
        self.script = [[P.Progress(mode="nerf", step=1, seconds=0.1, loss=0.5)],
                       [P.Artifact(kind="pass", path="a.npy", info={"pass": "rgb"}, request="r-1"),
                        P.Progress(mode="nerf", step=2, seconds=0.2, loss=0.4)],
                       [], [P.Artifact(kind="pass", path="b.npy", info={"pass": "depth"}, request="r-1")],
                       [P.Progress(mode="nerf", step=3, seconds=0.3, loss=0.3), P.Done(summary={"steps": 3})]]
        self.sent, self.received, self.alive = [], [], True

    def send(self, msg) -> None:
        self.sent.append(msg)

    def poll(self) -> list:
        return self.script.pop(0) if self.script else []


def test_a_waiter_gets_its_events_and_the_pump_the_rest_in_order(ext):
    import threading

    link, protocol = ext.engine_link, ext.ngp_engine.service.protocol
    fake = _FakeClient(protocol)
    applied, got = [], {}
    saved_client, saved_state = link._client, dict(link.STATE.__dict__)
    link._client = fake
    link.add_handler(applied.append)
    try:
        link.STATE.status = "training"
        waiter = threading.Thread(target=lambda: got.update(events=link.request(
            protocol.Preview(id="r-1"), expect=2, timeout=30)))
        waiter.start()
        while waiter.is_alive() or fake.script:
            link.pump()
        waiter.join()
        link.pump()
        assert [ev.info["pass"] for ev in got["events"]] == ["rgb", "depth"]
        assert [(ev.type, getattr(ev, "step", None)) for ev in applied] == [
            ("progress", 1), ("progress", 2), ("progress", 3), ("done", None)]
        assert link.STATE.status == "done" and link.STATE.step == 3
        assert fake.sent[0].id == "r-1" and not link._awaited
    finally:
        link._handlers.remove(applied.append)
        link._client = saved_client
        link.STATE.__dict__.update(saved_state)


def test_imported_meshes_need_no_validation(ext, tmp_path):
    """The importer drops what Mesh.validate() would (its half of a big import's time)."""
    _scene(tmp_path)
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], np.float32)
    f = np.array([[0, 1, 2], [1, 3, 2], [2, 2, 3], [0, 1, 9]], np.int32)     # a degenerate, an out-of-range
    obj = ext.blender_io.meshes.mesh_object("m", v, f, None, bpy.context.scene.collection)
    assert len(obj.data.polygons) == 2
    assert obj.data.validate(verbose=False) is False                       # nothing left to fix


# ------------------------------------------------------------------------------ Export Cameras, step by step
def _shots(tmp: Path, n: int = 3):
    """A collection of n cameras looking at the origin, each with a photo named like it."""
    from PIL import Image

    scene = bpy.context.scene
    scene.render.resolution_x = scene.render.resolution_y = 24
    coll = bpy.data.collections.new("shots")
    scene.collection.children.link(coll)
    (tmp / "photos").mkdir()
    for i in range(n):
        cam = bpy.data.objects.new(f"shot{i}", bpy.data.cameras.new(f"shot{i}"))
        cam.location = (3 * math.cos(i), 3 * math.sin(i), 1.0)
        cam.rotation_euler = (-cam.location).to_track_quat("-Z", "Y").to_euler()
        coll.objects.link(cam)
        Image.new("RGB", (24, 24), (40 * i, 100, 200)).save(tmp / "photos" / f"shot{i}.png")
    scene.ngp.camera_collection, scene.ngp.image_folder = coll, str(tmp / "photos")
    bpy.ops.object.select_all(action="DESELECT")
    return coll


def test_export_cameras_photo_by_photo_and_cancel(ext, tmp_path):
    _scene(tmp_path / "run")
    _shots(tmp_path)
    assert bpy.ops.ngp.export_cameras() == {"FINISHED"}        # an earlier dataset to keep
    data = tmp_path / "run" / "data"
    assert sorted(p.name for p in (data / "images").iterdir()) == ["shot0.png", "shot1.png", "shot2.png"]
    assert bpy.data.objects.get("NGP Bounds") is not None
    before = scene_snapshot(tmp_path)
    job = bpy.types.NGP_OT_export_cameras.begin(_OpStub(), bpy.context)
    assert job.total == 3 and job.step() and job.done == 1
    assert len(list((tmp_path / "run" / "data.partial" / "images").iterdir())) == 1
    job.cancel()
    assert scene_snapshot(tmp_path) == before and not (tmp_path / "run" / "data.partial").exists()


class _OpStub:
    """Stands in for the operator instance when a test calls its `begin` (reports recorded)."""

    def __init__(self) -> None:
        self.reports = []

    def report(self, level, text) -> None:
        self.reports.append(text)
