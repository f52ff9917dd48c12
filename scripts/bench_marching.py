"""The CPU ray marcher alone (numba kernel: one march into a padded buffer, or with
`--two-pass` the counting + filling passes) on a real capture's
setting: 5 cascades (aabb_scale 16), cone 1/256, cameras inside the scene box around an
object, the occupancy grid as training leaves it (matter in a shell around the centre of
cascade 0, the coarser cascades holding only their max-pooled copy of the finer ones and a
little floating matter), 4,096 rays from the cameras.

    .venv/bin/python scripts/bench_marching.py [--repeats 20] [--two-pass] [--out benchmarks/marching.json]

Times `march_rays(..., backend="cpu")` for the first window of the training's density
search (16 samples per ray, the counting pass marches every ray that misses the object to
the box's edge) and for whole rays (at most 1,024 samples), median of `--repeats` after a
warm-up call (numba compiled). The same rays and grid every run (fixed seeds), so commits
can be compared: the sample totals must be equal.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402

from ngp_engine.config import OccupancyGridConfig  # noqa: E402
from ngp_engine.render.occupancy_grid import OccupancyGrid, n_cascades_for  # noqa: E402
from ngp_engine.render import ray_marching  # noqa: E402
from ngp_engine.render.ray_marching import march_rays, step_bounds  # noqa: E402
from ngp_engine.render.rays import ray_box_intersect  # noqa: E402
from bench_encoding import time_runs  # noqa: E402


def capture_grid(res: int, aabb_scale: float, gen: torch.Generator) -> OccupancyGrid:
    """Cascade 0: a shell of radius 0.25-0.3 around the centre; every coarser cascade: 0.1%
    of its cells (floaters), plus the finer cascade's occupancy max-pooled into its centre."""
    n_casc = n_cascades_for(aabb_scale)
    min_step, _ = step_bounds(1024, n_casc, res)
    grid = OccupancyGrid(OccupancyGridConfig(resolution=res), n_casc, min_step, torch.device("cpu"))
    c = (torch.arange(res, dtype=torch.float32) + 0.5) / res - 0.5
    x, y, z = torch.meshgrid(c, c, c, indexing="ij")
    radius = (x * x + y * y + z * z).sqrt()
    values = torch.rand(n_casc, res ** 3, generator=gen) * 0.001          # below the threshold
    values[0] += ((radius > 0.25) & (radius < 0.3)).reshape(-1).float()
    values[1:] += (torch.rand(n_casc - 1, res ** 3, generator=gen) < 0.001).float()
    grid.load_state_dict({"values": values, "updates": 1000})           # bits as training makes them
    return grid


def capture_rays(n: int, aabb_scale: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n rays from 24 cameras on a ring of radius 1.5 (unit-cube units, inside the scene box)
    around the centre, each within a 50-degree cone around its view of the centre."""
    cams = 24
    a = torch.arange(cams) * (2 * math.pi / cams)
    eye = torch.stack([0.5 + 1.5 * torch.cos(a), 0.5 + 1.5 * torch.sin(a), torch.full_like(a, 0.9)], 1)
    which = torch.randint(0, cams, (n,), generator=gen)
    o = eye[which]
    look = 0.5 - o
    look = look / look.norm(dim=-1, keepdim=True)
    d = look + torch.randn(n, 3, generator=gen) * 0.25
    return o, d / d.norm(dim=-1, keepdim=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "marching.json"))
    ap.add_argument("--two-pass", action="store_true",
                    help="count then fill, also where the engine marches once into a padded buffer")
    args = ap.parse_args(argv)
    if args.two_pass:
        ray_marching.PADDED_MARCH_SLOTS = 0
    gen = torch.Generator().manual_seed(0)
    aabb_scale, res = 16.0, 128
    grid = capture_grid(res, aabb_scale, gen)
    o, d = capture_rays(4096, aabb_scale, gen)
    half = aabb_scale / 2
    t_near, t_far = ray_box_intersect(o, d, torch.full((3,), 0.5 - half), torch.full((3,), 0.5 + half))
    min_step, max_step = step_bounds(1024, grid.n_cascades, res)
    jitter = torch.rand(o.shape[0], generator=gen)
    report = {"command": "scripts/bench_marching.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"), "cascades": grid.n_cascades, "resolution": res,
              "occupied_fraction": grid.occupancy_fraction, "rays": int(o.shape[0]), "runs": {}}
    for name, cap in (("first_window_16", 16), ("whole_rays_1024", 1024)):
        def run() -> int:
            return march_rays(o, d, t_near, t_far, grid, min_step, max_step, 1 / 256, cap, jitter,
                              backend="cpu").n_samples
        samples = run()                                          # also numba's warm-up
        times = time_runs(run, torch.device("cpu"), 0, args.repeats)
        report["runs"][name] = {"samples": samples, "median_ms": statistics.median(times) * 1e3,
                                "min_ms": min(times) * 1e3}
        print(f"{name}: {samples} samples, {statistics.median(times) * 1e3:.2f} ms median")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
