"""One NeRF training step taken apart: its throughput against the hash grid's own forward +
backward at the same sample count, and where the rest of its time goes.

    .venv/bin/python scripts/bench_nerf_step.py [--data out/scene160] [--preset cpu-fast]
        [--warmup 30] [--steps 30] [--profile-steps 5] [--cprofile-steps 32] [--device auto]
        [--ab-handoff] [--ab-mlp-backward] [--ab-precision] [--ab-compositing] [--ab-marching]
        [--mlp-precision P] [--long N]
        [--out benchmarks/nerf_step.json]

1. Trains `--warmup` steps (kernels compiled, the occupancy grid past its first updates),
   then times `--steps` steps: network samples per second (the samples each step trains
   on, summed, over the steps' wall time).
2. In the same process, the hash grid alone (the run's own encoding object and backend)
   does forward + backward on as many points as the mean step trained on, `--steps` times:
   points per second. The ratio 1/2 is the issue's "step at >= 60% of the grid".
3. A torch.profiler run over `--profile-steps` steps: operators by self CPU time per step
   (the hash grid and MLPs appear as their autograd functions / matmuls; numba kernels are
   inside the `_CpuKernelFunction` entries), and a cProfile run over `--cprofile-steps`:
   Python functions by own time per step ("python_profile": the numba marcher's passes,
   which torch's profiler does not see, appear here by name).

Options for the figures of the README's step section:
- `--long N`: a fresh run of N steps, each hundred reporting its wall seconds, the density
  evaluations per trained sample (the windowed search's overshoot) and the batch PSNR
  (under "long" in the JSON).
- `--ab-handoff`: after `--warmup` steps, blocks of 16 steps (the occupancy grid's update
  interval: one update in every block) alternating between handing the search's encodings
  to the training pass and encoding again, 8 blocks each (one process, so machine speed
  drifts cancel); medians under "handoff".
- `--ab-mlp-backward`: the same alternation between the MLPs' hand-written CPU backward
  and autograd's (`MLP.hand_backward`); medians under "mlp_backward".
- `--ab-precision`: the same alternation between the run's own MLP precision ("initial"),
  float32, bfloat16 by the hand-written path and bfloat16 under autocast; medians under
  "precision". `--mlp-precision` sets the run's own (default: the preset's).
- `--ab-compositing`: the same alternation between the CPU's numba kernels for compositing
  and for the windowed search's bookkeeping (the default) and the torch code; medians
  under "compositing".
- `--ab-marching`: the same alternation between the numba marcher's single march into a
  padded buffer and its count-then-fill passes; medians under "marching".

Renders out/scene160 with scripts/make_scene.py when it is missing (Blender as a module).
"""
from __future__ import annotations

import argparse
import builtins
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ngp_engine.config import MLP_PRECISIONS, NERF_PRESETS, replace  # noqa: E402
from ngp_engine import cpu_allocator  # noqa: E402
from ngp_engine.data.transforms import load_nerf_dataset  # noqa: E402
from ngp_engine.device import machine_info, pick_device  # noqa: E402
from ngp_engine.tasks.nerf.task import NerfTask  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type in ("cuda", "mps"):
        getattr(torch, device.type).synchronize()


def ensure_scene(path: Path) -> None:
    """Render the Blender scene into `path` unless it is there (make_scene writes scene.json
    last) or `path` holds a capture (a transforms.json: used as it is, never rendered into)."""
    if not (path.is_file() or (path / "scene.json").exists() or (path / "transforms.json").exists()):
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_scene.py"), "--out", str(path)],
                       check=True)


def _page_faults() -> int:
    """Minor page faults of this process so far (fresh pages touched)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def time_steps(task: NerfTask, steps: int) -> dict[str, Any]:
    """Wall seconds, network samples and page faults of `steps` training steps."""
    samples, seconds = [], []
    f0 = _page_faults()
    for _ in range(steps):
        n_rays = task.n_rays                     # this step's (the task adapts it after)
        synchronize(task.device)
        t0 = time.perf_counter()
        p = task.step()
        synchronize(task.device)
        seconds.append(time.perf_counter() - t0)
        samples.append(float(p.resolved().samples_per_ray) * n_rays)
    total = sum(seconds)
    return {"steps": steps, "seconds": total, "median_step_s": statistics.median(seconds),
            "mean_samples": sum(samples) / steps, "samples_per_s": sum(samples) / total,
            "page_faults_per_step": (_page_faults() - f0) / steps,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def time_grid(task: NerfTask, n_points: int, repeats: int) -> dict[str, Any]:
    """The run's own hash grid, forward + backward on n_points random points."""
    enc = task.model.field.encoding
    dev = task.device
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n_points, 3, generator=gen).to(dev)
    dy = torch.randn(n_points, enc.n_output_dims, generator=gen).to(dev)
    seconds = []
    for i in range(repeats + 3):
        synchronize(dev)
        t0 = time.perf_counter()
        enc.params.grad = None
        enc(x).backward(dy)
        synchronize(dev)
        if i >= 3:
            seconds.append(time.perf_counter() - t0)
    med = statistics.median(seconds)
    return {"points": n_points, "median_s": med, "points_per_s": n_points / med,
            "backend": enc.backend_for(dev)}


def long_run(data: Path, cfg: Any, device: torch.device, steps: int) -> list[dict[str, Any]]:
    """Per hundred steps of a fresh run: wall seconds, evaluations per trained sample, PSNR."""
    task = NerfTask(load_nerf_dataset(data, "train", max_image_size=cfg.max_image_size), cfg, device)
    rows, evaluated, trained = [], [], []
    render = task.model.render_rays

    def counting(*a: Any, **k: Any) -> Any:
        out = render(*a, **k)
        evaluated.append(out.n_marched)
        trained.append(out.n_samples)
        return out

    task.model.render_rays = counting  # type: ignore[method-assign]
    t0 = time.perf_counter()
    for i in range(steps):
        p = task.step()
        if (i + 1) % 100 == 0:
            synchronize(device)
            rows.append({"step": i + 1, "seconds": round(time.perf_counter() - t0, 2),
                         "evaluated_per_trained": round(sum(evaluated[-100:]) / max(sum(trained[-100:]), 1), 3),
                         "psnr": round(float(p.resolved().psnr), 2)})
            print(rows[-1], flush=True)
    return rows


def ab_blocks(task: NerfTask, modes: dict[str, Any], blocks: int = 8) -> dict[str, Any]:
    """Median step seconds per mode, alternating blocks of steps; modes: name -> a function
    that switches the mode on (the first mode's is called again at the end).

    A block is as many steps as the occupancy grid's update interval, so every block holds
    exactly one update whatever step the A/B starts at. (Blocks of 8 steps, used until
    2026-12-05, put every update of a 16-step interval into the same mode's blocks: the mode
    that step count fell on carried all of them.)"""
    steps = task.cfg.occupancy.update_interval
    times: dict[str, list[float]] = {name: [] for name in modes}
    faults = dict.fromkeys(modes, 0)
    try:
        for _ in range(blocks):
            for mode, switch in modes.items():
                switch()
                synchronize(task.device)
                f0 = _page_faults()
                t0 = time.perf_counter()
                for _ in range(steps):
                    task.step()
                synchronize(task.device)
                times[mode].append((time.perf_counter() - t0) / steps)
                faults[mode] += _page_faults() - f0
    finally:
        next(iter(modes.values()))()
    return {k: {"median_step_s": statistics.median(v), "block_step_s": v, "block_steps": steps,
                "page_faults_per_step": faults[k] / (blocks * steps)} for k, v in times.items()}


def ab_handoff(task: NerfTask) -> dict[str, Any]:
    """With and without the search's encodings handed to the training pass."""
    from ngp_engine.render import renderer  # noqa: PLC0415

    def without(obj: Any, name: str) -> bool:
        return False if name == "encode" else builtins.hasattr(obj, name)

    def handoff() -> None:
        renderer.hasattr = builtins.hasattr  # type: ignore[attr-defined]

    def encode_again() -> None:
        renderer.hasattr = without  # type: ignore[attr-defined]

    return ab_blocks(task, {"handoff": handoff, "encode_again": encode_again})


def ab_mlp_backward(task: NerfTask) -> dict[str, Any]:
    """The MLPs' hand-written CPU backward (`nn/mlp.py` _ReluLayers) against autograd's."""
    from ngp_engine.nn.mlp import MLP  # noqa: PLC0415

    def hand() -> None:
        MLP.hand_backward = True

    def autograd() -> None:
        MLP.hand_backward = False

    return ab_blocks(task, {"hand": hand, "autograd": autograd})


def ab_compositing(task: NerfTask) -> dict[str, Any]:
    """The CPU's numba kernels for compositing (`_cpu_compositing`) and for the windowed
    search's bookkeeping (`_cpu_windows`) against the torch code (`compositor_for`, as the
    renderer and volume_rendering see it, answering "torch")."""
    from ngp_engine.render import renderer, volume_rendering  # noqa: PLC0415

    chosen = volume_rendering.compositor_for

    def kernels() -> None:
        volume_rendering.compositor_for = renderer.compositor_for = chosen  # type: ignore[attr-defined]

    def torch_code() -> None:
        volume_rendering.compositor_for = renderer.compositor_for = (  # type: ignore[attr-defined]
            lambda device, requested="auto": "torch")

    return ab_blocks(task, {"kernels": kernels, "torch_code": torch_code})


def ab_marching(task: NerfTask) -> dict[str, Any]:
    """The numba marcher's single march into a padded buffer (the default for the search's
    windows) against its count-then-fill passes (`ray_marching.PADDED_MARCH_SLOTS`)."""
    from ngp_engine.render import ray_marching  # noqa: PLC0415

    chosen = ray_marching.PADDED_MARCH_SLOTS

    def one_march() -> None:
        ray_marching.PADDED_MARCH_SLOTS = chosen

    def two_passes() -> None:
        ray_marching.PADDED_MARCH_SLOTS = 0

    return ab_blocks(task, {"one_march": one_march, "two_passes": two_passes})


def ab_precision(task: NerfTask) -> dict[str, Any]:
    """The MLPs' products in float32 (hand-written backward), bfloat16 by the hand-written
    path and bfloat16 under autocast (`MLP.precision`, `MLP.hand_backward`)."""
    from ngp_engine.nn.mlp import MLP  # noqa: PLC0415

    mlps = [m for m in task.model.field.modules() if isinstance(m, MLP)]
    initial = [m.precision for m in mlps]

    def mode(precision: str | None, hand: bool) -> Any:
        def switch() -> None:
            MLP.hand_backward = hand
            for m, p in zip(mlps, initial):
                m.precision = precision or p
        return switch

    return ab_blocks(task, {"initial": mode(None, True), "float32": mode("float32", True),
                            "bfloat16": mode("bfloat16", True),
                            "bfloat16_autocast": mode("bfloat16", False)})


def profile_steps(task: NerfTask, steps: int, top: int = 25) -> list[dict[str, Any]]:
    """Operators by self CPU time per step over `steps` steps."""
    from torch.profiler import ProfilerActivity, profile  # noqa: PLC0415

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            task.step()
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1.0
    return [{"op": e.key, "ms_per_step": round(e.self_cpu_time_total / 1e3 / steps, 3),
             "share": round(e.self_cpu_time_total / total, 4), "calls_per_step": e.count / steps}
            for e in rows[:top]]


def python_profile(task: NerfTask, steps: int, top: int = 15) -> list[dict[str, Any]]:
    """Python functions (numba kernels included) by own time per step over `steps` steps."""
    import cProfile  # noqa: PLC0415
    import pstats  # noqa: PLC0415

    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        task.step()
    prof.disable()
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    rows = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return [{"function": f"{Path(f).name}:{line}({name})", "ms_per_step": round(tt * 1e3 / steps, 3),
             "calls_per_step": nc / steps}
            for (f, line, name), (_, nc, tt, _, _) in rows]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "out" / "scene160"))
    ap.add_argument("--preset", default="cpu-fast", choices=sorted(NERF_PRESETS))
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument("--cprofile-steps", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--long", type=int, default=0, help="also a fresh run of this many steps")
    ap.add_argument("--ab-handoff", action="store_true")
    ap.add_argument("--ab-mlp-backward", action="store_true")
    ap.add_argument("--ab-precision", action="store_true")
    ap.add_argument("--ab-compositing", action="store_true")
    ap.add_argument("--ab-marching", action="store_true")
    ap.add_argument("--mlp-precision", choices=MLP_PRECISIONS, default=None,
                    help="the MLPs' precision (default: the preset's)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "nerf_step.json"))
    args = ap.parse_args(argv)

    data = Path(args.data)
    ensure_scene(data)
    device = pick_device(args.device)
    cfg = NERF_PRESETS[args.preset]
    if args.mlp_precision:
        cfg = replace(cfg, mlp_precision=args.mlp_precision)
    task = NerfTask(load_nerf_dataset(data, "train", max_image_size=cfg.max_image_size), cfg, device)
    for _ in range(args.warmup):
        task.step()
    step = time_steps(task, args.steps)
    grid = time_grid(task, int(round(step["mean_samples"])), args.steps)
    report = {
        "command": "scripts/bench_nerf_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"), "machine": machine_info(device),
        "preset": args.preset, "data": str(data), "backend": task.backend,
        "mlp_precision": task.mlp_precision,      # the products' (auto resolved)
        "mmap_threshold": cpu_allocator.mmap_threshold,   # the CPU task's (None: glibc's own)
        "step": step, "grid_forward_backward": grid,
        "step_vs_grid": step["samples_per_s"] / grid["points_per_s"],
        "profile": profile_steps(task, args.profile_steps),
        "python_profile": python_profile(task, args.cprofile_steps),
    }
    for flag, key, label, ab in (("ab_handoff", "handoff", "hand-off", ab_handoff),
                                 ("ab_mlp_backward", "mlp_backward", "MLP backward", ab_mlp_backward),
                                 ("ab_compositing", "compositing", "compositing", ab_compositing),
                                 ("ab_marching", "marching", "marching", ab_marching),
                                 ("ab_precision", "precision", "MLP precision", ab_precision)):
        if getattr(args, flag):
            report[key] = ab(task)
            print(f"{label} A/B, median step ms: " + ", ".join(
                f"{k} {v['median_step_s'] * 1e3:.1f}" for k, v in report[key].items()))
    if args.long:
        report["long"] = long_run(data, cfg, device, args.long)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"step: {step['samples_per_s'] / 1e3:.0f} k samples/s ({step['mean_samples']:.0f} samples, "
          f"{step['median_step_s'] * 1e3:.0f} ms median, {step['page_faults_per_step']:.0f} page "
          f"faults per step, peak RSS {step['peak_rss_mib']:.0f} MiB); grid fwd+bwd alone: "
          f"{grid['points_per_s'] / 1e3:.0f} k points/s -> step at {report['step_vs_grid']:.0%} of the grid")
    for row in report["profile"][:15]:
        print(f"  {row['ms_per_step']:9.2f} ms  {row['share']:6.1%}  {row['op']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
