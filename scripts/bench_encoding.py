"""Hash-grid encoding throughput, per backend.

For every backend `backends.available(device)` lists, times the hash encoding (3-D
input, L=16, F=2, T=2^19, N_min=16, N_max=2048) on 2^18 seeded uniform points in
[0, 1]^3: forward (`grid(x)` under no_grad) and forward+backward (`grid(x).backward(dy)`,
fixed random dy, parameter gradient only, `params.grad` reset between runs). Warm-up
runs come first (numba compiles on first call); CUDA/MPS are synchronised around each
timing. Reports every sample, the median and points/s (batch / median), and the
compiled kernel ("cpu") against the PyTorch reference ("torch") from this run's medians.

Also times a nerfstudio-style pure-PyTorch hash encoding (`PureTorchHashEncoding`: every
level hashed into one [L * T, F] table, eight corner gathers and trilinear lerps, the
scheme of nerfstudio's torch fallback, written here from that description) on the same
points, and each backend's speed-up over it ("vs_pure_torch").

With `--kernel-probe` (CPU only), the numba kernels are also called directly on the same
points at T=2^14 (every level's table fits the 2 MB L2) and at T=2^19: forward into a
fresh output array and into a reused one (the difference is first-touch page faults), and
the table gradient (under "kernel_probe"): where the kernel's time goes.

With `--ab-allocation` (CPU only), the same kernels write into fresh buffers allocated by
numpy (which asks for transparent huge pages on arrays of 4 MiB and more) or by torch (no
such request; what the "cpu" backend does), alternating in rounds of 4 calls, 10 rounds,
in this process: mean, median and max per variant and the system CPU seconds (memory
compaction for huge pages shows there), under "allocation".

On the CPU the process runs with glibc's allocator set as a CPU task sets it
(`cpu_allocator.keep_freed_memory`: freed blocks up to 256 MiB reused, not unmapped), for
every backend and the nerfstudio-style encoding alike; `--glibc-defaults` leaves glibc's
own settings (how the figures before 2026-12-05 15:40 were measured).

Run from the repo root:
    .venv/bin/python scripts/bench_encoding.py [--batch-log2 18] [--repeats 5]
        [--device auto] [--kernel-probe] [--ab-allocation] [--glibc-defaults]
        [--out benchmarks/encoding.json]
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
from ngp_engine import cpu_allocator  # noqa: E402
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


class PureTorchHashEncoding(torch.nn.Module):
    """A pure-PyTorch hash encoding as the common torch fallbacks write it: per level the
    integer resolution floor(N_min * b^l), every level hashed (no dense levels), corner
    hashes by xor of coordinate * prime modulo T, gathers from one [L * T, F] table and
    trilinear interpolation. A speed baseline only: its layout differs from ours."""

    def __init__(self, cfg: HashGridConfig) -> None:
        super().__init__()
        t = 1 << cfg.log2_hashmap_size
        b = cfg.resolved_per_level_scale
        levels = torch.arange(cfg.n_levels)
        self.register_buffer("scalings", torch.floor(cfg.base_resolution * b ** levels))
        self.register_buffer("offsets", levels * t)
        self.table_size = t
        self.table = torch.nn.Parameter(torch.rand(cfg.n_levels * t, cfg.n_features_per_level) * 2e-4 - 1e-4)

    def hash(self, c: torch.Tensor) -> torch.Tensor:
        """c: [..., L, 3] int64 corner coordinates -> [..., L] table rows."""
        h = c[..., 0] ^ (c[..., 1] * 2654435761) ^ (c[..., 2] * 805459861)
        return h % self.table_size + self.offsets

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, 3] in [0, 1] -> [N, L * F]."""
        scaled = x[:, None, :] * self.scalings[:, None]           # [N, L, 3]
        lo = torch.floor(scaled).long()
        f = scaled - lo                                           # [N, L, 3]
        corners = []
        for c in range(8):
            off = torch.tensor([(c >> k) & 1 for k in range(3)], device=x.device)
            corners.append(self.table[self.hash(lo + off)])       # [N, L, F]
        fx, fy, fz = (f[..., k:k + 1] for k in range(3))
        c00 = corners[0] * (1 - fx) + corners[1] * fx
        c10 = corners[2] * (1 - fx) + corners[3] * fx
        c01 = corners[4] * (1 - fx) + corners[5] * fx
        c11 = corners[6] * (1 - fx) + corners[7] * fx
        c0 = c00 * (1 - fy) + c10 * fy
        c1 = c01 * (1 - fy) + c11 * fy
        return (c0 * (1 - fz) + c1 * fz).flatten(1)


def bench_pure_torch(device: torch.device, batch: int, warmup: int, repeats: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(SEED)
    enc = PureTorchHashEncoding(GRID).to(device)
    x = torch.rand(batch, N_INPUT_DIMS, generator=gen).to(device)
    dy = torch.randn(batch, GRID.n_levels * GRID.n_features_per_level, generator=gen).to(device)

    @torch.no_grad()
    def forward() -> None:
        enc(x)

    def forward_backward() -> None:
        enc.table.grad = None
        enc(x).backward(dy)

    return {"forward": summarize(time_runs(forward, device, warmup, repeats), batch),
            "forward_backward": summarize(time_runs(forward_backward, device, warmup, repeats), batch)}


def bench_backend(backend: str, device: torch.device, batch: int, warmup: int,
                  repeats: int) -> dict[str, Any]:
    """Forward and forward+backward timings of one backend on the same seeded inputs."""
    gen = torch.Generator().manual_seed(SEED)
    grid = HashGrid(N_INPUT_DIMS, GRID, backend=backend, generator=gen).to(device)
    x = torch.rand(batch, N_INPUT_DIMS, generator=gen).to(device)
    dy = torch.randn(batch, GRID.n_levels * GRID.n_features_per_level, generator=gen).to(device)

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
    pure = bench_pure_torch(device, batch, warmup, repeats)
    report["pure_torch"] = pure
    report["vs_pure_torch"] = {
        name: {ph: pure[ph]["median_s"] / r[ph]["median_s"] for ph in ("forward", "forward_backward")}
        for name, r in results.items()}
    if "cpu" in results and "torch" in results:  # cpu median / torch median, and its inverse
        ratios = {ph: results["cpu"][ph]["median_s"] / results["torch"][ph]["median_s"]
                  for ph in ("forward", "forward_backward")}
        report["cpu_vs_torch"] = {ph: {"time_ratio_cpu_over_torch": r, "speedup_cpu_over_torch": 1 / r}
                                  for ph, r in ratios.items()}
    return report


def kernel_probe(batch: int, repeats: int) -> dict[str, Any]:
    """Median seconds of the numba kernels called directly: forward (fresh / reused output)
    and table gradient, at T=2^14 and at the benchmark's T."""
    import numpy as np  # noqa: PLC0415

    from ngp_engine.encoding import _cpu_kernel as kern  # noqa: PLC0415

    gen = torch.Generator().manual_seed(SEED)
    x = torch.rand(batch, N_INPUT_DIMS, generator=gen).numpy()
    out: dict[str, Any] = {}
    for log2t in (14, GRID.log2_hashmap_size):
        grid = HashGrid(N_INPUT_DIMS, cfgmod.replace(GRID, log2_hashmap_size=log2t), backend="cpu")
        p = grid.params.detach().numpy()
        tables, f = grid._np_tables, GRID.n_features_per_level
        dy = torch.randn(batch, grid.n_output_dims, generator=gen).numpy()
        reused = np.empty((batch, grid.n_output_dims), np.float32)
        xt = np.ascontiguousarray(x.T)

        def fresh() -> None:
            kern.forward(x, p, tables, f, 0)

        def into_reused() -> None:
            kern._forward(xt, p, *tables, f, 0, reused)

        def table_gradient() -> None:
            kern.backward_params(x, dy, tables, grid.layout.n_params, f, 0)

        row = {}
        for name, fn in (("forward_fresh_output", fresh), ("forward_reused_output", into_reused),
                         ("table_gradient", table_gradient)):
            samples = time_runs(fn, torch.device("cpu"), 1, repeats)
            row[name] = {"median_s": statistics.median(samples), "samples_s": samples}
        out[f"T=2^{log2t}"] = row
    return out


def allocation_ab(batch: int, rounds: int = 10, per_round: int = 4) -> dict[str, Any]:
    """Forward and table gradient at the benchmark's T into fresh numpy- or torch-allocated
    buffers, interleaved: seconds per call and system CPU seconds per variant."""
    import resource  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    from ngp_engine.encoding import _cpu_kernel as kern  # noqa: PLC0415

    gen = torch.Generator().manual_seed(SEED)
    x = torch.rand(batch, N_INPUT_DIMS, generator=gen).numpy()
    grid = HashGrid(N_INPUT_DIMS, GRID, backend="cpu")
    p, tables, f = grid.params.detach().numpy(), grid._np_tables, GRID.n_features_per_level
    dy = torch.randn(batch, grid.n_output_dims, generator=gen).numpy()
    shape_out, n_params = (batch, grid.n_output_dims), grid.layout.n_params
    variants: dict[str, Callable[[], Any]] = {
        "forward_numpy": lambda: kern.forward(x, p, tables, f, 0, np.empty(shape_out, np.float32)),
        "forward_torch": lambda: kern.forward(x, p, tables, f, 0, torch.empty(
            shape_out, dtype=torch.float32, device="cpu").numpy()),
        "table_gradient_numpy": lambda: kern.backward_params(
            x, dy, tables, n_params, f, 0, np.empty(n_params, np.float32)),
        "table_gradient_torch": lambda: kern.backward_params(
            x, dy, tables, n_params, f, 0,
            torch.empty(n_params, dtype=torch.float32, device="cpu").numpy()),
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    system = dict.fromkeys(variants, 0.0)
    for fn in variants.values():
        fn()                                           # compiled, caches warm
    for _ in range(rounds):
        for name, fn in variants.items():
            for _ in range(per_round):
                s0 = resource.getrusage(resource.RUSAGE_SELF).ru_stime
                t0 = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t0)
                system[name] += resource.getrusage(resource.RUSAGE_SELF).ru_stime - s0
    return {name: {"mean_s": statistics.mean(v), "median_s": statistics.median(v),
                   "max_s": max(v), "system_cpu_s": system[name], "samples_s": v}
            for name, v in samples.items()}


def print_table(report: dict[str, Any]) -> None:
    print(f"hash grid d={N_INPUT_DIMS} L={GRID.n_levels} F={GRID.n_features_per_level} "
          f"T=2^{GRID.log2_hashmap_size}, batch {report['batch_size']}, "
          f"device {report['machine']['device']}, {report['repeats']} repeats (median)")
    print(f"{'backend':<8} {'fwd s':>10} {'fwd Mpts/s':>11} {'fwd+bwd s':>10} {'f+b Mpts/s':>11}")
    for name, r in report["results"].items():
        f, fb = r["forward"], r["forward_backward"]
        print(f"{name:<8} {f['median_s']:>10.4f} {f['points_per_s'] / 1e6:>11.2f} "
              f"{fb['median_s']:>10.4f} {fb['points_per_s'] / 1e6:>11.2f}")
    p = report["pure_torch"]
    print(f"{'pure':<8} {p['forward']['median_s']:>10.4f} {p['forward']['points_per_s'] / 1e6:>11.2f} "
          f"{p['forward_backward']['median_s']:>10.4f} {p['forward_backward']['points_per_s'] / 1e6:>11.2f}"
          "  (nerfstudio-style pure torch)")
    for name, r in report["vs_pure_torch"].items():
        print(f"{name} vs pure torch: forward {r['forward']:.1f}x, forward+backward "
              f"{r['forward_backward']:.1f}x faster")
    for phase, r in report.get("cpu_vs_torch", {}).items():
        print(f"cpu vs torch, {phase}: {r['speedup_cpu_over_torch']:.2f}x faster "
              f"(time ratio {r['time_ratio_cpu_over_torch']:.3f})")
    for t, row in report.get("kernel_probe", {}).items():
        print(f"kernel probe {t}: " + ", ".join(f"{k} {v['median_s'] * 1e3:.0f} ms" for k, v in row.items()))
    for name, r in report.get("allocation", {}).items():
        print(f"allocation {name}: mean {r['mean_s'] * 1e3:.1f} ms, median "
              f"{r['median_s'] * 1e3:.1f}, max {r['max_s'] * 1e3:.1f}, system CPU {r['system_cpu_s']:.2f} s")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-log2", type=int, default=18, help="log2 of the batch size")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per measurement")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    ap.add_argument("--kernel-probe", action="store_true",
                    help="also time the numba kernels directly at T=2^14 and T=2^19 (CPU)")
    ap.add_argument("--ab-allocation", action="store_true",
                    help="also the kernels into numpy- vs torch-allocated buffers, interleaved (CPU)")
    ap.add_argument("--glibc-defaults", action="store_true",
                    help="keep glibc's allocator settings (not a CPU task's; CPU only)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/encoding.json"))
    args = ap.parse_args(argv)
    try:
        device = pick_device(args.device)
    except UserError as e:
        ap.error(str(e))
    if device.type == "cpu" and not args.glibc_defaults:
        cpu_allocator.keep_freed_memory()
    if args.repeats < 1 or args.warmup < 1:
        ap.error("--repeats and --warmup must be >= 1")
    report = run(device, args.batch_log2, args.repeats, args.warmup)
    report["command"] = "scripts/bench_encoding.py " + " ".join(argv if argv is not None else sys.argv[1:])
    # None: glibc's own settings (--glibc-defaults, or the user's GLIBC_TUNABLES)
    report["mmap_threshold"] = cpu_allocator.mmap_threshold
    if args.kernel_probe and device.type == "cpu" and "cpu" in report["results"]:
        report["kernel_probe"] = kernel_probe(1 << args.batch_log2, args.repeats)
    if args.ab_allocation and device.type == "cpu" and "cpu" in report["results"]:
        report["allocation"] = allocation_ab(1 << args.batch_log2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
