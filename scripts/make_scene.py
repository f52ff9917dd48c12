"""Render a NeRF-synthetic-style dataset of a small textured scene with real Blender.

The scene (a photo-textured box and sphere, a gold torus and a rough plastic Suzanne, no
ground plane, transparent background) is rendered with Cycles on the CPU from cameras on
the upper hemisphere. Output layout, as in NeRF-synthetic / instant-ngp:

    DIR/train/r_{i}.png, DIR/test/r_{i}.png           RGBA 8-bit, plain sRGB ("Standard")
    DIR/transforms_{train,test,val}.json              camera-to-world matrices (val = test)
    DIR/geometry.ply                                  ground-truth triangles, world units
    DIR/textures/*.png                                the image textures used
    DIR/scene.json                                    parameters + bbox; written last

Usage: python scripts/make_scene.py --out DIR [--size 160] [--n-train 100] [--n-test 20]
                                    [--samples 128] [--seed 0] [--scene default|pedestal]

`--scene pedestal` renders instead a sphere on a wide block, floating, seen from elevations
of 30-80 degrees only (see `build_pedestal_scene`); same layout, scene.json also names it.
A second run with identical parameters is a cache hit. `bpy` is imported only when a
render is needed, so the cache check is cheap.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

GENERATOR_VERSION = 1  # bump when the scene content changes, to invalidate caches
DEFAULT_SAMPLES = 128  # ~1.3 s per 160px view on 2 cores: ~2.6 min for 120 views
RADIUS = 4.0
ELEVATION_DEG = (10.0, 80.0)
PEDESTAL_ELEVATION_DEG = (30.0, 80.0)   # the `pedestal` scene: nothing under it is ever seen
BOX_LIMIT = 1.2  # all geometry must lie in [-BOX_LIMIT, BOX_LIMIT]^3


def log(msg: str) -> None:
    """Progress goes to stderr so stdout (Blender's own chatter) can be discarded."""
    print(f"[make_scene] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet_stdout():
    """Silence Blender's C-level render log by pointing fd 1 at /dev/null."""
    import ctypes

    libc_fflush = ctypes.CDLL(None).fflush  # C stdio buffers must drain while muted too
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        libc_fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def camera_positions(n: int, seed: int, spiral: bool,
                     elevation_deg: tuple[float, float] = ELEVATION_DEG) -> np.ndarray:
    """(n, 3) points at RADIUS with elevation in `elevation_deg`, area-uniform in the band.

    Training views follow a Fibonacci spiral (even coverage), test views are seeded random
    draws, so the two sets never coincide.
    """
    rng = np.random.default_rng(seed + (0 if spiral else 1000))
    z_lo, z_hi = (math.sin(math.radians(e)) for e in elevation_deg)
    if spiral:
        z = z_lo + (z_hi - z_lo) * (np.arange(n) + 0.5) / n
        azimuth = np.arange(n) * math.pi * (3.0 - math.sqrt(5.0)) + rng.uniform(0, 2 * math.pi)
    else:
        z = rng.uniform(z_lo, z_hi, n)
        azimuth = rng.uniform(0, 2 * math.pi, n)
    r_xy = np.sqrt(1.0 - z * z)
    return RADIUS * np.stack([r_xy * np.cos(azimuth), r_xy * np.sin(azimuth), z], axis=1)


def save_textures(tex_dir: Path) -> dict[str, Path]:
    """Write scikit-image's sample photographs as PNGs (the dataset stays self-contained)."""
    from PIL import Image
    from skimage import data

    tex_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("astronaut", "coffee"):
        paths[name] = tex_dir / f"{name}.png"
        Image.fromarray(getattr(data, name)()).save(paths[name])
    return paths


def make_material(name: str, color=(0.8, 0.8, 0.8), image_path: Path | None = None,
                  metallic: float = 0.0, roughness: float = 0.5):
    """A Principled BSDF material, optionally with an Image Texture as base colour."""
    import bpy

    mat = bpy.data.materials.new(name)
    if mat.node_tree is None:  # Blender < 5 needs use_nodes; 5.0 deprecates setting it
        mat.use_nodes = True
    nodes, links = mat.node_tree.nodes, mat.node_tree.links
    nodes.clear()
    bsdf = nodes.new("ShaderNodeBsdfPrincipled")
    out = nodes.new("ShaderNodeOutputMaterial")
    links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    bsdf.inputs["Base Color"].default_value = (*color, 1.0)
    bsdf.inputs["Metallic"].default_value = metallic
    bsdf.inputs["Roughness"].default_value = roughness
    if image_path is not None:
        tex = nodes.new("ShaderNodeTexImage")
        tex.image = bpy.data.images.load(str(image_path))
        links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def build_scene(textures: dict[str, Path]) -> list:
    """Create the four objects, the world light and two lamps; return the mesh objects
    (bpy calls only, one object after the other, hence the length)."""
    import bpy

    ops = bpy.ops
    objs = []
    # The group spans about [-1.0, 1.0] x [-0.82, 0.82] x [-0.88, 0.88], centred on the
    # origin: at radius 4 with a 39.6 degree field of view that is the largest size at
    # which no view crops an object (at ~1.15 three views in five did).
    # Box with the astronaut photo on every face: give each quad the full [0,1]^2 UV square
    # (the default cross layout would show only a sliver of the photo per face).
    ops.mesh.primitive_cube_add(size=0.94, calc_uvs=True, location=(-0.37, -0.2, -0.41),
                                rotation=(0.0, 0.0, math.radians(25)))
    box = bpy.context.object
    uv = box.data.uv_layers.active.data
    for poly in box.data.polygons:
        for k, li in enumerate(poly.loop_indices):
            uv[li].uv = ((0, 0), (1, 0), (1, 1), (0, 1))[k % 4]
    box.data.materials.append(make_material("astronaut", image_path=textures["astronaut"],
                                            roughness=0.45))
    objs.append(box)

    ops.mesh.primitive_uv_sphere_add(radius=0.47, segments=48, ring_count=24, calc_uvs=True,
                                     location=(0.44, 0.35, -0.41),
                                     rotation=(0.0, 0.0, math.radians(-60)))
    sphere = bpy.context.object
    sphere.data.shade_smooth()
    sphere.data.materials.append(make_material("coffee", image_path=textures["coffee"],
                                               roughness=0.3))
    objs.append(sphere)

    # Gold torus lying tilted on top of the box.
    ops.mesh.primitive_torus_add(major_radius=0.36, minor_radius=0.12, generate_uvs=True,
                                 location=(-0.37, -0.2, 0.23),
                                 rotation=(math.radians(20), 0.0, 0.0))
    torus = bpy.context.object
    torus.data.shade_smooth()
    torus.data.materials.append(make_material("gold", (1.0, 0.71, 0.29), metallic=1.0,
                                              roughness=0.2))
    objs.append(torus)

    # Red rough plastic Suzanne on the sphere; a subdivision modifier makes the
    # depsgraph evaluation in export_geometry matter.
    ops.mesh.primitive_monkey_add(size=0.85, calc_uvs=True, location=(0.4, 0.31, 0.48),
                                  rotation=(0.0, 0.0, math.radians(-150)))
    monkey = bpy.context.object
    monkey.data.shade_smooth()
    monkey.modifiers.new("subsurf", "SUBSURF").levels = 1
    monkey.modifiers["subsurf"].render_levels = 1
    monkey.data.materials.append(make_material("plastic", (0.8, 0.08, 0.05), roughness=0.6))
    objs.append(monkey)

    add_lights()
    return objs


def add_lights() -> None:
    """Soft ambient light from the world (film_transparent hides it from the camera), a key
    sun and a fill area light for realistic shading; shared by every scene."""
    import bpy

    world = bpy.data.worlds.new("world")
    if world.node_tree is None:
        world.use_nodes = True
    bg = world.node_tree.nodes.get("Background") or world.node_tree.nodes.new(
        "ShaderNodeBackground")
    bg.inputs["Color"].default_value = (0.6, 0.65, 0.75, 1.0)
    bg.inputs["Strength"].default_value = 0.6
    bpy.context.scene.world = world
    sun = bpy.data.lights.new("sun", "SUN")
    sun.energy, sun.angle = 3.0, math.radians(10)
    sun_obj = bpy.data.objects.new("sun", sun)
    sun_obj.rotation_euler = (math.radians(40), 0.0, math.radians(30))
    area = bpy.data.lights.new("fill", "AREA")
    area.energy, area.size = 300.0, 2.0
    area_obj = bpy.data.objects.new("fill", area)
    area_obj.location = (-3.0, 2.5, 2.0)
    area_obj.rotation_euler = (-area_obj.location).to_track_quat("-Z", "Y").to_euler()
    for o in (sun_obj, area_obj):
        bpy.context.scene.collection.objects.link(o)


def build_pedestal_scene(textures: dict[str, Path]) -> list:
    """The `pedestal` scene: a photo-textured sphere on a wide photo-textured block, floating
    (no ground), the object's bottom (the block's) at z = -0.95. Photographed from
    elevations of 30 degrees and more, the block's bottom face and the space under it are
    never seen: the shape of the issue "space no camera saw" (real captures of an object on
    a stand or a table). Returns the mesh objects."""
    import bpy

    ops = bpy.ops
    ops.mesh.primitive_cube_add(size=1.0, calc_uvs=True, location=(0.0, 0.0, -0.575),
                                rotation=(0.0, 0.0, math.radians(20)))
    block = bpy.context.object
    block.scale = (1.0, 1.0, 0.75)           # z from -0.95 to -0.2, applied below
    ops.object.transform_apply(location=False, rotation=False, scale=True)
    uv = block.data.uv_layers.active.data
    for poly in block.data.polygons:         # the whole photo on every face, as in build_scene
        for k, li in enumerate(poly.loop_indices):
            uv[li].uv = ((0, 0), (1, 0), (1, 1), (0, 1))[k % 4]
    block.data.materials.append(make_material("astronaut", image_path=textures["astronaut"],
                                              roughness=0.45))
    ops.mesh.primitive_uv_sphere_add(radius=0.42, segments=48, ring_count=24, calc_uvs=True,
                                     location=(0.05, -0.05, 0.22),
                                     rotation=(0.0, 0.0, math.radians(-60)))
    sphere = bpy.context.object
    sphere.data.shade_smooth()
    sphere.data.materials.append(make_material("coffee", image_path=textures["coffee"],
                                               roughness=0.3))
    add_lights()
    return [block, sphere]


# name: (builder, camera elevation band in degrees)
SCENES = {"default": (build_scene, ELEVATION_DEG),
          "pedestal": (build_pedestal_scene, PEDESTAL_ELEVATION_DEG)}


def setup_render(size: int, samples: int):
    """Cycles on the CPU, RGBA PNG, Standard view transform; returns the camera object."""
    import bpy

    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = samples
    scene.cycles.use_adaptive_sampling = False
    scene.cycles.max_bounces = 4  # plenty for this scene; cuts the cost of glossy paths
    # OIDN ships in the PyPI bpy wheel; bpy.app.build_options does not report it in 5.0,
    # but Cycles' own module does. Without it, render noisy rather than fail.
    import _cycles
    has_oidn = bool(getattr(_cycles, "with_openimagedenoise", False))
    scene.cycles.use_denoising = has_oidn
    if has_oidn:
        scene.cycles.denoiser = "OPENIMAGEDENOISE"
    else:
        log("OpenImageDenoise not in this build; rendering without a denoiser")
    scene.render.threads_mode = "FIXED"
    scene.render.threads = os.cpu_count() or 1
    scene.render.use_persistent_data = True  # keep BVH/textures between the per-view renders
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "8"
    scene.display_settings.display_device = "sRGB"
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"

    cam = bpy.data.cameras.new("camera")
    cam.lens, cam.sensor_width, cam.sensor_fit = 50.0, 36.0, "AUTO"
    cam_obj = bpy.data.objects.new("camera", cam)
    scene.collection.objects.link(cam_obj)
    scene.camera = cam_obj
    return cam_obj


def horizontal_fov(scene, cam) -> float:
    """camera_angle_x of the rendered image, honouring sensor fit and pixel aspect."""
    r = scene.render
    w, h = r.resolution_x * r.pixel_aspect_x, r.resolution_y * r.pixel_aspect_y
    fit = cam.sensor_fit
    if fit == "AUTO":
        sensor, horizontal = cam.sensor_width, w >= h
    else:
        horizontal = fit == "HORIZONTAL"
        sensor = cam.sensor_width if horizontal else cam.sensor_height
    half = math.atan(0.5 * sensor / cam.lens)
    return 2.0 * (half if horizontal else math.atan(math.tan(half) * w / h))


def render_split(out: Path, split: str, positions: np.ndarray, cam_obj, t0: float) -> list:
    """Render one view per position into out/split/r_i.png; return the frame records."""
    import bpy
    from mathutils import Vector

    scene = bpy.context.scene
    (out / split).mkdir(parents=True, exist_ok=True)
    frames = []
    for i, p in enumerate(positions):
        loc = Vector(p.tolist())
        cam_obj.location = loc
        # Look at the origin: -Z towards the target, +Y as up (Blender = NeRF convention).
        cam_obj.rotation_euler = (-loc).to_track_quat("-Z", "Y").to_euler()
        bpy.context.view_layer.update()
        scene.render.filepath = str(out / split / f"r_{i}.png")
        with quiet_stdout():
            bpy.ops.render.render(write_still=True)
        frames.append({"file_path": f"./{split}/r_{i}", "rotation": 0.0,
                       "transform_matrix": [list(row) for row in cam_obj.matrix_world]})
        if (i + 1) % 10 == 0 or i + 1 == len(positions):
            log(f"{split}: {i + 1}/{len(positions)} views ({time.time() - t0:.0f} s)")
    return frames


def export_geometry(objs: list, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Merge evaluated, triangulated, world-space meshes into one PLY; return its bbox."""
    import bpy

    from ngp_engine.formats.ply import write_ply     # the engine's numpy PLY (pip install -e .)

    depsgraph = bpy.context.evaluated_depsgraph_get()
    all_v, all_f, base = [], [], 0
    for obj in objs:
        ev = obj.evaluated_get(depsgraph)
        mesh = ev.to_mesh()
        mesh.calc_loop_triangles()
        co = np.empty(len(mesh.vertices) * 3, np.float32)
        mesh.vertices.foreach_get("co", co)
        tri = np.empty(len(mesh.loop_triangles) * 3, np.int32)
        mesh.loop_triangles.foreach_get("vertices", tri)
        mw = np.array(ev.matrix_world)
        co = co.reshape(-1, 3) @ mw[:3, :3].T + mw[:3, 3]
        all_v.append(co.astype(np.float32))
        all_f.append(tri.reshape(-1, 3) + base)
        base += len(co)
        ev.to_mesh_clear()
    v, f = np.concatenate(all_v), np.concatenate(all_f)
    write_ply(path, v, f)
    return v.min(0), v.max(0)


def expected_files(out: Path, n_train: int, n_test: int) -> list[Path]:
    """Every file a complete dataset has (scene.json aside)."""
    files = [out / f"transforms_{s}.json" for s in ("train", "test", "val")]
    files += [out / "geometry.ply", out / "textures/astronaut.png", out / "textures/coffee.png"]
    files += [out / f"train/r_{i}.png" for i in range(n_train)]
    return files + [out / f"test/r_{i}.png" for i in range(n_test)]


def scene_params(size: int = 160, n_train: int = 100, n_test: int = 20,
                 samples: int = DEFAULT_SAMPLES, seed: int = 0, scene: str = "default") -> dict:
    """What scene.json records of a dataset's making (the cache key)."""
    params = {"generator_version": GENERATOR_VERSION, "size": size, "n_train": n_train,
              "n_test": n_test, "samples": samples, "seed": seed}
    if scene != "default":
        # Only other scenes record their name: the default scene's scene.json (and so every
        # cached default dataset) stays exactly what it was.
        params["scene"] = scene
    return params


def differences(out: Path, **args) -> dict:
    """{} when `out` holds the complete dataset that `make_scene(out, **args)` would render;
    else what differs, {key: (recorded, wanted)} ("scene.json" or "files" when missing)."""
    out = Path(out)
    meta_path = out / "scene.json"
    if not meta_path.is_file():
        return {"scene.json": (None, "present")}
    meta = json.loads(meta_path.read_text())
    params = scene_params(**args)
    diff = {k: (meta.get(k), v) for k, v in params.items() if meta.get(k) != v}
    if meta.get("scene", "default") != args.get("scene", "default"):
        diff["scene"] = (meta.get("scene", "default"), args.get("scene", "default"))
    if not diff and not all(p.exists() for p in expected_files(out, params["n_train"], params["n_test"])):
        diff["files"] = ("incomplete", "complete")
    return diff


def make_scene(out_dir, size: int = 160, n_train: int = 100, n_test: int = 20,
               samples: int = DEFAULT_SAMPLES, seed: int = 0, scene: str = "default") -> Path:
    """Render the dataset of `scene` (a SCENES key) into out_dir (or reuse a complete cached
    one); return its path."""
    if scene not in SCENES:
        raise SystemExit(f"--scene: unknown scene {scene!r} (known: {', '.join(SCENES)})")
    builder, elevation = SCENES[scene]
    out = Path(out_dir).resolve()
    params = scene_params(size, n_train, n_test, samples, seed, scene)
    meta_path = out / "scene.json"
    if meta_path.exists():
        if not differences(out, size=size, n_train=n_train, n_test=n_test, samples=samples,
                           seed=seed, scene=scene):
            log(f"cache hit: {out} already holds this dataset; not re-rendering")
            return out
        meta_path.unlink()  # stale: drop it first so a crash midway never looks complete

    t0 = time.time()
    with quiet_stdout():  # Cycles prints a CUDA-probe warning while being configured
        import bpy

        bpy.ops.wm.read_factory_settings(use_empty=True)
        objs = builder(save_textures(out / "textures"))
        cam_obj = setup_render(size, samples)
        lo, hi = export_geometry(objs, out / "geometry.ply")
    if (lo < -BOX_LIMIT).any() or (hi > BOX_LIMIT).any():
        raise RuntimeError(f"scene bbox {lo}..{hi} leaves [-{BOX_LIMIT}, {BOX_LIMIT}]^3")
    angle_x = horizontal_fov(bpy.context.scene, cam_obj.data)
    log(f"scene built; rendering {n_train}+{n_test} views at {size}px, {samples} spp")

    for split, n, spiral in (("train", n_train, True), ("test", n_test, False)):
        frames = render_split(out, split, camera_positions(n, seed, spiral, elevation), cam_obj, t0)
        doc = {"camera_angle_x": angle_x, "aabb_scale": 1, "scale": 0.33,
               "offset": [0.5, 0.5, 0.5], "frames": frames}
        names = ("train",) if split == "train" else ("test", "val")
        for name in names:
            (out / f"transforms_{name}.json").write_text(json.dumps(doc, indent=2))

    meta = {**params, "bbox_min": lo.tolist(), "bbox_max": hi.tolist(),
            "camera_angle_x": angle_x, "radius": RADIUS, "elevation_deg": list(elevation),
            "render_seconds": round(time.time() - t0, 1)}
    meta_path.write_text(json.dumps(meta, indent=2))  # last: marks the dataset complete
    log(f"done in {time.time() - t0:.0f} s -> {out}")
    return out


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="dataset folder")
    ap.add_argument("--size", type=int, default=160, help="image width = height in pixels")
    ap.add_argument("--n-train", type=int, default=100)
    ap.add_argument("--n-test", type=int, default=20)
    ap.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="Cycles samples/pixel")
    ap.add_argument("--seed", type=int, default=0, help="camera distribution seed")
    ap.add_argument("--scene", choices=list(SCENES), default="default",
                    help="default: box, sphere, torus and Suzanne; pedestal: a sphere on a wide "
                         "block, photographed from 30-80 degrees so nothing under it is seen")
    a = ap.parse_args(argv)
    make_scene(a.out, a.size, a.n_train, a.n_test, a.samples, a.seed, a.scene)


if __name__ == "__main__":
    main()
