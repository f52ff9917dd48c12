"""Count the operations of a NeRF training step that wait for the device (on a GPU).

On a GPU each such operation (a value read back: `.item()`, `int(t)`, `bool(t)`,
`.tolist()`, `.cpu()`; an output sized by the data: `nonzero`, boolean-mask indexing,
`bincount`, ...) waits for the device's queue to drain. `ngp_engine.host_syncs.HostSyncs`
records the ones called from `ngp_engine` code, by file, line and function, over `--steps`
steps after `--warmup` steps (the occupancy grid past its first updates). Without a GPU it
runs the triton backend in Triton's interpreter on CPU tensors (the same host code as on a
GPU), on a small configuration, with the MLPs' backward and the tables' Adam on their GPU
paths (not the CPU's kernels). The counts of the steps that update the occupancy grid
(every 16th) are shown apart.

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
    if device.type == "cpu":        # what a GPU runs: no CPU kernels, counts read 2 steps late
        from ngp_engine.device import LaggedReads  # noqa: PLC0415
        from ngp_engine.nn import optim  # noqa: PLC0415
        from ngp_engine.nn.mlp import MLP  # noqa: PLC0415

        MLP.hand_backward = False
        optim._kernel_applies = lambda p: False
        task.reads = LaggedReads(device, lag=2)
    for _ in range(args.warmup):
        task.step()

    from ngp_engine.host_syncs import HostSyncs  # noqa: PLC0415

    per_step, updates = HostSyncs(), HostSyncs()
    n_update = 0
    for _ in range(args.steps):
        updating = task.steps_done % cfg.occupancy.update_interval == 0
        n_update += updating
        with updates if updating else per_step:
            task.step()
    n_plain = args.steps - n_update
    print(f"operations that wait for the device per step, from engine code ({args.backend}, "
          f"{device.type}; {n_plain} steps): {per_step.total / max(n_plain, 1):g}")
    print(per_step.report(max(n_plain, 1)))
    if n_update:
        print(f"in the {n_update} steps that updated the occupancy grid: {updates.total / n_update:g} per step")
        print(updates.report(n_update))


if __name__ == "__main__":
    main()
