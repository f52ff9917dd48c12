"""NeRF through a lens model: the same scene as pinhole photos and as distorted ones.

A distorted copy of a NeRF-synthetic folder is made by resampling every (pinhole) image at
the pinhole position of each distorted pixel's ray (bilinear, straight alpha premultiplied
for the interpolation; outside the original image is transparent, which the scene's borders
are), and the transforms get the lens coefficients. Training the same budget on the pinhole
set and on the distorted set through the model should give test PSNRs within about 0.5 dB:
the headline compares both reconstructions on the original pinhole test renders (no
resampled pixel in the metric); the same comparison on the distorted test photos (the
pinhole model rendered through their lens) is recorded too. A run on the distorted photos
that ignores the coefficients is the control.

    .venv/bin/python scripts/bench_distortion.py --data out/scene160 --seconds 120
    .venv/bin/python scripts/make_scene.py --out out/scene480 --size 480 --samples 16
    .venv/bin/python scripts/bench_distortion.py --data out/scene480 --supersample 3 --steps 300

The second form gives both sets the same pixel filter: the 480 px renders are reduced to
160 px by 3 x 3 box averaging (pinhole) or by 3 x 3 rays per distorted pixel (the lens),
so neither set carries the blur of resampling a finished image.

writes benchmarks/distortion.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ngp_engine.formats.camera import Camera  # noqa: E402

LENS = {"camera_model": "OPENCV", "k1": -0.15, "k2": 0.02, "p1": 1e-3, "p2": -5e-4}


def sample_bilinear(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """image [H, W, C] float at pixel positions u, v [N] (pixel centres at +0.5; outside the
    image reads 0) -> [N, C]."""
    h, w = image.shape[:2]
    x, y = u - 0.5, v - 0.5
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    out = np.zeros((len(u), image.shape[2]))
    for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                        (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h) & np.isfinite(u) & np.isfinite(v)
        out[ok] += wgt[ok] * image[yi[ok], xi[ok]]
    return out


def _premultiplied(image: np.ndarray) -> np.ndarray:
    """uint8 [H, W, C] -> float64 in [0, 1], colour premultiplied by alpha when C = 4."""
    out = image.astype(np.float64) / 255.0
    if out.shape[-1] == 4:
        out[..., :3] *= out[..., 3:]
    return out


def _straight_uint8(image: np.ndarray) -> np.ndarray:
    """The inverse of `_premultiplied` (rounded to uint8)."""
    out = image.copy()
    if out.shape[-1] == 4:
        a = out[..., 3:]
        out[..., :3] = np.where(a > 1e-6, out[..., :3] / np.maximum(a, 1e-6), 0.0)
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def distort_image(image: np.ndarray, pinhole: Camera, lens: Camera, supersample: int = 1) -> np.ndarray:
    """The photo `lens` (same pose, distorted, any size) takes of what the pinhole `image`
    [H, W, C] uint8 shows: supersample^2 rays per distorted pixel (a box filter over the
    pixel, as a renderer's), each projected into the pinhole image and sampled there
    (bilinear). RGBA is interpolated premultiplied (straight alpha in and out)."""
    ss = supersample
    j, i = np.meshgrid(np.arange(lens.h * ss), np.arange(lens.w * ss), indexing="ij")
    o, d = lens.rays((i.ravel() + 0.5) / ss, (j.ravel() + 0.5) / ss)
    uv = pinhole.project(o + d)
    out = sample_bilinear(_premultiplied(image), uv[:, 0], uv[:, 1])
    out = out.reshape(lens.h, ss, lens.w, ss, -1).mean(axis=(1, 3))
    return _straight_uint8(out)


def box_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """uint8 [H, W, C] averaged over factor x factor blocks (premultiplied)."""
    h, w = image.shape[0] // factor, image.shape[1] // factor
    src = _premultiplied(image[:h * factor, :w * factor])
    return _straight_uint8(src.reshape(h, factor, w, factor, -1).mean(axis=(1, 3)))


def write_distorted_copy(src: Path, dst: Path, lens: dict | None, keep_lens: bool = True,
                         splits: tuple[str, ...] = ("train", "test"), supersample: int = 1) -> Path:
    """A copy of NeRF-synthetic folder `src` at `dst` whose photos are taken through `lens`
    (camera_model and coefficients; None: the pinhole itself) at 1 / `supersample` of the
    source size; its transforms carry the lens unless `keep_lens` is False (the control: same
    photos, lens ignored). Rendering the source at `supersample` times the size and
    reducing it this way gives the pinhole and the distorted copies the same pixel filter."""
    from ngp_engine.data.transforms import load_nerf_dataset  # noqa: PLC0415

    dst.mkdir(parents=True, exist_ok=True)
    for split in splits:
        doc = json.loads((src / f"transforms_{split}.json").read_text())
        ds = load_nerf_dataset(src, split)
        for cam, image, file in zip(ds.cameras, ds.images, ds.file_paths):
            w, h = cam.w // supersample, cam.h // supersample
            out = dst / file.relative_to(src.resolve())
            out.parent.mkdir(parents=True, exist_ok=True)
            if lens is None:
                photo = box_downsample(image, supersample)
            else:
                small = cam.resized(w, h)
                distorted = Camera(small.transform_matrix, w, h, small.fx, small.fy,
                                   *small.principal_point, **lens)
                photo = distort_image(image, cam, distorted, supersample)
            Image.fromarray(photo).save(out)
        if keep_lens and lens is not None:
            doc.update({"camera_model": lens["camera_model"],
                        **{k: v for k, v in lens.items() if k != "camera_model"}})
        for key in ("w", "h"):            # sizes, when written, follow the images
            if key in doc:
                doc[key] = doc[key] // supersample
        (dst / f"transforms_{split}.json").write_text(json.dumps(doc))
    return dst


def train_and_eval(data: Path, seconds: float, preset: str, also: Path | None = None,
                   steps: int | None = None) -> dict:
    """Train `seconds` (or `steps`) of `preset` on data's train split, evaluate its test split (and the
    test split of `also`: the pinhole model seen through the distorted test cameras, or the
    lens model seen through the original pinhole ones)."""
    import torch  # noqa: PLC0415

    from ngp_engine.config import NERF_PRESETS  # noqa: PLC0415
    from ngp_engine.data.transforms import load_nerf_dataset  # noqa: PLC0415
    from ngp_engine.device import pick_device  # noqa: PLC0415
    from ngp_engine.tasks.nerf.evaluate import evaluate  # noqa: PLC0415
    from ngp_engine.tasks.nerf.task import NerfTask  # noqa: PLC0415

    torch.manual_seed(0)
    task = NerfTask(load_nerf_dataset(data, "train"), NERF_PRESETS[preset], pick_device("auto"))
    if steps:
        task.train(steps=steps)
    else:
        task.train(seconds=seconds)
    ev = evaluate(task.model, load_nerf_dataset(data, "test"))
    out = {"steps": task.steps_done, "seconds": round(task.seconds, 2),
           "psnr": round(ev["psnr"], 3), "ssim": round(ev["ssim"], 4)}
    if also is not None:
        out["psnr_on_other_test"] = round(evaluate(task.model, load_nerf_dataset(also, "test"))["psnr"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT / "out" / "scene160"),
                    help="NeRF-synthetic folder with train and test splits (scripts/make_scene.py)")
    ap.add_argument("--seconds", type=float, default=120.0, help="training time of each run")
    ap.add_argument("--steps", type=int, default=None,
                    help="train this many steps instead of --seconds (the same budget for every "
                         "run even when the machine is shared)")
    ap.add_argument("--preset", default="cpu-fast")
    ap.add_argument("--work", default=str(ROOT / "out" / "bench_distortion"),
                    help="where the distorted copies go")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "distortion.json"))
    ap.add_argument("--no-control", action="store_true", help="skip the run that ignores the lens")
    ap.add_argument("--supersample", type=int, default=1,
                    help="--data is rendered this many times larger: both the pinhole and the "
                         "distorted sets are reduced from it with the same box filter "
                         "(e.g. make_scene.py --size 480 and --supersample 3)")
    args = ap.parse_args(argv)

    src, work = Path(args.data), Path(args.work)
    if work.exists():
        shutil.rmtree(work)
    t0 = time.perf_counter()
    ss = args.supersample
    distorted = write_distorted_copy(src, work / "distorted", LENS, supersample=ss)
    control = None if args.no_control else write_distorted_copy(src, work / "ignored", LENS,
                                                                keep_lens=False, supersample=ss)
    pinhole = src if ss == 1 else write_distorted_copy(src, work / "pinhole", None, supersample=ss)
    make_s = time.perf_counter() - t0
    runs = {"pinhole": train_and_eval(pinhole, args.seconds, args.preset, also=distorted, steps=args.steps),
            "distorted_through_model": train_and_eval(distorted, args.seconds, args.preset, also=pinhole,
                                                      steps=args.steps)}
    if control is not None:
        runs["distorted_lens_ignored"] = train_and_eval(control, args.seconds, args.preset, steps=args.steps)
    result = {
        "command": " ".join(["scripts/bench_distortion.py", *(argv if argv is not None else sys.argv[1:])]),
        "data": str(src), "supersample": ss, "lens": LENS, "preset": args.preset, "seconds_per_run": None if args.steps else args.seconds,
        "steps_per_run": args.steps,
        "make_copies_seconds": round(make_s, 1), "runs": runs,
        # The headline: both reconstructions rendered through the original pinhole test
        # cameras and compared with the renders themselves (no resampled pixels in the metric).
        "psnr_difference_db": round(runs["pinhole"]["psnr"]
                                    - runs["distorted_through_model"]["psnr_on_other_test"], 3),
        # The same on the distorted test photos (the pinhole model seen through their lens).
        "psnr_difference_distorted_test_db": round(runs["pinhole"]["psnr_on_other_test"]
                                                   - runs["distorted_through_model"]["psnr"], 3),
        "psnr_difference_own_test_sets_db": round(runs["pinhole"]["psnr"]
                                                  - runs["distorted_through_model"]["psnr"], 3),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
