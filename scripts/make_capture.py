"""Render a "photo capture" of a textured still life with real Blender, for structure from motion.

Unlike make_scene.py (a posed NeRF-synthetic dataset), the photo folder carries no poses:
it is what a person would bring home from walking around an object with a camera. The
true cameras are kept apart, so a test can check what `python -m ngp_engine poses` finds.

Scene: a photo-textured box (astronaut), sphere (coffee) and cylinder (chelsea) on a
ground plane showing a mosaic of nine other photographs (never repeats), sun + sky light, opaque sky background (SIFT needs texture:
the ground and the photos give it; the plain sky gives none, which is realistic).
Cameras follow one smooth ascending spiral around the origin (elevation 15..60 degrees,
1.5 turns, radius and look-at point jittered, a degree or two of roll), so consecutive
views overlap, as frames of a video would.

    OUT/photos/img_000.png ...    RGB 8-bit sRGB, no metadata
    OUT/truth.json                camera-to-world (Blender world, camera looks down -Z,
                                  +Y up), intrinsics, scene parameters; written last

Usage: python scripts/make_capture.py --out DIR [--n-views 40] [--size 384] [--samples 8]
                                      [--seed 0] [--denoise]
Same arguments again -> cache hit (nothing rendered). `bpy` is imported only to render.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))   # make_scene's helpers, by import
from make_scene import horizontal_fov, make_material, quiet_stdout  # noqa: E402

GENERATOR_VERSION = 3  # bump when the scene changes, to invalidate caches
ELEVATION_DEG = (15.0, 60.0)
TURNS = 1.5
RADIUS = 4.2


def log(msg: str) -> None:
    print(f"[make_capture] {msg}", file=sys.stderr, flush=True)


def camera_rig(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions [n, 3], look-at targets [n, 3] and roll angles [n] (radians) along one
    ascending spiral; consecutive views are neighbours (a video's order)."""
    rng = np.random.default_rng(seed)
    t = (np.arange(n) + 0.5) / n
    elev = np.radians(ELEVATION_DEG[0] + (ELEVATION_DEG[1] - ELEVATION_DEG[0]) * t)
    azim = 2 * math.pi * TURNS * t + rng.uniform(0, 2 * math.pi)
    radius = RADIUS * rng.uniform(0.9, 1.1, n)
    pos = radius[:, None] * np.stack([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim),
                                      np.sin(elev)], axis=1)
    target = rng.uniform(-0.15, 0.15, (n, 3)) + (0.0, 0.0, 0.2)
    roll = np.radians(rng.uniform(-2.0, 2.0, n))
    return pos, target, roll


GROUND_TILES = ("gravel", "rocket", "grass", "coffee", "brick", "chelsea", "coins",
                "immunohistochemistry", "camera")


def save_textures(tex_dir: Path) -> dict[str, Path]:
    """scikit-image's bundled photographs; the ground is a 3x3 mosaic of nine different
    ones (a tiled texture repeats, and SIFT then matches one tile with another: a wrong but
    self-consistent reconstruction)."""
    from PIL import Image
    from skimage import data

    tex_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("astronaut", "coffee", "chelsea"):
        paths[name] = tex_dir / f"{name}.png"
        Image.fromarray(getattr(data, name)()).save(paths[name])
    tile = 512
    mosaic = Image.new("RGB", (3 * tile, 3 * tile))
    for k, name in enumerate(GROUND_TILES):
        img = Image.fromarray(getattr(data, name)()).convert("RGB").resize((tile, tile), Image.LANCZOS)
        mosaic.paste(img, ((k % 3) * tile, (k // 3) * tile))
    paths["ground"] = tex_dir / "ground.png"
    mosaic.save(paths["ground"])
    return paths


def _full_uv_per_face(obj) -> None:
    """Every quad gets the whole [0,1]^2 texture (the default cube unwrap shows slivers)."""
    uv = obj.data.uv_layers.active.data
    for poly in obj.data.polygons:
        for k, li in enumerate(poly.loop_indices):
            uv[li].uv = ((0, 0), (1, 0), (1, 1), (0, 1))[k % 4]


def build_scene(tex: dict[str, Path]) -> None:
    import bpy

    ops = bpy.ops
    ops.mesh.primitive_plane_add(size=7.0, location=(0, 0, 0))
    ground = bpy.context.object
    ground.data.materials.append(make_material("ground", image_path=tex["ground"], roughness=0.9))

    ops.mesh.primitive_cube_add(size=0.9, calc_uvs=True, location=(-0.45, -0.25, 0.45),
                                rotation=(0, 0, math.radians(25)))
    box = bpy.context.object
    _full_uv_per_face(box)
    box.data.materials.append(make_material("astronaut", image_path=tex["astronaut"], roughness=0.5))

    ops.mesh.primitive_uv_sphere_add(radius=0.45, segments=48, ring_count=24, calc_uvs=True,
                                     location=(0.5, 0.3, 0.45))
    sphere = bpy.context.object
    sphere.data.shade_smooth()
    sphere.data.materials.append(make_material("coffee", image_path=tex["coffee"], roughness=0.5))

    ops.mesh.primitive_cylinder_add(radius=0.3, depth=1.1, vertices=48, calc_uvs=True,
                                    location=(0.35, -0.6, 0.55))
    cyl = bpy.context.object
    cyl.data.materials.append(make_material("chelsea", image_path=tex["chelsea"], roughness=0.5))

    world = bpy.data.worlds.new("world")
    if world.node_tree is None:
        world.use_nodes = True
    bg = world.node_tree.nodes.get("Background") or world.node_tree.nodes.new("ShaderNodeBackground")
    bg.inputs["Color"].default_value = (0.55, 0.65, 0.8, 1.0)
    bg.inputs["Strength"].default_value = 0.8
    bpy.context.scene.world = world
    sun = bpy.data.lights.new("sun", "SUN")
    sun.energy, sun.angle = 3.0, math.radians(8)
    sun_obj = bpy.data.objects.new("sun", sun)
    sun_obj.rotation_euler = (math.radians(35), 0.0, math.radians(30))
    bpy.context.scene.collection.objects.link(sun_obj)


def setup_render(size: int, samples: int, denoise: bool = False):
    """Cycles CPU, few samples (denoiser optional), opaque RGB PNG; returns the camera object."""
    import os

    import _cycles
    import bpy

    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.max_bounces = 2
    # OIDN costs ~4 s a view on 2 cores, 4-8x the render itself; direct sun light with two
    # bounces is clean enough at a few samples for SIFT, so it is off unless asked for.
    scene.cycles.use_denoising = denoise and bool(getattr(_cycles, "with_openimagedenoise", False))
    scene.render.threads_mode = "FIXED"
    scene.render.threads = os.cpu_count() or 1
    scene.render.use_persistent_data = True
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = False
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    scene.render.image_settings.color_depth = "8"
    scene.view_settings.view_transform = "Standard"
    cam = bpy.data.cameras.new("camera")
    cam.lens, cam.sensor_width, cam.sensor_fit = 35.0, 36.0, "AUTO"
    cam_obj = bpy.data.objects.new("camera", cam)
    scene.collection.objects.link(cam_obj)
    scene.camera = cam_obj
    return cam_obj


def make_capture(out_dir, n_views: int = 40, size: int = 384, samples: int = 8,
                 seed: int = 0, denoise: bool = False) -> Path:
    """Render (or reuse a complete cached) capture into out_dir; return its path."""
    out = Path(out_dir).resolve()
    params = {"generator_version": GENERATOR_VERSION, "n_views": n_views, "size": size,
              "samples": samples, "seed": seed, "denoise": denoise}
    truth_path = out / "truth.json"
    names = [f"img_{i:03d}.png" for i in range(n_views)]
    if truth_path.exists():
        truth = json.loads(truth_path.read_text())
        if truth.get("params") == params and all((out / "photos" / n).exists() for n in names):
            log(f"cache hit: {out}")
            return out
        truth_path.unlink()              # stale: never look complete after a crash midway

    t0 = time.time()
    with quiet_stdout():
        import bpy
        from mathutils import Matrix, Vector

        bpy.ops.wm.read_factory_settings(use_empty=True)
        build_scene(save_textures(out / "textures"))
        cam_obj = setup_render(size, samples, denoise)
    scene = bpy.context.scene
    angle_x = horizontal_fov(scene, cam_obj.data)
    focal = 0.5 * size / math.tan(0.5 * angle_x)
    (out / "photos").mkdir(parents=True, exist_ok=True)
    frames = []
    for i, (p, target, roll) in enumerate(zip(*camera_rig(n_views, seed))):
        loc = Vector(p.tolist())
        look = (Vector(target.tolist()) - loc).to_track_quat("-Z", "Y").to_matrix().to_4x4()
        cam_obj.matrix_world = Matrix.Translation(loc) @ look @ Matrix.Rotation(roll, 4, "Z")
        bpy.context.view_layer.update()
        scene.render.filepath = str(out / "photos" / names[i])
        with quiet_stdout():
            bpy.ops.render.render(write_still=True)
        frames.append({"file_name": names[i],
                       "transform_matrix": [list(row) for row in cam_obj.matrix_world]})
        if (i + 1) % 10 == 0 or i + 1 == n_views:
            log(f"{i + 1}/{n_views} views ({time.time() - t0:.0f} s)")
    truth = {"params": params, "w": size, "h": size, "fl_x": focal, "fl_y": focal,
             "cx": size / 2, "cy": size / 2, "camera_angle_x": angle_x,
             "scene_extent": 2.0,          # objects span about [-1, 1] x [-1, 1] x [0, 1.1]
             "render_seconds": round(time.time() - t0, 1), "frames": frames}
    truth_path.write_text(json.dumps(truth, indent=2))          # last: marks it complete
    log(f"done in {time.time() - t0:.0f} s -> {out}")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="capture folder")
    ap.add_argument("--n-views", type=int, default=40)
    ap.add_argument("--size", type=int, default=384, help="image width = height in pixels")
    ap.add_argument("--samples", type=int, default=8, help="Cycles samples per pixel")
    ap.add_argument("--denoise", action="store_true", help="OpenImageDenoise (slow on a CPU)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    make_capture(a.out, a.n_views, a.size, a.samples, a.seed, a.denoise)


if __name__ == "__main__":
    main()
