"""The main job: the Blender extension, driven headlessly in real Blender (bpy), reconstructs
a small textured scene and brings the result back into it.

1. Builds the extension zip with Blender's own tool and installs it the way a user does
   (a user repository under out/demo/extensions), enabled, engine Python = this Python.
2. Builds the scene of `scripts/make_scene.py` (photo-textured box and sphere, gold torus,
   red Suzanne; Cycles on the CPU) and selects its objects.
3. Add-on operators, as the N-panel buttons run them: Render Camera Rig (--views views at
   --size px on the upper hemisphere), Train (the engine service, --seconds, progress
   printed), Import Mesh (vertex colours, world coordinates), Preview from a camera that is
   not in the rig (RGB and depth images); then Train SDF from Active Mesh on Suzanne
   (--sdf-steps steps; the result is imported beside it).
4. Writes out/demo/: demo.blend, run/ (dataset, checkpoint, engine metrics, mesh.ply/.obj,
   previews), preview_rgb.png, preview_depth.png, geometry.ply (the true surfaces) and
   metrics.json (training summary, mesh distance to the true surfaces, SDF Chamfer / IoU
   against Suzanne, timings).

    .venv/bin/python scripts/demo.py [--seconds 120] [--views 80] [--size 128] [--sdf-steps 1500]
        [--out out/demo]
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def pump_until(link, predicate, timeout: float, report=None) -> None:
    """Headless Blender has no event loop: run the add-on's timer callback ourselves."""
    deadline = time.monotonic() + timeout
    last = 0.0
    while time.monotonic() < deadline:
        link.pump()
        if report is not None and time.monotonic() - last > 5.0:
            report(link.STATE)
            last = time.monotonic()
        if predicate(link.STATE):
            return
        time.sleep(0.1)
    raise SystemExit(f"error: timed out waiting for the engine ({link.STATE.message})")


def main(argv: list[str] | None = None) -> int:
    """The demo's stages in order, each timed into metrics.json: long because it reads as
    the script of what a user does (rig, train, import, preview, SDF), one step per line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="training time budget")
    ap.add_argument("--views", type=int, default=80, help="camera rig size")
    ap.add_argument("--size", type=int, default=128, help="rig image size in pixels")
    ap.add_argument("--samples", type=int, default=32, help="Cycles samples per rig view")
    ap.add_argument("--sdf-steps", type=int, default=1500, help="SDF training steps (0: skip the SDF)")
    ap.add_argument("--out", default=str(ROOT / "out" / "demo"), help="output folder")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    import bpy  # noqa: PLC0415 - this process is the Blender session
    from mathutils import Vector  # noqa: PLC0415

    import build_extension  # noqa: PLC0415
    import make_scene  # noqa: PLC0415

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    zip_path = build_extension.build(out / "dist")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    name = build_extension.install_in_blender(zip_path, out / "extensions")
    addon = sys.modules[name]
    link = addon.engine_link
    bpy.context.preferences.addons[name].preferences.engine_python = sys.executable
    timings["install_s"] = time.perf_counter() - t0
    print(f"[demo] extension installed and enabled: {name}", flush=True)

    objs = make_scene.build_scene(make_scene.save_textures(out / "textures"))
    novel = make_scene.setup_render(args.size, args.samples)       # the preview camera
    scene = bpy.context.scene
    for o in bpy.context.view_layer.objects:
        o.select_set(o in objs)
    bpy.context.view_layer.objects.active = objs[0]
    s = scene.ngp
    s.source, s.rig_count, s.rig_resolution, s.rig_samples = "RIG", args.views, args.size, args.samples
    s.run_folder, s.train_seconds, s.mesh_resolution, s.preview_resolution = str(out / "run"), args.seconds, 256, 256

    t0 = time.perf_counter()
    with make_scene.quiet_stdout():            # Blender prints a line per rendered tile
        done = bpy.ops.ngp.render_rig()
    if done != {"FINISHED"}:
        raise SystemExit(f"error: {link.STATE.message}")
    timings["render_rig_s"] = time.perf_counter() - t0
    print(f"[demo] {link.STATE.message} in {timings['render_rig_s']:.0f} s", flush=True)

    t0 = time.perf_counter()
    if bpy.ops.ngp.train() != {"FINISHED"}:
        raise SystemExit(f"error: {link.STATE.message}")

    def report(st) -> None:
        psnr = f"{st.psnr:.2f} dB" if st.psnr is not None else "-"
        eta = f"{st.eta_seconds:.0f} s" if st.eta_seconds is not None else "-"
        print(f"[demo] training: step {st.step}, loss {st.loss:.4f}, PSNR {psnr}, "
              f"{100 * (st.fraction or 0):.0f}%, ETA {eta}", flush=True)

    pump_until(link, lambda st: st.status in ("done", "error"), args.seconds + 300, report)
    if link.STATE.status != "done":
        raise SystemExit(f"error: {link.STATE.message}")
    timings["train_wall_s"] = time.perf_counter() - t0
    summary = dict(link.STATE.summary)
    print(f"[demo] {link.STATE.message}", flush=True)

    t0 = time.perf_counter()
    bpy.ops.ngp.import_mesh()
    pump_until(link, lambda st: "NGP Mesh" in bpy.data.objects or st.status == "error", 600)
    timings["mesh_s"] = time.perf_counter() - t0
    mesh_obj = bpy.data.objects.get("NGP Mesh")
    if mesh_obj is None:
        raise SystemExit(f"error: {link.STATE.message}")
    print(f"[demo] {link.STATE.message}", flush=True)

    # Preview from a camera that is not in the rig: 30 degrees up, between rig views.
    centre = Vector(addon.rig_geometry.box_centre_half(*addon.blender_io.meshes.world_bounds(objs))[0])
    d = Vector((math.cos(math.radians(30)) * math.cos(0.4), math.cos(math.radians(30)) * math.sin(0.4),
                math.sin(math.radians(30))))
    rig_cam = bpy.data.collections["NGP Rig"].objects[0]
    novel.location = centre + (rig_cam.location - centre).length * d
    novel.rotation_euler = (-d).to_track_quat("-Z", "Y").to_euler()
    scene.camera = novel
    t0 = time.perf_counter()
    bpy.ops.ngp.preview()
    pump_until(link, lambda st: {"rgb", "depth"} <= set(st.artifacts), 300)
    timings["preview_s"] = time.perf_counter() - t0
    shutil.copyfile(link.STATE.artifacts["rgb"].replace(".npy", ".png"), out / "preview_rgb.png")
    shutil.copyfile(link.STATE.artifacts["depth"].replace(".npy", ".png"), out / "preview_depth.png")

    # How close the imported mesh lies to the true surfaces (libigl, both ways).
    import numpy as np  # noqa: PLC0415

    from ngp_engine.mesh import mesh_to_mesh_distance, read_mesh  # noqa: PLC0415

    make_scene.export_geometry(objs, out / "geometry.ply")
    gt_v, gt_f, _ = read_mesh(out / "geometry.ply")
    n_v = len(mesh_obj.data.vertices)
    v = np.empty(n_v * 3, np.float32)
    mesh_obj.data.vertices.foreach_get("co", v)
    f = np.empty(len(mesh_obj.data.polygons) * 3, np.int32)
    mesh_obj.data.polygons.foreach_get("vertices", f)
    v, f = v.reshape(-1, 3) @ np.array(mesh_obj.matrix_world)[:3, :3].T, f.reshape(-1, 3)
    diag = float(np.linalg.norm(gt_v.max(0) - gt_v.min(0)))
    to_gt = mesh_to_mesh_distance(v, f, gt_v, gt_f, n=100_000, seed=0)["mean"]
    from_gt = mesh_to_mesh_distance(gt_v, gt_f, v, f, n=100_000, seed=1)["mean"]

    mesh_io = addon.blender_io.meshes
    sdf_metrics = run_sdf(bpy, link, mesh_io, objs, args.sdf_steps, timings) if args.sdf_steps else None

    bpy.ops.wm.save_as_mainfile(filepath=str(out / "demo.blend"))
    link.shutdown()
    metrics = {
        "training": summary, "timings": {k: round(x, 2) for k, x in timings.items()},
        "rig": {"views": args.views, "size": args.size, "samples": args.samples},
        "mesh": {"triangles": int(len(f)), "vertices": int(n_v),
                 "mesh_to_true_mean_rel_to_bbox_diagonal": to_gt / diag,
                 "true_to_mesh_mean_rel_to_bbox_diagonal": from_gt / diag, "bbox_diagonal": diag},
        "preview": {"camera": "novel (not in the rig)", "png": ["preview_rgb.png", "preview_depth.png"]},
        "sdf": sdf_metrics,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({"steps": summary.get("steps"), "mesh_to_true_rel": round(to_gt / diag, 4),
                      "true_to_mesh_rel": round(from_gt / diag, 4),
                      "sdf_chamfer_rel": sdf_metrics and round(sdf_metrics["chamfer"], 5),
                      "sdf_iou": sdf_metrics and round(sdf_metrics["iou"], 4), "out": str(out)}), flush=True)
    return 0


def run_sdf(bpy, link, mesh_io, objs, steps: int, timings: dict) -> dict:
    """Train SDF from Active Mesh on Suzanne (as displayed: its subdivision applied); the
    result lands beside it. Returns Chamfer / IoU / normal consistency against Suzanne."""
    import numpy as np  # noqa: PLC0415

    from ngp_engine.eval.mesh import compare_meshes  # noqa: PLC0415

    monkey = next(o for o in objs if o.name.startswith("Suzanne"))
    for o in bpy.context.view_layer.objects:
        o.select_set(o == monkey)
    bpy.context.view_layer.objects.active = monkey
    s = bpy.context.scene.ngp
    s.train_budget, s.train_steps = "STEPS", steps
    t0 = time.perf_counter()
    if bpy.ops.ngp.train_sdf() != {"FINISHED"}:
        raise SystemExit(f"error: {link.STATE.message}")
    name = f"{monkey.name} SDF"
    pump_until(link, lambda st: name in bpy.data.objects or st.status == "error", 900)
    if name not in bpy.data.objects:
        raise SystemExit(f"error: {link.STATE.message}")
    timings["sdf_s"] = time.perf_counter() - t0
    print(f"[demo] {link.STATE.message}", flush=True)
    sdf = bpy.data.objects[name]
    v = np.empty(len(sdf.data.vertices) * 3, np.float32)
    sdf.data.vertices.foreach_get("co", v)
    f = np.empty(len(sdf.data.polygons) * 3, np.int32)
    sdf.data.polygons.foreach_get("vertices", f)
    # The mesh data is in Suzanne's world coordinates (the object is only moved beside it).
    source_v, source_f = mesh_io.object_triangles(monkey, bpy.context.evaluated_depsgraph_get())
    m = compare_meshes(v.reshape(-1, 3), f.reshape(-1, 3), source_v, source_f)
    return {"object": monkey.name, "steps": steps, "source_triangles": int(len(source_f)),
            "triangles": int(len(f) // 3), "summary": dict(link.STATE.summary),
            **{k: m[k] for k in ("chamfer", "iou", "normal_consistency", "diagonal")}}


if __name__ == "__main__":
    sys.exit(main())
