"""Memory of a large photo capture in NeRF training: 100 photos of 12 MP (4000x3000 JPEG).

Makes (or reuses) a dataset of 100 JPEG photos of 4000x3000 pixels with an OPENCV lens
(k1, k2, p1, p2 as a phone's), then trains a few steps of it with `nerf train` in a fresh
process for each `--max-image-size` asked (0 = full size) and records that process's peak
resident memory, the loaded dataset's size (`dataset_mb` from metrics.json) and the time to
the first step. The issue's bar: 100 photos of 12 MP must not need more than a few GB.
Writes benchmarks/dataset_memory.json.

    .venv/bin/python scripts/bench_dataset_memory.py [--data out/photos12mp] [--count 100]
        [--sizes 1600,0] [--steps 3] [--out benchmarks/dataset_memory.json]
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WIDTH, HEIGHT = 4000, 3000
LENS = {"k1": -0.06, "k2": 0.012, "p1": 0.0004, "p2": -0.0003}


def make_photos(out: Path, count: int) -> None:
    """`count` 12 MP JPEGs in `out` with an instant-ngp transforms.json: cameras on a ring
    looking at the origin (the content is smooth noise; only sizes and decoding matter)."""
    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    tmp = out.with_name(out.name + ".partial")
    (tmp / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    f = 0.8 * WIDTH
    frames = []
    for i in range(count):
        small = rng.integers(0, 256, (HEIGHT // 50, WIDTH // 50, 3), dtype=np.uint8)
        Image.fromarray(small).resize((WIDTH, HEIGHT), Image.BILINEAR).save(
            tmp / "images" / f"{i:04d}.jpg", quality=90)
        a = 2 * math.pi * i / count
        eye = np.array([3 * math.cos(a), 3 * math.sin(a), 1.0])
        fwd = -eye / np.linalg.norm(eye)
        right = np.cross(fwd, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, fwd)
        c2w = np.eye(4)
        c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -fwd, eye
        frames.append({"file_path": f"images/{i:04d}.jpg", "transform_matrix": c2w.tolist()})
    doc = {"camera_model": "OPENCV", "w": WIDTH, "h": HEIGHT, "fl_x": f, "fl_y": f,
           "cx": WIDTH / 2, "cy": HEIGHT / 2, **LENS, "aabb_scale": 1, "frames": frames}
    (tmp / "transforms.json").write_text(json.dumps(doc))
    tmp.rename(out)


def child(data: str, size: int, steps: int) -> None:
    """In this process: `nerf train` for `steps`; print its peak RSS and metrics as JSON."""
    from ngp_engine.cli import main  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as run:
        argv = ["nerf", "train", data, "--out", run, "--steps", str(steps), "--no-eval", "--quiet"]
        if size:
            argv += ["--max-image-size", str(size)]
        t0 = time.perf_counter()
        rc = main(argv)
        seconds = time.perf_counter() - t0
        metrics = json.loads((Path(run) / "metrics.json").read_text()) if rc == 0 else {}
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss       # KiB on Linux
    print(json.dumps({"rc": rc, "peak_rss_gib": round(peak_kb / 2**20, 2),
                      "dataset_mb": metrics.get("dataset_mb"), "seconds": round(seconds, 1)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT / "out" / "photos12mp"))
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--sizes", default="1600,0", help="--max-image-size values; 0 = full size")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "dataset_memory.json"))
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        child(a.data, a.child, a.steps)
        return
    from ngp_engine.device import machine_info, pick_device  # noqa: PLC0415

    data = Path(a.data)
    if not (data / "transforms.json").exists():
        t0 = time.perf_counter()
        make_photos(data, a.count)
        print(f"made {a.count} photos of {WIDTH}x{HEIGHT} in {time.perf_counter() - t0:.0f} s",
              flush=True)
    n = len(json.loads((data / "transforms.json").read_text())["frames"])
    rows = {}
    for size in (int(s) for s in a.sizes.split(",")):
        p = subprocess.run([sys.executable, __file__, "--data", str(data), "--child", str(size),
                            "--steps", str(a.steps)], capture_output=True, text=True)
        if p.returncode:
            sys.exit(f"max-image-size {size}: {p.stderr.strip().splitlines()[-1:]}")
        rows["full" if size == 0 else str(size)] = json.loads(p.stdout.strip().splitlines()[-1])
        print(size or "full", rows["full" if size == 0 else str(size)], flush=True)
    out = {"command": "scripts/bench_dataset_memory.py " + " ".join(sys.argv[1:]),
           "machine": machine_info(pick_device("auto")), "photos": n,
           "photo_size": [WIDTH, HEIGHT], "lens": {"camera_model": "OPENCV", **LENS},
           "steps": a.steps, "by_max_image_size": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
