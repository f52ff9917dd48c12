"""Count the engine's reads of tensor values back to the host per NeRF training step.

On a GPU each such read (`.item()`, `int(t)`, `bool(t)`, `float(t)`, `.tolist()`,
`.cpu()`) waits for the device's queue to drain. This wraps those torch.Tensor methods and
counts the calls made from `ngp_engine` code, by file, line and function, over `--steps`
steps after `--warmup` steps (the occupancy grid past its first updates). Without a GPU it
runs the triton backend in Triton's interpreter on CPU tensors (the same host code as on a
GPU), on a small configuration. `.numpy()` is left out: only the CPU kernels call it.
Boolean-mask indexing (`t[mask]`), which also waits on a GPU, happens inside torch and is
not counted.

    .venv/bin/python scripts/count_host_reads.py [--data out/scene160] [--backend triton]
        [--warmup 20] [--steps 3]
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

READS = ("item", "__bool__", "__int__", "__float__", "__index__", "tolist", "cpu")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "out" / "scene160"))
    ap.add_argument("--backend", default="triton")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args(argv)

    import torch  # noqa: PLC0415

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")     # before triton is imported
    from ngp_engine.config import (NERF_PRESETS, HashGridConfig,  # noqa: PLC0415
                                   OccupancyGridConfig, replace)
    from ngp_engine.data.transforms import load_nerf_dataset  # noqa: PLC0415
    from ngp_engine.device import pick_device  # noqa: PLC0415
    from ngp_engine.tasks.nerf.task import NerfTask  # noqa: PLC0415

    device = pick_device("auto")
    # Small enough for the interpreter: 4096 samples a step, a 16^3 occupancy grid.
    cfg = replace(NERF_PRESETS["cpu-fast"], backend=args.backend, target_batch_samples=1 << 12,
                  initial_rays=256, occupancy=OccupancyGridConfig(resolution=16),
                  encoding=HashGridConfig(n_levels=8, n_features_per_level=2,
                                          log2_hashmap_size=15, base_resolution=16,
                                          max_resolution=256))
    task = NerfTask(load_nerf_dataset(args.data, "train", max_image_size=40), cfg, device)
    for _ in range(args.warmup):
        task.step()

    engine = str(ROOT / "ngp_engine")
    counts: collections.Counter = collections.Counter()

    def counting(name: str):
        original = getattr(torch.Tensor, name)

        def read(self, *a, **k):
            caller = sys._getframe(1).f_code
            if caller.co_filename.startswith(engine):
                where = os.path.relpath(caller.co_filename, engine)
                counts[(name, where, sys._getframe(1).f_lineno, caller.co_name)] += 1
            return original(self, *a, **k)
        return read

    for name in READS:
        setattr(torch.Tensor, name, counting(name))
    for _ in range(args.steps):
        task.step()
    total = sum(counts.values()) / args.steps
    print(f"host reads per step from engine code ({args.backend}, {device.type}): {total:g}")
    for (name, where, line, func), n in counts.most_common():
        print(f"  {n / args.steps:6.1f}  {name:10s} {where}:{line} ({func})")


if __name__ == "__main__":
    main()
