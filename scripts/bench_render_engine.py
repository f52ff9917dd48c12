"""The "NGP Fields" render engine against Cycles, in real Blender (bpy): the textured scene
of scripts/make_scene.py (photo-textured box and sphere, gold torus, Suzanne) is rendered by
the extension's camera rig, trained for --seconds, then a camera path of --frames frames
(around the scene between the rig's views, a Track To constraint aiming it) is rendered by
Render Animation with NGP Fields and with Cycles; PSNR per frame (both composited on
white), seconds per NGP frame, and the median Depth-pass difference on pixels both cover.
Writes benchmarks/render_engine.json.

    .venv/bin/python scripts/bench_render_engine.py [--seconds 120] [--size 100] [--views 60]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def psnr_on_white(a_path: Path, b_path: Path) -> float:
    """PSNR (dB) of two RGBA images, each composited on white."""
    from PIL import Image  # noqa: PLC0415

    def on_white(p: Path) -> np.ndarray:
        x = np.asarray(Image.open(p).convert("RGBA"), np.float64) / 255.0
        return x[..., :3] * x[..., 3:] + (1.0 - x[..., 3:])
    mse = float(np.mean((on_white(a_path) - on_white(b_path)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def orbit_camera(scene, cam_data, target, radius: float, frames: int, start_deg: float = 7.0,
                 step_deg: float = 12.0, elevation_deg: float = 30.0, zoom_out: float = 0.0):
    """A camera keyframed on frames 1..`frames` around `target` (an object, aimed at by a
    Track To constraint), `step_deg` a frame, its distance growing by `zoom_out` of `radius`
    a frame; the scene's frame range set to it. Returns the camera object."""
    import bpy  # noqa: PLC0415
    from mathutils import Vector  # noqa: PLC0415

    cam = bpy.data.objects.new("NGP path camera", cam_data)
    scene.collection.objects.link(cam)
    track = cam.constraints.new("TRACK_TO")          # evaluated per frame by the depsgraph
    track.target, track.track_axis, track.up_axis = target, "TRACK_NEGATIVE_Z", "UP_Y"
    el = math.radians(elevation_deg)
    for frame in range(1, frames + 1):
        az = math.radians(start_deg + step_deg * frame)
        r = radius * (1.0 + zoom_out * (frame - 1))
        cam.location = Vector(target.matrix_world.translation) + r * Vector(
            (math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)))
        cam.keyframe_insert("location", frame=frame)
    scene.camera, scene.frame_start, scene.frame_end = cam, 1, frames
    return cam


def exr_pass(path: Path, name: str) -> np.ndarray:
    """One pass of a multilayer EXR Blender wrote (each pass is a part of its own)."""
    import OpenEXR  # noqa: PLC0415

    with OpenEXR.File(str(path), separate_channels=True) as f:
        for part in f.parts:
            for key, ch in part.channels.items():
                if key.split(".")[-2] == name:
                    return np.asarray(ch.pixels, np.float64)
    raise KeyError(f"no {name} pass in {path}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="training time budget")
    ap.add_argument("--size", type=int, default=100, help="rig and path image size in pixels")
    ap.add_argument("--views", type=int, default=60, help="camera rig size")
    ap.add_argument("--samples", type=int, default=16, help="Cycles samples (rig and reference)")
    ap.add_argument("--frames", type=int, default=5, help="camera path length")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "render_engine.json"))
    args = ap.parse_args(argv)

    import bpy  # noqa: PLC0415

    import build_extension  # noqa: PLC0415
    import make_scene  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        bpy.ops.wm.read_factory_settings(use_empty=True)
        name = build_extension.install_in_blender(build_extension.build(tmp / "dist"), tmp / "repo")
        addon = sys.modules[name]
        link = addon.engine_link
        bpy.context.preferences.addons[name].preferences.engine_python = sys.executable
        objs = make_scene.build_scene(make_scene.save_textures(tmp / "textures"))
        make_scene.setup_render(args.size, args.samples)
        scene = bpy.context.scene
        for o in bpy.context.view_layer.objects:
            o.select_set(o in objs)
        s = scene.ngp
        s.rig_count, s.rig_resolution, s.rig_samples, s.rig_sphere = args.views, args.size, args.samples, False
        s.run_folder, s.train_budget, s.train_seconds = str(tmp / "run"), "SECONDS", args.seconds
        with make_scene.quiet_stdout():
            bpy.ops.ngp.render_rig()
        bpy.ops.ngp.train()
        deadline = time.monotonic() + args.seconds + 300
        while link.STATE.status not in ("done", "error") and time.monotonic() < deadline:
            link.pump()
            time.sleep(0.1)
        if link.STATE.status != "done":
            raise SystemExit(f"error: training ended as {link.STATE.status}: {link.STATE.message}")

        rig = sorted(bpy.data.collections["NGP Rig"].objects, key=lambda o: o.name)
        centre = bpy.data.objects.new("NGP path target", None)
        scene.collection.objects.link(centre)
        lo, hi = addon.bounds.bounds_box()
        centre.location = tuple(0.5 * (lo + hi))
        radius = (rig[0].matrix_world.translation - centre.location).length
        orbit_camera(scene, rig[0].data, centre, radius, args.frames)
        render = scene.render
        render.resolution_x = render.resolution_y = args.size
        render.film_transparent = True
        with make_scene.quiet_stdout():
            render.filepath = str(tmp / "cycles_####")
            bpy.ops.render.render(animation=True)
            render.engine = "NGP_FIELDS"
            render.filepath = str(tmp / "ngp_####")
            t0 = time.perf_counter()
            bpy.ops.render.render(animation=True)
            ngp_seconds = (time.perf_counter() - t0) / args.frames
        psnr = [psnr_on_white(tmp / f"cycles_{i:04d}.png", tmp / f"ngp_{i:04d}.png")
                for i in range(1, args.frames + 1)]
        # Depth: frame 1 of each as a multilayer EXR.
        scene.frame_set(1)
        render.image_settings.media_type = "MULTI_LAYER_IMAGE"
        bpy.context.view_layer.use_pass_z = True
        with make_scene.quiet_stdout():
            render.filepath = str(tmp / "ngp.exr")
            bpy.ops.render.render(write_still=True)
            render.engine = "CYCLES"
            render.filepath = str(tmp / "cycles.exr")
            bpy.ops.render.render(write_still=True)
        depth, alpha = exr_pass(tmp / "ngp.exr", "Depth"), exr_pass(tmp / "ngp.exr", "NGP Opacity")
        ref = exr_pass(tmp / "cycles.exr", "Depth")
        both = (alpha > 0.9) & (ref < 1e3)
        depth_err = float(np.median(np.abs(depth[both] - ref[both]))) if both.any() else None
        steps = int(link.STATE.summary.get("steps", 0))
        link.shutdown()

    result = {
        "benchmark": "render_engine",
        "command": "scripts/bench_render_engine.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "scene": "scripts/make_scene.py build_scene (box, sphere, torus, Suzanne)",
        "rig": {"views": args.views, "size": args.size, "samples": args.samples},
        "training": {"seconds": args.seconds, "steps": steps},
        "path": {"frames": args.frames, "size": args.size, "between_rig_views": True},
        "psnr_vs_cycles_db": [round(p, 2) for p in psnr],
        "psnr_median_db": round(statistics.median(psnr), 2),
        "ngp_seconds_per_frame": round(ngp_seconds, 3),
        "depth_median_abs_diff": depth_err,
        "depth_pixels_compared": int(both.sum()),
        "blender": bpy.app.version_string,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("psnr_vs_cycles_db", "ngp_seconds_per_frame", "depth_median_abs_diff")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
