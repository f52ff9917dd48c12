"""NeRF quality against training time, mesh accuracy and peak memory on the Blender scene.

Renders (or reuses) the 160x160 scene of `scripts/make_scene.py` (100 training and 20 test
views) in out/scene160, trains a NeRF with a preset (default cpu-fast) and, at checkpoints
of *training* time (default 1, 2, 5, 10 minutes), evaluates test PSNR/SSIM over all test
views (RGBA ground truth on white; the evaluation is not timed) and extracts a mesh whose
distance to the ground-truth geometry (`geometry.ply`) is measured both ways with libigl
(10^5 surface samples each way), relative to the scene box diagonal. Peak resident memory
of the process (ru_maxrss) is recorded at the end. Writes benchmarks/nerf.json. A throwaway
trainer runs 3 steps first so kernel loading is not timed.

    .venv/bin/python scripts/bench_nerf.py [--preset cpu-fast] [--minutes 1,2,5,10]
        [--mesh-resolution 256] [--out benchmarks/nerf.json] [--save-checkpoints DIR]

A real capture instead of the rendered scene (`--data`; no mesh distances without a
geometry.ply beside it), e.g. instant-ngp's fox (`git clone
https://github.com/NVlabs/instant-ngp`, folder data/nerf/fox: 50 photos of 1080x1920 with
OPENCV lens coefficients, aabb_scale 4), downscaled 4x and every 8th frame held out, as
issue 14's target reads:

    .venv/bin/python scripts/bench_nerf.py --data instant-ngp/data/nerf/fox --max-image-size 480 \\
        --holdout-every 8 --minutes 1,2,5 --out benchmarks/fox.json
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from ngp_engine import config as cfgmod  # noqa: E402
from ngp_engine.config import MLP_PRECISIONS, NERF_PRESETS  # noqa: E402
from ngp_engine.data.transforms import HOLDOUT  # noqa: E402
from ngp_engine.device import machine_info, pick_device  # noqa: E402
from ngp_engine.files import save_torch  # noqa: E402
from ngp_engine.mesh import mesh_to_mesh_distance, read_mesh  # noqa: E402
from ngp_engine.tasks.nerf.evaluate import evaluate  # noqa: E402
from ngp_engine.tasks.nerf.mesh import nerf_mesh  # noqa: E402
from ngp_engine.tasks.nerf.task import NerfTask  # noqa: E402


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def mesh_errors(trainer: NerfTask, gt_v: np.ndarray, gt_f: np.ndarray, resolution: int) -> dict[str, Any]:
    mesh = nerf_mesh(trainer.model, resolution=resolution, cameras=trainer.cameras)
    lo, hi = trainer.model.scene_box_world()
    diag = float(np.linalg.norm(hi - lo))
    if not len(mesh["faces"]):
        return {"n_faces": 0}
    to_gt = mesh_to_mesh_distance(mesh["vertices"], mesh["faces"], gt_v, gt_f, n=100_000, seed=0)
    from_gt = mesh_to_mesh_distance(gt_v, gt_f, mesh["vertices"], mesh["faces"], n=100_000, seed=1)
    return {
        "n_faces": int(len(mesh["faces"])),
        "scene_box_diagonal": diag,
        "mesh_to_gt_mean": to_gt["mean"], "gt_to_mesh_mean": from_gt["mean"],
        "mesh_to_gt_mean_rel": to_gt["mean"] / diag, "gt_to_mesh_mean_rel": from_gt["mean"] / diag,
        "chamfer_rel": 0.5 * (to_gt["mean"] + from_gt["mean"]) / diag,
        "mesh_to_gt_median_rel": to_gt["median"] / diag,
    }


def main(argv: list[str] | None = None) -> int:
    """Train once and evaluate at each checkpoint time (PSNR, SSIM, mesh distances): one
    loop over the curve, kept whole so that training time never includes evaluation."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu-fast", choices=sorted(NERF_PRESETS))
    ap.add_argument("--minutes", default="1,2,5,10", help="training-time checkpoints in minutes")
    ap.add_argument("--mesh-resolution", type=int, default=256)
    ap.add_argument("--scene", default=str(ROOT / "out" / "scene160"), help="dataset folder (rendered if missing)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "nerf.json"))
    ap.add_argument("--save-checkpoints", default=None, metavar="DIR",
                    help="also write the trainer checkpoint of every point to DIR/<minutes>min.pt")
    ap.add_argument("--data", default=None,
                    help="a capture to train on instead of the rendered scene (not rendered; mesh "
                         "distances only when it has a geometry.ply)")
    ap.add_argument("--holdout-every", type=int, default=None, metavar="N",
                    help="evaluate on frames 0, N, 2N, ... of the training file, held out of training")
    ap.add_argument("--max-image-size", type=int, default=None, metavar="N")
    ap.add_argument("--mlp-precision", choices=MLP_PRECISIONS, default=None)
    args = ap.parse_args(argv)
    checkpoints = [float(m) * 60.0 for m in args.minutes.split(",")]

    scene = Path(args.data or args.scene)
    if args.data is None:
        # Blender renders in its own process (a cache hit when the scene exists), so its
        # memory does not count towards the training run's peak.
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_scene.py"), "--out", str(scene),
                        "--size", "160", "--n-train", "100", "--n-test", "20"], check=True)
    device = pick_device(args.device)
    cfg = cfgmod.replace(NERF_PRESETS[args.preset], **{k: v for k, v in (
        ("holdout_every", args.holdout_every), ("max_image_size", args.max_image_size),
        ("mlp_precision", args.mlp_precision)) if v is not None})
    test_split = HOLDOUT if cfg.holdout_every else "test"
    train, test = NerfTask.load_data(scene, cfg), NerfTask.load_data(scene, cfg, test_split)
    geometry = scene / "geometry.ply"
    gt_v, gt_f, _ = read_mesh(geometry) if geometry.is_file() else (None, None, None)
    # A throwaway trainer takes the one-off costs (loading or compiling the numba kernels,
    # thread pools) so they do not land in the measured run's first minute.
    NerfTask(train, cfg, device).train(steps=3)
    trainer = NerfTask(train, cfg, device)
    print(f"{args.preset}: {trainer.n_params} parameters, backend {trainer.backend}, MLPs in "
          f"{trainer.mlp_precision}", file=sys.stderr)
    curve = []
    for target in checkpoints:
        while trainer.seconds < target:
            trainer.step()
        t0 = time.perf_counter()
        ev = evaluate(trainer.model, test)
        eval_seconds = time.perf_counter() - t0
        point = {"minutes": target / 60.0, "seconds": round(trainer.seconds, 2), "steps": trainer.steps_done,
                 "psnr": ev["psnr"], "ssim": ev["ssim"], "psnr_black": ev["psnr_black"],
                 "eval_seconds": round(eval_seconds, 2),
                 "mesh": mesh_errors(trainer, gt_v, gt_f, args.mesh_resolution) if gt_v is not None else None,
                 "peak_rss_gib": round(peak_rss_gib(), 3)}
        curve.append(point)
        if args.save_checkpoints:
            ckpt_dir = Path(args.save_checkpoints)
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            save_torch(ckpt_dir / f"{target / 60.0:g}min.pt", trainer.state_dict())
        print(json.dumps(point), file=sys.stderr, flush=True)
    result = {
        "benchmark": "nerf",
        "command": "scripts/bench_nerf.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "scene": {"path": str(scene), "size": [train.width, train.height], "n_train": len(train.cameras),
                  "n_test": len(test.cameras), "test_split": test_split},
        "preset": args.preset,
        "config": cfgmod.to_dict(cfg),
        "mlp_precision": trainer.mlp_precision,     # the products' (auto resolved)
        "curve": curve,
        "peak_rss_gib": round(peak_rss_gib(), 3),
        "machine": machine_info(device),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({p["minutes"]: round(p["psnr"], 2) for p in curve}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
