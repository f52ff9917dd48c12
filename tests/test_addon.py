"""The Blender extension in real Blender (bpy 5.0.1): built with Blender's extension tool,
installed from its zip into a temporary user repository, enabled, driven through its
operators, uninstalled.

Headless Blender has no event loop, so where the UI would run `engine_link.pump` from a timer
the tests call it in a loop (`pump_until`)."""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from addon_harness import PKG_ID, RecordingLayout, installed_extension, pump_until  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from bench_render_engine import exr_pass, orbit_camera, psnr_on_white  # noqa: E402

bpy = pytest.importorskip("bpy", reason="bpy (Blender as a Python module) is not installed")
import addon_utils  # noqa: E402  (ships with bpy)
from bpy_extras.object_utils import world_to_camera_view  # noqa: E402
from mathutils import Vector  # noqa: E402


REPO = "ngp_test_repo"


@pytest.fixture(scope="module")
def extension(tmp_path_factory):
    """The built zip installed and enabled in a temporary user repository; yields the add-on
    module. Uninstalls at the end."""
    tmp = tmp_path_factory.mktemp("ext")
    with installed_extension(tmp, REPO) as (mod, module_name, repo_index):
        assert module_name == f"bl_ext.{REPO}.{PKG_ID}"
        prefs = bpy.context.preferences.addons[module_name].preferences
        yield {"module": mod, "name": module_name, "repo_index": repo_index, "tmp": tmp, "prefs": prefs}
    assert "train" not in dir(bpy.ops.ngp)


# ------------------------------------------------------------------------------ install / register
def test_installed_extension_registers_its_operators_and_panel(extension):
    assert hasattr(bpy.types, "NGP_PT_main") and hasattr(bpy.types, "NGP_PT_image")
    for op in ("render_rig", "cancel_job", "fit_bounds", "export_cameras", "import_transforms", "train", "load_field",
               "train_sdf", "stop", "import_mesh", "preview", "check_engine", "install_engine",
               "cancel_install", "detect_engines", "use_engine_python", "fit_image"):
        assert op in dir(bpy.ops.ngp), op
    assert "NGP_FIELDS" in {getattr(e, "bl_idname", "") for e in bpy.types.RenderEngine.__subclasses__()}
    assert "NGP_FIELDS" in bpy.types.RENDER_PT_format.COMPAT_ENGINES
    assert hasattr(bpy.types.Scene, "ngp")
    # Installed as a zip: the engine is bundled inside the extension folder.
    folder = Path(extension["module"].__file__).parent
    assert (folder / "ngp_engine" / "service" / "protocol.py").is_file()
    assert "bl_info" not in vars(extension["module"])


def test_disable_enable_twice_leaves_nothing_behind(extension):
    name = extension["name"]
    for _ in range(2):
        addon_utils.disable(name, default_set=True)
        assert not hasattr(bpy.types, "NGP_PT_main") and not hasattr(bpy.types.Scene, "ngp")
        assert "NGP_FIELDS" not in bpy.types.RENDER_PT_format.COMPAT_ENGINES
        assert "train" not in dir(bpy.ops.ngp)
        addon_utils.enable(name, default_set=True)
        assert hasattr(bpy.types, "NGP_PT_main") and hasattr(bpy.types.Scene, "ngp")
    bpy.context.preferences.addons[name].preferences.engine_python = sys.executable


# ------------------------------------------------------------------------------ cameras
def _odd_camera(scene, name, fit, shift, loc, target):
    data = bpy.data.cameras.new(name)
    data.lens, data.sensor_width, data.sensor_height, data.sensor_fit = 42.0, 32.0, 20.0, fit
    data.shift_x, data.shift_y = shift
    cam = bpy.data.objects.new(name, data)
    cam.location = loc
    cam.rotation_euler = (Vector(target) - Vector(loc)).to_track_quat("-Z", "Y").to_euler()
    scene.collection.objects.link(cam)
    return cam


@pytest.mark.parametrize("fit", ["AUTO", "HORIZONTAL", "VERTICAL"])
@pytest.mark.parametrize("aspect", [(1.0, 1.0), (1.0, 1.7), (2.0, 1.0)])
def test_exported_intrinsics_project_like_blender(extension, fit, aspect):
    camera_io = extension["module"].blender_io.cameras
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 320, 180, 50
    scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = aspect
    cam = _odd_camera(scene, "cam", fit, (0.13, -0.21), (3.0, -2.0, 1.5), (0.2, 0.1, 0.0))
    bpy.context.view_layer.update()
    k = camera_io.camera_intrinsics(cam, scene)
    c2w = np.array(camera_io.camera_to_world(cam))
    w2c = np.linalg.inv(c2w)
    rng = np.random.default_rng(0)
    pts = rng.uniform(-0.8, 0.8, (50, 3))
    for p in pts:
        ndc = world_to_camera_view(scene, cam, Vector(p))           # x right, y up, in [0, 1]
        blender_px = np.array([ndc.x * k["w"], (1.0 - ndc.y) * k["h"]])
        xc = w2c[:3, :3] @ p + w2c[:3, 3]
        ours = np.array([k["cx"] + k["fl_x"] * xc[0] / -xc[2], k["cy"] - k["fl_y"] * xc[1] / -xc[2]])
        assert np.abs(ours - blender_px).max() < 0.01, (ours, blender_px)


def test_transforms_round_trip_rebuilds_the_cameras(extension, tmp_path):
    mod = extension["module"]
    camera_io = mod.blender_io.cameras
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y, scene.render.resolution_percentage = 200, 120, 100
    scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = 1.0, 1.25
    cams = [_odd_camera(scene, f"c{i}", fit, (0.1 * i, -0.05 * i), (3 * math.cos(i), 3 * math.sin(i), 1.0 + i),
                        (0, 0, 0)) for i, fit in enumerate(["VERTICAL", "HORIZONTAL", "AUTO"])]
    bpy.context.view_layer.update()
    formats = mod.ngp_engine.formats                  # the engine's, as bundled in the extension
    doc = camera_io.transforms_document([(c, f"images/{c.name}.png") for c in cams], scene,
                                        formats.unit_cube.UnitCube.around((0, 0, 0), 2.2))
    path = tmp_path / "transforms.json"
    formats.transforms.write_transforms(path, doc)
    # Cameras only: the images are not there (w and h are given, so none needs opening).
    before = [(camera_io.camera_intrinsics(c, scene), np.array(camera_io.camera_to_world(c))) for c in cams]
    result = bpy.ops.ngp.import_transforms(filepath=str(path))
    assert result == {"FINISHED"}
    coll = bpy.data.collections["transforms"]
    rebuilt = sorted(coll.objects, key=lambda o: o.name)
    assert [o.name for o in rebuilt] == ["c0.001", "c1.001", "c2.001"]   # named after the images
    bpy.context.view_layer.update()
    for (k0, m0), cam in zip(before, rebuilt):
        k1 = camera_io.camera_intrinsics(cam, scene)
        for key in ("fl_x", "fl_y", "cx", "cy", "w", "h"):
            # Blender keeps lens and shift in float32: agreement to 1e-3 px is all there is.
            assert k1[key] == pytest.approx(k0[key], abs=1e-3), key
        np.testing.assert_allclose(np.array(camera_io.camera_to_world(cam)), m0, atol=1e-5)


def test_bad_transforms_file_is_one_sentence(extension, tmp_path):
    bad = tmp_path / "transforms.json"
    bad.write_text(json.dumps({"frames": [{"transform_matrix": [[1, 0, 0]], "file_path": "a"}], "w": 4, "h": 4,
                               "fl_x": 3}))
    mod = extension["module"]
    with pytest.raises(RuntimeError, match=r"frame 0 \('a'\): 'transform_matrix' must be a 4x4 list of numbers"):
        bpy.ops.ngp.import_transforms(filepath=str(bad))
    assert "\n" not in mod.engine_link.STATE.message


# ------------------------------------------------------------------------------ end to end
def _tiny_scene(run_folder: Path):
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.use_denoising = False
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.5, location=(0.3, -0.2, 0.4), segments=32, ring_count=16)
    sphere = bpy.context.object
    mat = bpy.data.materials.new("red")
    mat.diffuse_color = (0.8, 0.1, 0.05, 1.0)
    sphere.data.materials.append(mat)
    light = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    scene.collection.objects.link(light)
    world = bpy.data.worlds.new("w")
    world.color = (0.6, 0.6, 0.6)
    scene.world = world
    sphere.select_set(True)
    bpy.context.view_layer.objects.active = sphere
    s = scene.ngp
    s.rig_count, s.rig_resolution, s.rig_samples, s.rig_sphere = 24, 40, 4, True
    s.run_folder = str(run_folder)
    # A step budget, not seconds: the same training on a loaded or an idle machine.
    s.train_budget, s.train_steps = "STEPS", 150
    s.mesh_resolution = 64
    s.preview_resolution = 48
    return scene, sphere


@pytest.fixture(scope="module")
def trained_scene(extension, tmp_path_factory):
    run = tmp_path_factory.mktemp("addon_run")
    scene, sphere = _tiny_scene(run)
    assert bpy.ops.ngp.render_rig() == {"FINISHED"}
    assert bpy.ops.ngp.train() == {"FINISHED"}         # headless: returns, the pump drives it
    state = pump_until(extension["module"], lambda st: st.status in ("done", "error"), timeout=300)
    assert state.status == "done", state.message
    return {"scene": scene, "sphere": sphere, "run": run}


def test_render_rig_writes_a_dataset_and_restores_the_scene(extension, trained_scene):
    scene, run = trained_scene["scene"], trained_scene["run"]
    doc = json.loads((run / "data" / "transforms.json").read_text())
    assert len(doc["frames"]) == 24 and doc["w"] == doc["h"] == 40
    for fr in doc["frames"]:
        img = bpy.data.images.load(str(run / "data" / fr["file_path"]))
        assert tuple(img.size) == (40, 40) and img.channels == 4
        bpy.data.images.remove(img)
    # Render settings are back where they were (factory resolution, no camera).
    assert (scene.render.resolution_x, scene.render.resolution_y) == (1920, 1080)
    assert scene.render.film_transparent is False and scene.camera is None
    assert len(bpy.data.collections["NGP Rig"].objects) == 24


def test_training_reported_progress_and_finished(extension, trained_scene):
    st = extension["module"].engine_link.STATE
    assert st.summary["steps"] == 150 and st.summary["stopped"] is False     # the step budget
    assert (trained_scene["run"] / "run" / "checkpoint.pt").is_file()
    assert st.max_tick_ms > 0.0          # the pump ran (its speed: scripts/bench_addon.py)


def test_device_list_and_panel_show_what_the_engine_found(extension, trained_scene):
    mod = extension["module"]
    st = mod.engine_link.STATE
    import torch

    from ngp_engine.device import device_name

    cpu = device_name("cpu")
    # The job ran where auto put it, with the backend auto resolved there.
    assert st.job_backend == st.engine_info["backend"] == ("cpu" if st.engine_info["device"] == "cpu"
                                                            else st.job_backend)
    assert st.job_device == f"{st.engine_info['device']} ({st.engine_info['devices'][st.engine_info['device']]})"
    # ... and its MLPs in the precision the NeRF's auto resolved to there (the preference's
    # default, auto, leaves it to the engine).
    from ngp_engine.nn.mlp import resolve_precision
    assert st.job_precision == resolve_precision("auto", torch.device(st.engine_info["device"]))
    assert json.loads((trained_scene["run"] / "run" / "config.json").read_text())["mlp_precision"] == "auto"
    prefs = bpy.context.preferences.addons[mod.__name__].preferences
    # The names Blender shows for the enum (UILayout asks the items callback, as drawing does).
    labels = {ident: bpy.types.UILayout.enum_item_name(prefs, "device", ident)
              for ident in ("auto", "cpu", "cuda", "mps")}
    assert labels["cpu"] == f"CPU: {cpu}"
    assert labels["cuda"] == ("CUDA: " + torch.cuda.get_device_name() if torch.cuda.is_available()
                              else "CUDA (not found)")
    assert labels["auto"] == f"Auto: {st.engine_info['device']}, backend {st.engine_info['backend']}"
    before = prefs.device
    prefs.device = "cpu"                       # identifiers stay the same whatever was found
    assert prefs.device == "cpu"
    prefs.device = before
    log = []
    panel = type("P", (), {"layout": RecordingLayout(log)})()
    bpy.types.NGP_PT_main.draw(panel, bpy.context)
    assert ("label", f"On {st.job_device}, backend {st.job_backend}, MLPs in {st.job_precision}") in log


def test_import_mesh_lands_on_the_source_object(extension, trained_scene):
    assert bpy.ops.ngp.import_mesh() == {"FINISHED"}
    pump_until(extension["module"], lambda st: "NGP Mesh" in bpy.data.objects, timeout=300)
    obj = bpy.data.objects["NGP Mesh"]
    v = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", v)
    v = v.reshape(-1, 3)
    assert len(obj.data.polygons) > 100
    sphere = trained_scene["sphere"]
    dist = np.abs(np.linalg.norm(v - np.array(sphere.location), axis=1) - 0.5)
    assert np.median(dist) < 0.05, np.median(dist)
    assert obj.data.color_attributes.get("Col") is not None and obj.active_material is not None
    assert [c.name for c in obj.users_collection] == ["NGP Run 1"]       # the run's collection


def test_import_mesh_is_cut_to_the_ngp_bounds(extension, trained_scene):
    sphere = trained_scene["sphere"]
    bounds = bpy.data.objects["NGP Bounds"]                 # made with the rig's dataset
    saved = tuple(bounds.location), tuple(bounds.scale)
    try:
        top, bottom = sphere.location.z, sphere.location.z - 0.75    # keep the lower half only
        bounds.location.z, bounds.scale.z = 0.5 * (top + bottom), 0.5 * (top - bottom)
        bpy.context.view_layer.update()
        bpy.data.objects.remove(bpy.data.objects["NGP Mesh"])
        assert bpy.ops.ngp.import_mesh() == {"FINISHED"}
        pump_until(extension["module"], lambda st: "NGP Mesh" in bpy.data.objects, timeout=300)
        mesh = bpy.data.objects["NGP Mesh"].data
        z = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", z)
        z = z.reshape(-1, 3)[:, 2]
        assert len(z) > 100 and z.max() < top + 0.02, (z.max(), top)
        assert z.min() < top - 0.4                          # the bottom of the sphere is there
    finally:
        bounds.location, bounds.scale = saved
        bpy.context.view_layer.update()


def test_preview_from_the_active_camera(extension, trained_scene):
    scene = trained_scene["scene"]
    scene.camera = bpy.data.collections["NGP Rig"].objects[0]
    assert bpy.ops.ngp.preview() == {"FINISHED"}
    pump_until(extension["module"], lambda st: "NGP Depth" in bpy.data.images and "NGP Preview" in bpy.data.images, 120)
    # The scene renders 1920x1080 (restored after the rig): the preview keeps that aspect.
    w, h = 48, 27
    img = bpy.data.images["NGP Preview"]
    assert tuple(img.size) == (w, h)
    px = np.empty(w * h * 4, np.float32)
    img.pixels.foreach_get(px)
    rgb = px.reshape(h, w, 4)[..., :3]
    assert rgb.std() > 0.02                                  # not blank
    depth = np.empty(w * h * 4, np.float32)
    bpy.data.images["NGP Depth"].pixels.foreach_get(depth)
    depth = depth.reshape(h, w, 4)[..., 0]
    # The sphere (radius 0.5) is seen from the rig radius: covered pixels have a depth near it.
    cam = scene.camera
    centre_dist = (cam.matrix_world.translation - trained_scene["sphere"].location).length
    covered = depth > 0
    assert covered.mean() > 0.05
    assert abs(np.median(depth[covered]) - (centre_dist - 0.4)) < 0.3


# ------------------------------------------------------------------------------ NGP Fields render engine
def test_render_engine_renders_a_camera_path_like_cycles(extension, trained_scene, tmp_path):
    """Render Animation with NGP Fields over a 3-frame camera path (two rig poses and one
    between them), compared with Cycles renders of the same cameras; F12 to a multilayer EXR
    has a Depth pass that agrees with Cycles' on the sphere."""
    scene, sphere = trained_scene["scene"], trained_scene["sphere"]
    render = scene.render
    saved = (render.engine, render.resolution_x, render.resolution_y, render.film_transparent, render.filepath,
             scene.camera, scene.frame_start, scene.frame_end, scene.view_settings.view_transform)
    rig = sorted(bpy.data.collections["NGP Rig"].objects, key=lambda o: o.name)
    radius = (rig[0].matrix_world.translation - sphere.location).length
    # Around the sphere 30 degrees up, 12 degrees a frame, moving out (views between the rig's,
    # the sphere smaller each frame).
    cam = orbit_camera(scene, rig[0].data.copy(), sphere, radius, 3, zoom_out=0.15)
    try:
        render.resolution_x = render.resolution_y = 40
        render.film_transparent = True
        render.image_settings.media_type = "IMAGE"
        render.image_settings.file_format, render.image_settings.color_mode = "PNG", "RGBA"
        render.filepath = str(tmp_path / "cycles_####")
        bpy.ops.render.render(animation=True)           # the rig's own look (view transform as rendered)
        render.engine = "NGP_FIELDS"
        scene.view_settings.view_transform = "Standard"   # the field learned display colours
        render.filepath = str(tmp_path / "ngp_####")
        bpy.ops.render.render(animation=True)
        psnr = [psnr_on_white(tmp_path / f"cycles_{i:04d}.png", tmp_path / f"ngp_{i:04d}.png") for i in (1, 2, 3)]
        print("NGP Fields vs Cycles PSNR per frame:", [round(p, 2) for p in psnr])
        assert min(psnr) > 18.0, psnr
        # Each frame is its own camera: frame 3 against Cycles' frame 1 is far off.
        assert psnr_on_white(tmp_path / "cycles_0001.png", tmp_path / "ngp_0003.png") < min(psnr) - 6

        # Rendered in bands of 7 rows (the last one 5) it is the same frame: the bands' cameras
        # join exactly.
        engine_mod = extension["module"].render_engine
        saved_band = engine_mod.BAND_PIXELS
        try:
            engine_mod.BAND_PIXELS = 40 * 7
            render.filepath = str(tmp_path / "bands_####")
            scene.frame_start = scene.frame_end = 2
            bpy.ops.render.render(animation=True)
        finally:
            engine_mod.BAND_PIXELS = saved_band
            scene.frame_start, scene.frame_end = 1, 3
        from PIL import Image
        whole = np.asarray(Image.open(tmp_path / "ngp_0002.png"), np.int16)
        banded = np.asarray(Image.open(tmp_path / "bands_0002.png"), np.int16)
        assert np.abs(whole - banded).max() <= 2

        # Lens shift, pixel aspect and resolution percentage, as Cycles has them: the sphere
        # lands on the same pixels (alpha-weighted centre within a pixel) of a 36 x 20 frame.
        cam.data.shift_x, cam.data.shift_y = 0.12, -0.05
        render.resolution_x, render.resolution_y, render.resolution_percentage = 72, 40, 50
        render.pixel_aspect_x, render.pixel_aspect_y = 1.0, 1.2
        render.image_settings.media_type = "IMAGE"
        try:
            for engine in ("CYCLES", "NGP_FIELDS"):
                render.engine, render.filepath = engine, str(tmp_path / f"odd_{engine}.png")
                bpy.ops.render.render(write_still=True)
        finally:
            cam.data.shift_x = cam.data.shift_y = 0.0
            render.resolution_x, render.resolution_y, render.resolution_percentage = 40, 40, 100
            render.pixel_aspect_x = render.pixel_aspect_y = 1.0

        def centre(path):
            a = np.asarray(Image.open(path).convert("RGBA"), np.float64)[..., 3]
            ys, xs = np.mgrid[0:a.shape[0], 0:a.shape[1]]
            return a.shape, np.array([(a * xs).sum(), (a * ys).sum()]) / a.sum()
        (shape_c, c_cycles), (shape_n, c_ngp) = centre(tmp_path / "odd_CYCLES.png"), centre(tmp_path / "odd_NGP_FIELDS.png")
        assert shape_c == shape_n == (20, 36)
        assert np.abs(c_cycles - c_ngp).max() < 1.0, (c_cycles, c_ngp)
        render.engine = "NGP_FIELDS"

        # F12 of frame 2 to a multilayer EXR: Depth, Normal and opacity passes beside Combined.
        scene.frame_set(2)
        render.image_settings.media_type = "MULTI_LAYER_IMAGE"
        render.filepath = str(tmp_path / "ngp.exr")
        bpy.ops.render.render(write_still=True)
        depth, alpha = exr_pass(tmp_path / "ngp.exr", "Depth"), exr_pass(tmp_path / "ngp.exr", "NGP Opacity")
        assert exr_pass(tmp_path / "ngp.exr", "Normal").shape == (40, 40)
        render.engine = "CYCLES"
        bpy.context.view_layer.use_pass_z = True
        render.filepath = str(tmp_path / "cycles.exr")
        bpy.ops.render.render(write_still=True)
        ref = exr_pass(tmp_path / "cycles.exr", "Depth")
        both = (alpha > 0.9) & (ref < 100)
        assert both.mean() > 0.1 and (depth[alpha < 0.01] > 1e9).all()
        err = np.median(np.abs(depth[both] - ref[both]))
        print("NGP Fields vs Cycles median depth error:", round(float(err), 4))
        # Both are distances along the view axis; measured 0.074 here, the same at the centre
        # and the rim: this 150-step NeRF's expected depth lies a little behind the surface
        # (about a pixel's footprint at this distance).
        assert err < 0.12, err
    finally:
        data = cam.data
        bpy.data.objects.remove(cam)
        bpy.data.cameras.remove(data)
        (render.engine, render.resolution_x, render.resolution_y, render.film_transparent, render.filepath,
         scene.camera, scene.frame_start, scene.frame_end, scene.view_settings.view_transform) = saved
        render.image_settings.media_type = "IMAGE"
        bpy.context.view_layer.use_pass_z = False


def test_render_engine_shows_progress_per_band_and_stops_on_esc(extension, trained_scene, tmp_path, monkeypatch):
    """Bands report progress as they land; when Blender's break flag is up (Esc), the frame
    stops at the band in flight, and the next render is whole again."""
    scene, render = trained_scene["scene"], trained_scene["scene"].render
    mod = extension["module"].render_engine
    engine_cls = mod.NGP_RenderEngine
    saved = (render.engine, render.resolution_x, render.resolution_y, render.film_transparent, render.filepath,
             scene.camera)
    progress, breaks = [], {"after": None, "calls": 0}
    monkeypatch.setattr(mod, "BAND_PIXELS", 40 * 14)                 # 3 bands: 14, 14, 12 rows
    # Blender's own update_progress / test_break cannot be replaced from Python: the engine's
    # two methods around them stand in (what a user sees and what Esc sets).
    monkeypatch.setattr(engine_cls, "band_done", lambda self, f: progress.append(round(f, 3)))

    def stopped(self):
        breaks["calls"] += 1
        return breaks["after"] is not None and len(progress) >= breaks["after"]
    monkeypatch.setattr(engine_cls, "stopped", stopped)
    try:
        scene.camera = bpy.data.collections["NGP Rig"].objects[0]
        render.engine, render.film_transparent = "NGP_FIELDS", True
        render.resolution_x = render.resolution_y = 40
        render.image_settings.media_type, render.image_settings.file_format = "IMAGE", "PNG"
        render.filepath = str(tmp_path / "whole.png")
        bpy.ops.render.render(write_still=True)
        assert progress == [0.35, 0.7, 1.0] and breaks["calls"] >= 3, (progress, breaks, extension["module"].engine_link.STATE.message)
        progress.clear()
        breaks["after"] = 1                                            # Esc once the first band is in
        render.filepath = str(tmp_path / "stopped.png")
        bpy.ops.render.render(write_still=True)
        assert progress == [0.35], progress
        progress.clear()
        breaks["after"] = None
        render.filepath = str(tmp_path / "again.png")
        bpy.ops.render.render(write_still=True)
        assert progress == [0.35, 0.7, 1.0]
        link = extension["module"].engine_link
        link.pump()                                                    # the stopped band's late answer
        assert link.STATE.status == "done" and not link._awaited
    finally:
        (render.engine, render.resolution_x, render.resolution_y, render.film_transparent, render.filepath,
         scene.camera) = saved


def test_a_trained_field_loads_in_a_new_session(extension, trained_scene):
    """As after reopening the file: the engine is gone; Load Trained Field brings the run's
    checkpoint back (no training) and Preview renders it."""
    link = extension["module"].engine_link
    link.shutdown()
    link.reset_state()
    scene = trained_scene["scene"]
    scene.camera = bpy.data.collections["NGP Rig"].objects[0]
    assert bpy.ops.ngp.load_field() == {"FINISHED"}
    state = pump_until(extension["module"], lambda st: st.status in ("done", "error"), timeout=120)
    assert state.status == "done" and state.summary["steps"] == 150, state.message
    if "NGP Preview" in bpy.data.images:
        bpy.data.images.remove(bpy.data.images["NGP Preview"])
    assert bpy.ops.ngp.preview() == {"FINISHED"}
    pump_until(extension["module"], lambda st: "NGP Preview" in bpy.data.images, 120)
    px = np.empty(len(bpy.data.images["NGP Preview"].pixels), np.float32)
    bpy.data.images["NGP Preview"].pixels.foreach_get(px)
    assert px.reshape(-1, 4)[:, :3].std() > 0.02
    scene.camera = None


def test_render_engine_without_a_trained_field_is_one_line(extension, tmp_path):
    link = extension["module"].engine_link
    saved = dict(link.STATE.__dict__)
    try:
        link.STATE.status, link.STATE.mode = "idle", ""
        bpy.ops.wm.read_homefile(use_empty=True)
        scene = bpy.context.scene
        cam = bpy.data.objects.new("c", bpy.data.cameras.new("c"))
        scene.collection.objects.link(cam)
        scene.camera, scene.render.engine = cam, "NGP_FIELDS"
        scene.render.resolution_x = scene.render.resolution_y = 16
        try:
            bpy.ops.render.render()
        except RuntimeError as e:
            assert "nothing trained in this session yet" in str(e)
        assert link.STATE.message.startswith("NGP Fields: nothing trained in this session yet: train first")
    finally:
        link.STATE.__dict__.update(saved)


# ------------------------------------------------------------------------------ SDF
def test_sdf_of_the_active_object_lands_beside_it(extension, tmp_path):
    link = extension["module"].engine_link
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    assert not bpy.ops.ngp.train_sdf.poll()                  # nothing selected: greyed out
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.5, location=(1.0, -2.0, 0.5), segments=48, ring_count=24)
    sphere = bpy.context.object
    sphere.name = "Ball"
    # A modifier counts: the SDF is of what the user sees (a 0.1 displacement outwards).
    disp = sphere.modifiers.new("grow", "DISPLACE")
    disp.strength, disp.mid_level = 0.1, 0.0
    # Mirrored (negative scale, det < 0): the exported faces must still point outwards.
    sphere.scale = (-1.0, 1.0, 1.0)
    s = scene.ngp
    s.run_folder, s.mesh_resolution = str(tmp_path), 64
    s.train_budget, s.train_steps = "STEPS", 200
    assert bpy.ops.ngp.train_sdf.poll()
    assert bpy.ops.ngp.train_sdf() == {"FINISHED"}
    assert link.STATE.mode == "sdf" and link.STATE.source_object == "Ball"
    pump_until(extension["module"], lambda st: "Ball SDF" in bpy.data.objects or st.status == "error", timeout=300)
    assert link.STATE.status == "done", link.STATE.message
    assert (tmp_path / "sdf" / "Ball" / "input.ply").is_file()
    assert "note" not in link.STATE.summary       # closed, and exported outwards though mirrored
    assert (tmp_path / "sdf" / "Ball" / "run" / "checkpoint.pt").is_file()
    obj = bpy.data.objects["Ball SDF"]
    v = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", v)
    v = v.reshape(-1, 3)
    assert len(obj.data.polygons) > 1000
    # Mesh data in the source's world coordinates: the displaced sphere, radius 0.6 ...
    r = np.linalg.norm(v - np.array([1.0, -2.0, 0.5]), axis=1)
    assert np.median(np.abs(r - 0.6)) < 0.01, np.median(np.abs(r - 0.6))
    # ... and the object moved beside the source by 1.2 x its width (1.2), untouched itself.
    assert tuple(obj.location) == pytest.approx((1.2 * sphere.dimensions.x, 0.0, 0.0), abs=1e-4)
    assert tuple(sphere.location) == pytest.approx((1.0, -2.0, 0.5))
    assert "Ball SDF" in link.STATE.message
    # Preview of the SDF (sphere traced) from a camera 3 units in front of the ball.
    cam = bpy.data.objects.new("cam", bpy.data.cameras.new("cam"))
    scene.collection.objects.link(cam)
    cam.location = (1.0, -5.0, 0.5)
    cam.rotation_euler = (math.pi / 2, 0.0, 0.0)                 # looking along +Y
    scene.camera = cam
    scene.render.resolution_x = scene.render.resolution_y = 100
    s.preview_resolution = 32
    assert bpy.ops.ngp.preview() == {"FINISHED"}
    pump_until(extension["module"], lambda st: "NGP Depth" in bpy.data.images, 120)
    depth = np.empty(32 * 32 * 4, np.float32)
    bpy.data.images["NGP Depth"].pixels.foreach_get(depth)
    assert depth.reshape(32, 32, 4)[16, 16, 0] == pytest.approx(3.0 - 0.6, abs=0.02)


def test_training_in_two_processes_from_the_preferences(extension, tmp_path):
    """Preferences > Processes 2: the engine trains data-parallel (a follower process beside
    it), the panel says so, and the result lands as usual."""
    link = extension["module"].engine_link
    bpy.ops.wm.read_homefile(use_empty=True)
    prefs = bpy.context.preferences.addons[extension["name"]].preferences    # after the reload
    bpy.ops.mesh.primitive_uv_sphere_add(radius=0.5, segments=32, ring_count=16)
    bpy.context.object.name = "Duo"
    s = bpy.context.scene.ngp
    s.run_folder, s.mesh_resolution = str(tmp_path), 48
    s.train_budget, s.train_steps = "STEPS", 60
    prefs.processes = 2
    try:
        assert bpy.ops.ngp.train_sdf() == {"FINISHED"}
        pump_until(extension["module"], lambda st: "Duo SDF" in bpy.data.objects or st.status == "error",
                   timeout=300)
    finally:
        prefs.processes = 1
    assert link.STATE.status == "done", link.STATE.message
    assert link.STATE.summary["processes"] == 2 and link.STATE.summary["steps"] == 60
    assert link.STATE.job_device.endswith("x 2 processes")
    assert len(bpy.data.objects["Duo SDF"].data.polygons) > 500


# ------------------------------------------------------------------------------ image field
def test_fit_image_brings_the_fields_rendering_back_as_a_new_image(extension, tmp_path):
    """An image of the file (here made from numbers) is fitted by the engine; its field's
    rendering arrives as "<name> (NGP)" of the same size, close to the original, and the
    message says what it costs."""
    link = extension["module"].engine_link
    bpy.ops.wm.read_homefile(use_empty=True)
    h, w = 48, 64
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    pattern = np.stack([xx, yy, 0.5 + 0.4 * np.sin(6.0 * xx) * np.cos(4.0 * yy)], -1)   # smooth, top row first
    src = bpy.data.images.new("Swatch", width=w, height=h, alpha=False)
    rgba = np.ones((h, w, 4), np.float32)
    rgba[..., :3] = pattern
    src.pixels.foreach_set(rgba[::-1].ravel())                 # Blender rows bottom to top
    s = bpy.context.scene.ngp
    s.run_folder, s.train_budget, s.train_steps = str(tmp_path), "STEPS", 200
    assert bpy.ops.ngp.fit_image(image_name="Swatch") == {"FINISHED"}
    assert (tmp_path / "image" / "Swatch" / "input.png").is_file()
    pump_until(extension["module"], lambda st: "Swatch (NGP)" in bpy.data.images or st.status == "error",
               timeout=300)
    assert link.STATE.status == "done", link.STATE.message
    out = bpy.data.images["Swatch (NGP)"]
    assert tuple(out.size) == (w, h)
    got = np.empty(w * h * 4, np.float32)
    out.pixels.foreach_get(got)
    linear = got.reshape(h, w, 4)[::-1, :, :3]
    shown = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.maximum(linear, 0) ** (1 / 2.4) - 0.055)
    err = np.mean((shown - np.round(pattern * 255) / 255) ** 2)
    assert -10 * np.log10(err) > 25, -10 * np.log10(err)
    assert "Swatch (NGP): PSNR" in link.STATE.message and "KB as float16" in link.STATE.message
    log = []
    bpy.types.NGP_PT_image.draw(type("P", (), {"layout": RecordingLayout(log)})(), bpy.context)
    assert ("operator", "ngp.fit_image") in [x[:2] for x in log]
    assert any(x[0] == "label" and "Swatch (NGP)" in x[1] for x in log)
    with pytest.raises(RuntimeError, match="no image named 'Nope'"):
        bpy.ops.ngp.fit_image(image_name="Nope")


def test_backend_and_precision_preferences_reach_the_job(extension, tmp_path):
    """Preferences > Backend and MLP Precision travel in the train request (the Backend
    preference had been drawn but never sent): the job runs the PyTorch reference with
    bfloat16 MLPs, as the panel and the run's config.json say."""
    link = extension["module"].engine_link
    prefs = bpy.context.preferences.addons[extension["name"]].preferences
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.data.images.new("Tiny", width=32, height=24, alpha=False)
    s = bpy.context.scene.ngp
    s.run_folder, s.train_budget, s.train_steps = str(tmp_path), "STEPS", 5
    before = prefs.backend, prefs.mlp_precision
    prefs.backend, prefs.mlp_precision = "torch", "bfloat16"
    try:
        assert bpy.ops.ngp.fit_image(image_name="Tiny") == {"FINISHED"}
        pump_until(extension["module"], lambda st: "Tiny (NGP)" in bpy.data.images or st.status == "error",
                   timeout=300)
    finally:
        prefs.backend, prefs.mlp_precision = before
    assert link.STATE.status == "done", link.STATE.message
    assert link.STATE.job_backend == "torch" and link.STATE.job_precision == "bfloat16"
    # Saved preferences keep their meaning: Blender stores the enum's number, and the
    # numbers of Float32 and BFloat16 did not move when Auto came.
    items = prefs.bl_rna.properties["mlp_precision"].enum_items
    assert (items["float32"].value, items["bfloat16"].value, items["auto"].value) == (0, 1, 2)
    assert prefs.bl_rna.properties["mlp_precision"].default == "auto"
    (config,) = tmp_path.glob("image/Tiny/**/config.json")
    saved = json.loads(config.read_text())
    assert saved["backend"] == "torch" and saved["mlp_precision"] == "bfloat16"


# ------------------------------------------------------------------------------ errors
def test_missing_interpreter_is_one_sentence(extension, tmp_path):
    link = extension["module"].engine_link
    link.shutdown()
    _tiny_scene(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "transforms.json").write_text("{}")
    prefs = bpy.context.preferences.addons[extension["name"]].preferences
    prefs.engine_python = "/no/such/python"
    try:
        with pytest.raises(RuntimeError, match="engine Python '/no/such/python' not found"):
            bpy.ops.ngp.train()
        assert link.STATE.status == "error"
    finally:
        prefs.engine_python = sys.executable


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_engine_killed_mid_training_is_reported(extension, trained_scene, tmp_path):
    import shutil

    link = extension["module"].engine_link
    scene, _ = _tiny_scene(tmp_path)                     # a fresh file, the rig's dataset reused
    shutil.copytree(trained_scene["run"] / "data", tmp_path / "data")
    scene.ngp.train_budget, scene.ngp.train_seconds = "SECONDS", 600.0
    assert bpy.ops.ngp.train() == {"FINISHED"}
    pump_until(extension["module"], lambda st: st.status == "training" and st.step > 0, timeout=120)
    os.kill(link.client().pid, signal.SIGKILL)
    state = pump_until(extension["module"], lambda st: st.status == "error", timeout=60)
    assert state.message == "engine was killed (SIGKILL)"


def test_unreadable_image_is_one_sentence(extension, tmp_path):
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.resolution_x = scene.render.resolution_y = 40
    coll = bpy.data.collections.new("shots")
    scene.collection.children.link(coll)
    cam = bpy.data.objects.new("shot1", bpy.data.cameras.new("shot1"))
    coll.objects.link(cam)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "shot1.png").write_text("not an image")
    scene.ngp.camera_collection = coll
    scene.ngp.image_folder = str(folder)
    scene.ngp.run_folder = str(tmp_path / "run")
    with pytest.raises(RuntimeError, match=r"image .*shot1.png of camera 'shot1' cannot be read"):
        bpy.ops.ngp.export_cameras()
    assert not (tmp_path / "run" / "data" / "transforms.json").exists()


# ------------------------------------------------------------------------------ panel
@pytest.mark.parametrize("status", ["idle", "starting", "training", "done", "stopped", "error"])
@pytest.mark.parametrize("source", ["RIG", "CAMERAS"])
def test_panel_draws_in_every_state(extension, status, source):
    link = extension["module"].engine_link
    saved = dict(link.STATE.__dict__)
    try:
        link.STATE.status, link.STATE.message = status, f"state {status}"
        link.STATE.step, link.STATE.fraction, link.STATE.psnr = 12, 0.4, 21.5
        bpy.context.scene.ngp.source = source
        budget = "STEPS" if source == "RIG" else "SECONDS"       # both budgets drawn somewhere
        bpy.context.scene.ngp.train_budget = budget
        log = []
        panel = type("P", (), {"layout": RecordingLayout(log)})()
        bpy.types.NGP_PT_main.draw(panel, bpy.context)
        ops = [x[1] for x in log if x[0] == "operator"]
        assert "ngp.train" in ops and "ngp.import_mesh" in ops and "ngp.train_sdf" in ops
        assert ("ngp.render_rig" in ops) == (source == "RIG")
        assert ("ngp.stop" in ops) == (status in ("starting", "training"))
        assert ("label", f"state {status}") in log
        assert any(x[0] == "label" and x[1].startswith("Step 12") for x in log)
        assert ("prop", "train_steps" if budget == "STEPS" else "train_seconds") in log
    finally:
        link.STATE.__dict__.update(saved)
