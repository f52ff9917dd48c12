"""An image larger than memory: a >= 256-megapixel tiled BigTIFF fitted on this CPU for a
fixed time, with the process's peak memory and the PSNR on 10^6 random pixels.

    .venv/bin/python scripts/bench_gigapixel.py [--size 16384] [--seconds 600]
        [--log2-hashmap-size 20] [--batch 32768] [--chunks-per-step 32]
        [--image out/gigapixel/mosaic.tif] [--out benchmarks/gigapixel.json]

1. Makes `--image` when it is missing: `--size` x `--size` RGB (16384: 268 MP), 256 x 256
   tiles, uncompressed (decoding deflate tiles would cost more than the step; `--deflate`
   to try), written tile by tile: a mosaic of 512 x 512 blocks, each one of scikit-image's
   photographs, flipped, rotated and colour-shifted by its position, so no two neighbours
   repeat.
2. Fits it with the image field (16 levels, 2 features, T = 2^`--log2-hashmap-size`,
   N_min 16, N_max = `--size`, a 2 x 64 MLP) for `--seconds` of training, reading
   `--chunks-per-step` random tiles per step through a 128 MB tile cache.
3. Reports the peak resident memory of the process (getrusage), what the model and its
   Adam state take (16 bytes per parameter), the memory before the image was opened, and
   the PSNR on 10^6 random pixels.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ngp_engine import config as cfgmod  # noqa: E402
from ngp_engine.config import IMAGE_PRESETS, HashGridConfig  # noqa: E402
from ngp_engine.data.tiled_image import TiledImage  # noqa: E402
from ngp_engine.device import machine_info  # noqa: E402
from ngp_engine.tasks.image import ImageTask  # noqa: E402

TILE, BLOCK = 256, 512


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0      # Linux: KiB


def make_mosaic(path: Path, size: int, deflate: bool) -> None:
    import tifffile
    from skimage import data
    from skimage.transform import resize

    photos = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry"):
        img = getattr(data, name)()
        photos.append((resize(img, (BLOCK, BLOCK), anti_aliasing=True) * 255).astype(np.uint8))
    n = size // BLOCK

    def block(by: int, bx: int) -> np.ndarray:
        i = by * n + bx
        img = np.rot90(photos[(by * 7 + bx * 3) % len(photos)], k=i % 4)
        if (i // 4) % 2:
            img = img[:, ::-1]
        gain = 0.7 + 0.3 * np.array([np.sin(by * 0.37), np.cos(bx * 0.29), np.sin((by + bx) * 0.21)]) ** 2
        return np.clip(img * gain, 0, 255).astype(np.uint8)

    def tiles():
        cache: dict[tuple[int, int], np.ndarray] = {}
        for ty in range(size // TILE):
            for tx in range(size // TILE):
                key = (ty * TILE // BLOCK, tx * TILE // BLOCK)
                if key not in cache:
                    cache.clear() if len(cache) > 2 * n else None
                    cache[key] = block(*key)
                oy, ox = ty * TILE % BLOCK, tx * TILE % BLOCK
                yield np.ascontiguousarray(cache[key][oy:oy + TILE, ox:ox + TILE])

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.tif")
    tifffile.imwrite(tmp, tiles(), shape=(size, size, 3), dtype=np.uint8, tile=(TILE, TILE), bigtiff=True,
                     photometric="rgb", compression="zlib" if deflate else None)
    tmp.rename(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=16384)
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--log2-hashmap-size", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1 << 15)
    ap.add_argument("--chunks-per-step", type=int, default=32)
    ap.add_argument("--deflate", action="store_true")
    ap.add_argument("--image", default=str(ROOT / "out" / "gigapixel" / "mosaic.tif"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "gigapixel.json"))
    args = ap.parse_args()
    image = Path(args.image)
    if not image.exists():
        t0 = time.perf_counter()
        print(f"[bench] writing {image} ({args.size}x{args.size})", flush=True)
        make_mosaic(image, args.size, args.deflate)
        print(f"[bench] written in {time.perf_counter() - t0:.0f} s, {image.stat().st_size / 1e6:.0f} MB", flush=True)
    base_mb = peak_mb()
    cfg = cfgmod.replace(IMAGE_PRESETS["seed"], batch_size=args.batch, encoding=HashGridConfig(
        n_levels=16, n_features_per_level=2, log2_hashmap_size=args.log2_hashmap_size, base_resolution=16,
        max_resolution=args.size))
    tiled = TiledImage(image)
    task = ImageTask((tiled, str(image)), cfg, torch.device("cpu"))
    original = tiled.sample
    tiled.sample = lambda n, g, d, chunks_per_step=args.chunks_per_step: original(n, g, d, chunks_per_step)
    model_mb = 16 * task.n_params / 2**20
    print(f"[bench] {tiled.width}x{tiled.height} = {tiled.n_pixels / 1e6:.0f} MP, {task.n_params} parameters "
          f"({model_mb:.0f} MB with Adam's state); training {args.seconds:.0f} s", flush=True)
    last = [time.monotonic()]

    def report(p) -> None:
        if time.monotonic() - last[0] >= 30:
            last[0] = time.monotonic()
            print(f"[bench] step {p.step}, {p.seconds:.0f} s, loss {p.resolved().loss:.5f}, "
                  f"peak {peak_mb():.0f} MB", flush=True)

    task.train(seconds=args.seconds, callback=report)
    t0 = time.perf_counter()
    score = task.sampled_psnr(1_000_000)
    result = {
        "machine": machine_info(torch.device("cpu")),
        "command": " ".join(["scripts/bench_gigapixel.py", *sys.argv[1:]]),
        "image": str(image), "width": tiled.width, "height": tiled.height,
        "megapixels": round(tiled.n_pixels / 1e6, 1), "file_mb": round(image.stat().st_size / 1e6, 1),
        "n_params": task.n_params, "steps": task.steps_done, "seconds": round(task.seconds, 1),
        "batch": args.batch, "chunks_per_step": args.chunks_per_step,
        "psnr_1e6_pixels": score, "psnr_seconds": round(time.perf_counter() - t0, 1),
        "chunks_read": tiled.chunks_read, "cache_chunks": tiled.cache_chunks,
        "peak_rss_mb": round(peak_mb(), 1), "rss_before_image_mb": round(base_mb, 1),
        "model_and_adam_mb": round(model_mb, 1),
        "peak_beyond_model_mb": round(peak_mb() - model_mb, 1),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
