"""Per-image appearance on photos whose exposure and white balance change from shot to shot.

Makes photos of a NeRF-synthetic scene (default out/scene160, scripts/make_scene.py):
every render composited on white (no alpha, as a camera's), each training photo multiplied
by its own colour gains (0.6..1.4 per channel: exposure and white balance), the held-out
test photos at gain 1 (about the average look). Trains the same budget with appearance on
and off and evaluates the test photos (appearance on renders them with the neutral look,
the average photo's). Writes benchmarks/appearance.json.

    .venv/bin/python scripts/bench_appearance.py [--data out/scene160] [--steps 300]
        [--preset cpu-fast] [--out benchmarks/appearance.json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GAIN_RANGE = (0.6, 1.4)


def photos_with_exposures(scene: Path, out: Path, seed: int = 3) -> np.ndarray:
    """The renders of NeRF-synthetic folder `scene` as photos in `out`: composited on white,
    each training image with its own colour gains [N, 3] (uniform in GAIN_RANGE per
    channel); the test (and val) views keep gain 1. Returns the training gains."""
    from PIL import Image  # noqa: PLC0415

    out.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    gains = np.ones((0, 3))
    for split in ("train", "test"):
        doc = json.loads((scene / f"transforms_{split}.json").read_text())
        if split == "train":
            gains = rng.uniform(*GAIN_RANGE, (len(doc["frames"]), 3))
        for i, frame in enumerate(doc["frames"]):
            src = scene / (frame["file_path"] + ("" if frame["file_path"].endswith(".png") else ".png"))
            rgba = np.asarray(Image.open(src).convert("RGBA")).astype(np.float64) / 255.0
            rgb = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
            if split == "train":
                rgb = rgb * gains[i]
            name = f"{split}_{i:03d}.png"
            Image.fromarray(np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)).save(out / name)
            frame["file_path"] = name
        (out / f"transforms_{split}.json").write_text(json.dumps(doc))
    return gains


def train_and_eval(data: Path, appearance: str, steps: int, preset: str) -> dict:
    """Train `steps` of `preset` with `appearance` ("on" / "off"); test-split PSNR / SSIM."""
    import torch  # noqa: PLC0415

    from ngp_engine.config import NERF_PRESETS, replace  # noqa: PLC0415
    from ngp_engine.data.transforms import load_nerf_dataset  # noqa: PLC0415
    from ngp_engine.device import pick_device  # noqa: PLC0415
    from ngp_engine.tasks.nerf.evaluate import evaluate  # noqa: PLC0415
    from ngp_engine.tasks.nerf.task import NerfTask  # noqa: PLC0415

    torch.manual_seed(0)
    cfg = replace(NERF_PRESETS[preset], appearance=appearance)
    task = NerfTask(load_nerf_dataset(data, "train"), cfg, pick_device("auto"))
    task.train(steps=steps)
    ev = evaluate(task.model, load_nerf_dataset(data, "test"))
    return {"steps": task.steps_done, "seconds": round(task.seconds, 1),
            "psnr": round(ev["psnr"], 3), "ssim": round(ev["ssim"], 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT / "out" / "scene160"))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--preset", default="cpu-fast")
    ap.add_argument("--work", default=str(ROOT / "out" / "bench_appearance"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "appearance.json"))
    a = ap.parse_args()

    work = Path(a.work)
    if work.exists():
        shutil.rmtree(work)
    photos_with_exposures(Path(a.data), work / "photos")
    t0 = time.time()
    runs = {name: train_and_eval(work / "photos", name, a.steps, a.preset) for name in ("on", "off")}
    out = {"command": "scripts/bench_appearance.py " + " ".join(sys.argv[1:]), "data": a.data,
           "gain_range": GAIN_RANGE, "steps": a.steps, "preset": a.preset, "runs": runs,
           "psnr_gain_db": round(runs["on"]["psnr"] - runs["off"]["psnr"], 3),
           "wall_seconds": round(time.time() - t0, 1)}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
