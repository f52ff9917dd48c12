"""A neural image against JPEG and WebP at the same number of bytes (the seed article's
table, measured).

    .venv/bin/python scripts/bench_compression.py [--log2-sizes 10,12,14] [--steps 2000]
        [--batch 8192] [--out benchmarks/compression.json]

On scikit-image's astronaut (512x512 RGB): for each hash-table size T = 2^k (16 levels,
2 features, N_min 16, N_max 512, a 2x64 MLP, the seed article's grid with larger tables),
fit `--steps` steps of `--batch` random positions, export the field with float16
parameters (`ImageTask.export_fp16`, what `image --export-fp16` writes) and score its
render (PSNR over all pixels, 8-bit). Then JPEG and WebP (Pillow) of the same photo at the
highest quality whose file is not larger than the export, and their PSNR. One run, no
timing figures (they do not matter here).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ngp_engine import config as cfgmod  # noqa: E402
from ngp_engine.config import IMAGE_PRESETS, HashGridConfig  # noqa: E402
from ngp_engine.device import machine_info  # noqa: E402
from ngp_engine.eval.image import psnr  # noqa: E402
from ngp_engine.tasks.image import ImageTask  # noqa: E402


def photo() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def codec_at_bytes(img: np.ndarray, fmt: str, budget: int) -> dict[str, Any]:
    """The highest quality (1..100) whose `fmt` file fits in `budget` bytes: its size and PSNR."""
    best = None
    for q in range(1, 101):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=fmt, quality=q)
        if buf.tell() > budget:
            break
        best = (q, buf.getvalue())
    if best is None:
        return {"quality": None, "bytes": None, "psnr": None, "note": f"even quality 1 exceeds {budget} bytes"}
    q, data = best
    back = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32) / 255.0
    return {"quality": q, "bytes": len(data), "psnr": psnr(back, img.astype(np.float32) / 255.0)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--log2-sizes", default="10,12,14")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=8192)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "compression.json"))
    args = ap.parse_args()
    img = photo()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "astronaut.png"
        Image.fromarray(img).save(src)
        for k in (int(v) for v in args.log2_sizes.split(",")):
            cfg = cfgmod.replace(IMAGE_PRESETS["seed"], batch_size=args.batch, encoding=HashGridConfig(
                n_levels=16, n_features_per_level=2, log2_hashmap_size=k, base_resolution=16,
                max_resolution=512))
            task = ImageTask(ImageTask.load_data(src, cfg), cfg, torch.device("cpu"))
            task.train(steps=args.steps)
            export = task.export_fp16(Path(tmp) / f"model_{k}.pt")
            size = export.stat().st_size
            shape_only = ImageTask.from_checkpoint(export, torch.device("cpu"), for_training=False)
            rec = shape_only.render_image()
            row = {"log2_hashmap_size": k, "n_params": task.n_params, "fp16_bytes": size,
                   "fp16_parameter_bytes": 2 * task.n_params, "steps": args.steps, "batch": args.batch,
                   "psnr": psnr(rec, task.image),
                   "jpeg": codec_at_bytes(img, "JPEG", size), "webp": codec_at_bytes(img, "WEBP", size)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {"machine": machine_info(torch.device("cpu")), "image": "skimage astronaut 512x512",
              "command": " ".join(["scripts/bench_compression.py", *sys.argv[1:]]), "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"[bench] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
