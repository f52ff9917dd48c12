"""Space no camera saw: the mesh of a NeRF of an object photographed from above only.

Renders (or reuses) the `pedestal` scene of `scripts/make_scene.py` (a sphere on a wide
block, floating; cameras at 30-80 degrees of elevation, so the block's bottom and the space
under it are never seen), trains a NeRF for `--steps`, and meshes it three ways:

- `raw`: the network's density as it is (no cameras);
- `fill`: hidden space the observed surfaces enclose filled, nothing emptied;
- `fill_and_empty` (what `nerf mesh` does): filled as above, and emptied where a photo shows
  background or where hidden space is not enclosed (the shadow under the object).

For each: the share of the mesh's area below the object's true bottom (by more than 1, 2.5
and 5% of the object's diagonal; the mesh lattice's cell is about 1%), and the mean distances mesh -> truth and truth -> mesh (libigl, 10^5
samples each way) relative to the scene box diagonal (as scripts/bench_nerf.py) and to the
object's own diagonal. Writes benchmarks/hidden_space.json.

    .venv/bin/python scripts/bench_hidden.py [--scene out/pedestal_scene] [--steps 400]
        [--resolution 128] [--preset cpu-fast] [--out benchmarks/hidden_space.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ngp_engine.config import NERF_PRESETS  # noqa: E402
from ngp_engine.data.transforms import load_nerf_dataset  # noqa: E402
from ngp_engine.device import machine_info, pick_device  # noqa: E402
from ngp_engine.mesh import mesh_to_mesh_distance, read_mesh, remove_floaters  # noqa: E402
from ngp_engine.mesh.marching_cubes import marching_cubes, sample_grid  # noqa: E402
from ngp_engine.tasks.nerf.mesh import DEFAULT_MESH_THRESHOLD, HIDDEN_RESOLUTION, mesh_box  # noqa: E402
from ngp_engine.tasks.nerf.task import NerfTask  # noqa: E402
from ngp_engine.tasks.nerf.visibility import (SpaceEdit, apply_edit, lattice_shape,  # noqa: E402
                                              space_edit)


def area_below(v: np.ndarray, f: np.ndarray, z: float) -> float:
    """Share of the mesh's area whose triangle centroids lie below height z."""
    tri = v[f].astype(np.float64)                                            # [F, 3, 3]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    return float(area[tri[:, :, 2].mean(axis=1) < z].sum() / max(area.sum(), 1e-20))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scene", default=str(ROOT / "out" / "pedestal_scene"))
    ap.add_argument("--size", type=int, default=100, help="image size when the scene is rendered")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--preset", default="cpu-fast")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "hidden_space.json"))
    ap.add_argument("--save-meshes", default=None, help="folder for the three meshes (PLY)")
    a = ap.parse_args()

    scene = Path(a.scene)
    if not (scene / "scene.json").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_scene.py"), "--out", str(scene),
                        "--scene", "pedestal", "--size", str(a.size), "--n-train", "60",
                        "--n-test", "10", "--samples", "32"], cwd=ROOT, check=True)
    meta = json.loads((scene / "scene.json").read_text())
    bottom = float(meta["bbox_min"][2])
    obj_diag = float(np.linalg.norm(np.subtract(meta["bbox_max"], meta["bbox_min"])))
    gt_v, gt_f, _ = read_mesh(scene / "geometry.ply")

    torch.manual_seed(0)
    device = pick_device("auto")
    train = load_nerf_dataset(scene, "train")
    task = NerfTask(train, NERF_PRESETS[a.preset], device)
    t0 = time.time()
    task.train(steps=a.steps)
    train_s = time.time() - t0

    model, thr = task.model, DEFAULT_MESH_THRESHOLD
    lo, hi = mesh_box(model)
    scene_diag = float(np.linalg.norm(np.subtract(*model.scene_box_world())))
    volume = sample_grid(model.density_world, lo, hi, lattice_shape(lo, hi, a.resolution), device=model.device)
    t0 = time.time()
    edit = space_edit(model, task.cameras, resolution=min(a.resolution, HIDDEN_RESOLUTION), box=(lo, hi),
                      alphas=train.images[..., 3] if train.has_alpha else None)
    edit_s = time.time() - t0
    volumes = {"raw": volume,
               "fill": apply_edit(volume, SpaceEdit(edit.fill, np.zeros_like(edit.empty)), 2 * thr + 1),
               "fill_and_empty": apply_edit(volume, edit, 2 * thr + 1)}
    rows: dict[str, Any] = {}
    for name, vol in volumes.items():
        v, f = marching_cubes(vol, thr, lo, hi, inside="above")
        v, f, _ = remove_floaters(v, f, min_fraction=0.05)
        to_gt = mesh_to_mesh_distance(v, f, gt_v, gt_f, n=100_000, seed=0)
        from_gt = mesh_to_mesh_distance(gt_v, gt_f, v, f, n=100_000, seed=1)
        rows[name] = {
            "n_faces": int(len(f)),
            # Below the true bottom by more than 1, 2.5 and 5% of the object's diagonal.
            "area_below_bottom": {f"{pct}%": round(area_below(v, f, bottom - pct / 100 * obj_diag), 4)
                                  for pct in (1, 2.5, 5)},
            "mesh_to_gt_mean_rel_scene": round(to_gt["mean"] / scene_diag, 5),
            "gt_to_mesh_mean_rel_scene": round(from_gt["mean"] / scene_diag, 5),
            "mesh_to_gt_mean_rel_object": round(to_gt["mean"] / obj_diag, 5),
            "gt_to_mesh_mean_rel_object": round(from_gt["mean"] / obj_diag, 5),
            "mesh_to_gt_p95_rel_object": round(to_gt["p95"] / obj_diag, 5),
        }
        print(name, json.dumps(rows[name]), flush=True)
        if a.save_meshes:
            from ngp_engine.formats.ply import write_ply  # noqa: PLC0415
            Path(a.save_meshes).mkdir(parents=True, exist_ok=True)
            write_ply(Path(a.save_meshes) / f"{name}.ply", v, f)
    out = {"command": "scripts/bench_hidden.py " + " ".join(sys.argv[1:]),
           "machine": machine_info(device), "scene": str(scene), "steps": a.steps,
           "train_seconds": round(train_s, 1), "edit_seconds": round(edit_s, 1),
           "filled_fraction": round(float(edit.fill.mean()), 4),
           "emptied_fraction": round(float(edit.empty.mean()), 4),
           "true_bottom_z": bottom, "object_diagonal": obj_diag, "scene_box_diagonal": scene_diag,
           "meshes": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
