"""SDF accuracy against training time on three meshes, with 256^3 extraction.

Meshes:
- Suzanne subdivided twice (Blender's monkey, Subdivision Surface level 2 applied:
  7,958 vertices, 15,744 triangles; it is open at the eyes), made with `bpy` in a
  subprocess (`pip install bpy==5.0.1`, in the test extras).
- `nut.ply` and `ant.ply` from the pyvista wheel (`pyvista/examples/`, closed meshes of
  1,046 and 912 triangles), fetched with `pip download pyvista==0.49.1 --no-deps` into
  `--cache` and read straight from the wheel; pyvista itself is not installed.

For each mesh: the ground-truth pool is computed (its time recorded apart), then the
field trains (preset cpu-fast by default) and at each checkpoint of *training* time
(default 30, 60, 120 s) the zero level set is extracted at `--resolution` (256) along the
longest side and compared with the input: Chamfer distance relative to the bounding-box
diagonal, normal consistency, volumetric IoU (2^20 points). Extraction and metrics are not
counted as training time. Peak RSS of the process is recorded at the end. A throwaway
trainer runs a few steps first so the numba kernel's loading is not in the first checkpoint.

Run from the repo root (about 10 minutes):
    .venv/bin/python scripts/bench_sdf.py [--meshes suzanne,nut,ant] [--checkpoints 30,60,120]
        [--resolution 256] [--preset cpu-fast] [--mlp-precision P] [--out benchmarks/sdf.json]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ngp_engine import config as cfgmod  # noqa: E402
from ngp_engine.config import MLP_PRECISIONS, SDF_PRESETS  # noqa: E402
from ngp_engine.data.mesh import load_sdf_mesh  # noqa: E402
from ngp_engine.device import machine_info, pick_device  # noqa: E402
from ngp_engine.eval.mesh import compare_meshes  # noqa: E402
from ngp_engine.tasks.sdf.task import SdfTask  # noqa: E402

PYVISTA = "pyvista==0.49.1"
SUZANNE = """
import sys, bpy, numpy as np
bpy.ops.wm.read_homefile(use_empty=True)
bpy.ops.mesh.primitive_monkey_add()
obj = bpy.context.object
mod = obj.modifiers.new("subdivide", "SUBSURF")
mod.levels = mod.render_levels = 2
bpy.ops.object.modifier_apply(modifier=mod.name)
me = obj.data
me.calc_loop_triangles()
v = np.empty(len(me.vertices) * 3); me.vertices.foreach_get("co", v)
t = np.empty(len(me.loop_triangles) * 3, np.int64); me.loop_triangles.foreach_get("vertices", t)
sys.path.insert(0, sys.argv[2])
from ngp_engine.mesh.io import write_ply
write_ply(sys.argv[1], v.reshape(-1, 3), t.reshape(-1, 3))
"""


def suzanne(cache: Path) -> Path:
    path = cache / "suzanne_subdiv2.ply"
    if not path.is_file():
        subprocess.run([sys.executable, "-c", SUZANNE, str(path), str(ROOT)], check=True)
    return path


def pyvista_example(cache: Path, name: str) -> Path:
    path = cache / f"pyvista_{name}.ply"
    if not path.is_file():
        wheels = sorted(cache.glob("pyvista-*.whl"))
        if not wheels:
            subprocess.run([sys.executable, "-m", "pip", "download", PYVISTA, "--no-deps", "-q",
                            "-d", str(cache)], check=True)
            wheels = sorted(cache.glob("pyvista-*.whl"))
        with zipfile.ZipFile(wheels[-1]) as z:
            path.write_bytes(z.read(f"pyvista/examples/{name}.ply"))
    return path


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_mesh(path: Path, preset: str, device: torch.device, checkpoints: list[float],
             resolution: int, mlp_precision: str | None = None) -> dict[str, Any]:
    mesh = load_sdf_mesh(path)
    cfg = SDF_PRESETS[preset]
    if mlp_precision is not None:
        cfg = cfgmod.replace(cfg, mlp_precision=mlp_precision)
    warm = SdfTask(mesh, cfgmod.replace(cfg, ground_truth_pool=1 << 12), device)
    warm.train(steps=3)
    trainer = SdfTask(mesh, cfg, device)
    gt_seconds = trainer.samples.ground_truth_seconds
    curve = []
    for target in checkpoints:
        while trainer.seconds < target:
            trainer.step()
        t0 = time.perf_counter()
        v, f = trainer.extract(resolution)
        extract_s = time.perf_counter() - t0
        m = compare_meshes(v, f, mesh.vertices, mesh.faces)
        row = {"seconds": round(trainer.seconds, 1), "steps": trainer.steps_done,
               "chamfer_pct": round(100 * m["chamfer"], 4), "iou": round(m["iou"], 4),
               "normal_consistency": round(m["normal_consistency"], 4), "faces": int(len(f)),
               "extract_seconds": round(extract_s, 2),
               "extract_evaluated_fraction": round(trainer.last_extract_fraction, 3)}
        curve.append(row)
        print(f"  {path.name}: {json.dumps(row)}", flush=True)
    return {"mesh": path.name, "faces": int(len(mesh.faces)), "boundary_edges": mesh.boundary_edges,
            "diagonal": round(mesh.diagonal, 4), "ground_truth_seconds": round(gt_seconds, 2),
            "ground_truth_pool": cfg.ground_truth_pool, "n_params": trainer.n_params,
            "backend": trainer.backend, "mlp_precision": trainer.mlp_precision, "curve": curve}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--meshes", default="suzanne,nut,ant")
    ap.add_argument("--checkpoints", default="30,60,120", help="training seconds to evaluate at")
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--preset", default="cpu-fast", choices=sorted(SDF_PRESETS))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--mlp-precision", choices=MLP_PRECISIONS, default=None,
                    help="the MLPs' precision (default: the preset's)")
    ap.add_argument("--cache", default=str(ROOT / "out" / "bench_sdf_meshes"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "sdf.json"))
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    device = pick_device(args.device)
    checkpoints = [float(x) for x in args.checkpoints.split(",")]
    results = []
    for name in args.meshes.split(","):
        path = suzanne(cache) if name == "suzanne" else pyvista_example(cache, name)
        print(f"{name}: {path}", flush=True)
        results.append(run_mesh(path, args.preset, device, checkpoints, args.resolution,
                                args.mlp_precision))
    out = {"command": "scripts/bench_sdf.py " + " ".join(sys.argv[1:]), "preset": args.preset,
           "resolution": args.resolution, "machine": machine_info(device),
           "peak_rss_gib": round(peak_rss_gib(), 2), "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
