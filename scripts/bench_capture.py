"""NeRF from photos whose poses structure from motion found, against the same training on the
true poses (issue target: test PSNR within 1.5 dB, same time budget).

1. Renders (or reuses) the photo capture of `scripts/make_capture.py` (default 40 views,
   384 px; the photos carry no poses) and runs `ngp_engine.poses.find_poses` on it.
2. Splits the registered frames: every `--test-every`-th (by file name) is held out.
3. Writes two datasets with the *same* image files and split: `sfm/` with the poses and
   lens SfM fitted, `truth/` with the rendering cameras (pinhole), moved into the SfM
   dataset's normalised world by the similarity that best aligns the true camera centres
   with the found ones (Umeyama), so both train in the same frame, box and scale.
4. Trains a NeRF on each for the same budget (seconds or steps) and evaluates the test split
   on the held-out photos' own cameras (SfM's or the true ones), both reduced to
   `--eval-size` pixels (rendering an unbounded capture is slow on a CPU), and records both
   test PSNRs and their difference in benchmarks/capture.json.

    .venv/bin/python scripts/bench_capture.py [--capture out/bench_poses/capture40] [--size 384]
        [--seconds 180 | --steps N] [--preset cpu-fast] [--test-every 8] [--eval-size 96]
        [--out benchmarks/capture.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from ngp_engine.device import machine_info, pick_device  # noqa: E402
from ngp_engine.poses import PosesSpec, find_poses  # noqa: E402
from ngp_engine.poses.convention import umeyama  # noqa: E402


def split_frames(doc: dict[str, Any], test_every: int) -> tuple[list[dict], list[dict]]:
    """(train, test) frames of a transforms document, held out by sorted file name."""
    frames = sorted(doc["frames"], key=lambda f: f["file_path"])
    test = [f for i, f in enumerate(frames) if i % test_every == test_every // 2]
    train = [f for f in frames if f not in test]
    return train, test


def write_split(folder: Path, doc: dict[str, Any], train: list[dict], test: list[dict],
                images: Path) -> None:
    """transforms_{train,test}.json (val = test) and a copy of the images in `folder`."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copytree(images, folder / images.name)
    for split, frames in (("train", train), ("test", test), ("val", test)):
        (folder / f"transforms_{split}.json").write_text(json.dumps({**doc, "frames": frames}, indent=1))


def truth_document(sfm_doc: dict[str, Any], truth: dict[str, Any]) -> dict[str, Any]:
    """The SfM document with the true cameras: pinhole intrinsics of the render (scaled to
    the dataset's image size) and true camera-to-world matrices moved into the SfM world."""
    by_name = {Path(f["file_name"]).stem: np.array(f["transform_matrix"], np.float64)
               for f in truth["frames"]}
    names = [Path(f["file_path"]).stem for f in sfm_doc["frames"]]
    found = np.stack([np.array(f["transform_matrix"], np.float64) for f in sfm_doc["frames"]])
    true = np.stack([by_name[n] for n in names])
    s, rot, t = umeyama(true[:, :3, 3], found[:, :3, 3])     # truth world -> SfM world
    moved = true.copy()
    moved[:, :3, :3] = rot @ true[:, :3, :3]
    moved[:, :3, 3] = s * true[:, :3, 3] @ rot.T + t
    w, h = sfm_doc["w"], sfm_doc["h"]
    k = w / truth["w"]
    keep = {key: v for key, v in sfm_doc.items()
            if key in ("aabb_scale", "scale", "offset", "w", "h")}
    doc = {**keep, "camera_model": "PINHOLE", "fl_x": truth["fl_x"] * k, "fl_y": truth["fl_y"] * k,
           "cx": truth["cx"] * k, "cy": truth["cy"] * (h / truth["h"])}
    doc["frames"] = [{"file_path": f["file_path"], "transform_matrix": m.tolist()}
                     for f, m in zip(sfm_doc["frames"], moved)]
    return doc


def train(dataset: Path, budget: dict[str, float], preset: str, eval_size: int | None) -> dict[str, Any]:
    """Train a NeRF on dataset's train split for `budget` ({"steps": N} or {"seconds": S});
    test-split PSNR with the held-out photos (and their cameras) fitted to `eval_size`
    pixels on the longer side (None: as they are). Rendering an unbounded capture costs
    hundreds of samples per ray: on a CPU a full-size test view takes minutes."""
    import torch  # noqa: PLC0415

    from ngp_engine.config import NERF_PRESETS  # noqa: PLC0415
    from ngp_engine.data.transforms import load_nerf_dataset  # noqa: PLC0415
    from ngp_engine.tasks.nerf.evaluate import evaluate  # noqa: PLC0415
    from ngp_engine.tasks.nerf.task import NerfTask  # noqa: PLC0415

    torch.manual_seed(0)
    t0 = time.time()
    task = NerfTask(load_nerf_dataset(dataset, "train"), NERF_PRESETS[preset], pick_device("auto"))
    task.train(**budget)
    ev = evaluate(task.model, load_nerf_dataset(dataset, "test", max_image_size=eval_size))
    return {"psnr": round(ev["psnr"], 3), "ssim": round(ev["ssim"], 4), "steps": task.steps_done,
            "train_seconds": round(task.seconds, 1), "wall_seconds": round(time.time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--capture", default=str(ROOT / "out" / "bench_poses" / "capture40"),
                    help="capture folder (default: the one scripts/bench_poses.py renders)")
    ap.add_argument("--n-views", type=int, default=40)
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--steps", type=int, default=None,
                    help="train this many steps instead of --seconds (the same budget for both "
                         "runs even when the machine is shared)")
    ap.add_argument("--preset", default="cpu-fast")
    ap.add_argument("--test-every", type=int, default=8)
    ap.add_argument("--eval-size", type=int, default=96,
                    help="held-out photos are compared at this long side (0: full size)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "capture.json"))
    a = ap.parse_args()

    capture = Path(a.capture).resolve()
    # Blender renders in its own process: bpy and pycolmap never share one.
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_capture.py"), "--out", str(capture),
                    "--n-views", str(a.n_views), "--size", str(a.size)], cwd=ROOT, check=True)
    work = Path(a.capture).with_name(Path(a.capture).name + "_bench")
    t0 = time.time()
    result = find_poses(PosesSpec(input=capture / "photos", output=work / "poses", overwrite=True))
    sfm_seconds = time.time() - t0
    sfm_doc = json.loads((result.dataset / "transforms.json").read_text())
    train_frames, test_frames = split_frames(sfm_doc, a.test_every)
    images = result.dataset / Path(sfm_doc["frames"][0]["file_path"]).parent
    write_split(work / "sfm", sfm_doc, train_frames, test_frames, images)
    truth = json.loads((capture / "truth.json").read_text())
    tdoc = truth_document(sfm_doc, truth)
    t_train, t_test = split_frames(tdoc, a.test_every)
    write_split(work / "truth", tdoc, t_train, t_test, images)

    budget = {"steps": a.steps} if a.steps else {"seconds": a.seconds}
    runs = {name: train(work / name, budget, a.preset, a.eval_size or None) for name in ("sfm", "truth")}
    out = {
        "command": "scripts/bench_capture.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(pick_device("auto")),
        "capture": {"n_views": a.n_views, "size": a.size, "registered": result.n_registered,
                    "sfm_seconds": round(sfm_seconds, 1),
                    "reprojection_error_px": result.reprojection_error},
        "budget": budget, "preset": a.preset, "n_train": len(train_frames), "n_test": len(test_frames),
        "eval_size": a.eval_size,
        "psnr_sfm_poses": runs["sfm"]["psnr"], "psnr_true_poses": runs["truth"]["psnr"],
        "psnr_difference": round(runs["truth"]["psnr"] - runs["sfm"]["psnr"], 3),
        "target": "psnr_difference < 1.5 dB",
        "runs": runs,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("psnr_sfm_poses", "psnr_true_poses", "psnr_difference")}))


if __name__ == "__main__":
    main()
