"""Hash-grid encoding throughput, per backend.

For every backend `backends.available(device)` lists, times the hash encoding (3-D
input, L=16, F=2, T=2^19, N_min=16, N_max=2048) on 2^18 seeded uniform points in
[0, 1]^3: forward (`grid(x)` under no_grad) and forward+backward (`grid(x).backward(dy)`,
fixed random dy, parameter gradient only, `params.grad` reset between runs). Warm-up
runs come first (numba compiles on first call); CUDA/MPS are synchronised around each
timing. Reports every sample, the median and points/s (batch / median), and the
compiled kernel ("cpu") against the PyTorch reference ("torch") from this run's medians.

Run from the repo root:
    .venv/bin/python scripts/bench_encoding.py [--batch-log2 18] [--repeats 5]
        [--device auto] [--out benchmarks/encoding.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ngp_engine import config as cfgmod  # noqa: E402
from ngp_engine.config import HashGridConfig  # noqa: E402
from ngp_engine.device import machine_info, pick_device  # noqa: E402
from ngp_engine.errors import UserError  # noqa: E402
from ngp_engine.encoding import backends  # noqa: E402
from ngp_engine.encoding.hash_grid import HashGrid  # noqa: E402

GRID = HashGridConfig(n_levels=16, n_features_per_level=2, log2_hashmap_size=19,
                      base_resolution=16, max_resolution=2048)
N_INPUT_DIMS = 3
SEED = 0


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so wall time covers the work (CUDA, MPS)."""
    if device.type in ("cuda", "mps"):
        getattr(torch, device.type).synchronize()


def time_runs(fn: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Call `fn` `warmup` times untimed, then `repeats` times; wall seconds of each timed call."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        samples.append(time.perf_counter() - t0)
    return samples


def summarize(samples: list[float], batch: int) -> dict[str, Any]:
    med = statistics.median(samples)
    return {"median_s": med, "samples_s": samples, "points_per_s": batch / med}


def bench_backend(backend: str, device: torch.device, batch: int, warmup: int,
                  repeats: int) -> dict[str, Any]:
    """Forward and forward+backward timings of one backend on the same seeded inputs."""
    gen = torch.Generator().manual_seed(SEED)
    grid = HashGrid(N_INPUT_DIMS, GRID, backend=backend, generator=gen).to(device)
    x = torch.rand(batch, N_INPUT_DIMS, generator=gen).to(device)
    dy = torch.randn(batch, GRID.n_output_dims, generator=gen).to(device)

    @torch.no_grad()
    def forward() -> None:
        grid(x)

    def forward_backward() -> None:
        grid.params.grad = None
        grid(x).backward(dy)

    return {"backend": grid.backend_for(device),
            "forward": summarize(time_runs(forward, device, warmup, repeats), batch),
            "forward_backward": summarize(time_runs(forward_backward, device, warmup, repeats), batch)}


def run(device: torch.device, batch_log2: int, repeats: int, warmup: int) -> dict[str, Any]:
    batch = 1 << batch_log2
    results = {name: bench_backend(name, device, batch, warmup, repeats)
               for name in backends.available(device)}
    report: dict[str, Any] = {
        "machine": machine_info(device), "config": cfgmod.to_dict(GRID), "n_input_dims": N_INPUT_DIMS,
        "batch_size": batch, "repeats": repeats, "warmup": warmup, "seed": SEED, "results": results}
    if "cpu" in results and "torch" in results:  # cpu median / torch median, and its inverse
        ratios = {ph: results["cpu"][ph]["median_s"] / results["torch"][ph]["median_s"]
                  for ph in ("forward", "forward_backward")}
        report["cpu_vs_torch"] = {ph: {"time_ratio_cpu_over_torch": r, "speedup_cpu_over_torch": 1 / r}
                                  for ph, r in ratios.items()}
    return report


def print_table(report: dict[str, Any]) -> None:
    print(f"hash grid d={N_INPUT_DIMS} L={GRID.n_levels} F={GRID.n_features_per_level} "
          f"T=2^{GRID.log2_hashmap_size}, batch {report['batch_size']}, "
          f"device {report['machine']['device']}, {report['repeats']} repeats (median)")
    print(f"{'backend':<8} {'fwd s':>10} {'fwd Mpts/s':>11} {'fwd+bwd s':>10} {'f+b Mpts/s':>11}")
    for name, r in report["results"].items():
        f, fb = r["forward"], r["forward_backward"]
        print(f"{name:<8} {f['median_s']:>10.4f} {f['points_per_s'] / 1e6:>11.2f} "
              f"{fb['median_s']:>10.4f} {fb['points_per_s'] / 1e6:>11.2f}")
    for phase, r in report.get("cpu_vs_torch", {}).items():
        print(f"cpu vs torch, {phase}: {r['speedup_cpu_over_torch']:.2f}x faster "
              f"(time ratio {r['time_ratio_cpu_over_torch']:.3f})")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-log2", type=int, default=18, help="log2 of the batch size")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per measurement")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/encoding.json"))
    args = ap.parse_args(argv)
    try:
        device = pick_device(args.device)
    except UserError as e:
        ap.error(str(e))
    if args.repeats < 1 or args.warmup < 1:
        ap.error("--repeats and --warmup must be >= 1")
    report = run(device, args.batch_log2, args.repeats, args.warmup)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
