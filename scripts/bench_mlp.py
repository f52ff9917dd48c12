"""The NeRF MLPs on the CPU: three ways to run them, forward + backward, and (optionally)
what bfloat16 does to a short training run.

    .venv/bin/python scripts/bench_mlp.py [--samples 65536] [--repeats 10]
        [--train-steps 0] [--data out/scene160] [--out benchmarks/mlp.json]

1. The `cpu-fast` preset's density MLP (32 -> 64 -> 16) and colour MLP (16 + 16 -> 64 ->
   64 -> 3, sigmoid) on `--samples` random rows, forward + backward (weights and input),
   median of `--repeats` after two warm-ups:
   - "float32": the engine's `MLP` modules as they run in training;
   - "chunked_N": the same products in chunks of N rows (`ChunkedMLP` below: activations
     saved per chunk, backward chunk by chunk), to see whether keeping activations in cache
     pays on this CPU;
   - "bfloat16_autocast": the modules under `torch.autocast("cpu", torch.bfloat16)` (AMX or
     AVX-512 BF16 where the CPU has them);
   - "bfloat16": the modules with `precision="bfloat16"`, as the engine runs them (on the
     CPU the hand-written bfloat16 path of `nn/mlp.py`, rows padded to 4096).
2. With `--train-steps N`: N NeRF training steps on `--data` with `mlp_precision` float32
   and bfloat16 (the engine's option), alternating, two runs each: wall seconds and test PSNR on the first 8 test views.

Why: the MLPs cost more than the hash grid in a CPU NeRF step (`scripts/bench_nerf_step.py`),
so these are the candidates for making them cheaper.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402

from ngp_engine.config import NERF_PRESETS  # noqa: E402
from ngp_engine.device import machine_info  # noqa: E402
from ngp_engine.nn.mlp import MLP  # noqa: E402
from bench_encoding import time_runs  # noqa: E402


class ChunkedMLP(torch.autograd.Function):
    """Bias-free ReLU MLP run in chunks of rows: x [N, in], weights [out_l, in_l] -> [N, out]."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, chunk: int, *ws: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        hidden = [x.new_empty(n, w.shape[0]) for w in ws[:-1]]
        out = x.new_empty(n, ws[-1].shape[0])
        for s in range(0, n, chunk):
            a = x[s:s + chunk]
            for h, w in zip(hidden, ws[:-1]):
                torch.mm(a, w.t(), out=h[s:s + chunk])
                a = h[s:s + chunk].relu_()
            torch.mm(a, ws[-1].t(), out=out[s:s + chunk])
        ctx.save_for_backward(x, *ws, *hidden)
        ctx.chunk, ctx.n_layers = chunk, len(ws)
        return out

    @staticmethod
    def backward(ctx: Any, dy: torch.Tensor):  # type: ignore[override]
        saved = ctx.saved_tensors
        nl = ctx.n_layers
        x, ws, hidden = saved[0], saved[1:1 + nl], saved[1 + nl:]
        dws = [torch.zeros_like(w) for w in ws]
        dx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        dy = dy.contiguous()
        for s in range(0, x.shape[0], ctx.chunk):
            g = dy[s:s + ctx.chunk]
            for layer in range(nl - 1, -1, -1):
                a = x[s:s + ctx.chunk] if layer == 0 else hidden[layer - 1][s:s + ctx.chunk]
                dws[layer].addmm_(g.t(), a)
                if layer > 0:
                    g = torch.mm(g, ws[layer])
                    g.mul_(a > 0)
                elif dx is not None:
                    torch.mm(g, ws[0], out=dx[s:s + ctx.chunk])
        return (dx, None, *dws)


def time_it(fn: Callable[[], None], repeats: int, device: torch.device) -> dict[str, Any]:
    samples = time_runs(fn, device, 2, repeats)
    return {"median_s": statistics.median(samples), "samples_s": samples}


def isolated(n: int, repeats: int, device: torch.device | None = None) -> dict[str, Any]:
    """Forward + backward median seconds of each variant on `device` (default the CPU)."""
    device = device or torch.device("cpu")
    cfg = NERF_PRESETS["cpu-fast"]
    gen = torch.Generator().manual_seed(0)
    density = MLP(32, 16, cfg.density_network, generator=gen).to(device)
    colour = MLP(32, 3, cfg.rgb_network, generator=gen).to(device)
    x = torch.randn(n, 32, generator=gen).to(device).requires_grad_(True)
    dir_features = torch.randn(n, 16, generator=gen).to(device)
    params = list(density.parameters()) + list(colour.parameters())

    def reset() -> None:
        x.grad = None
        for p in params:
            p.grad = None

    def modules(autocast: bool, precision: str = "float32") -> Callable[[], None]:
        def run() -> None:
            reset()
            density.precision = colour.precision = precision
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                h = density(x)
                rgb = colour(torch.cat([h, dir_features.to(h.dtype)], -1))
            (rgb.float().sum() + h[:, 0].float().sum()).backward()
        return run

    def chunked(chunk: int) -> Callable[[], None]:
        def run() -> None:
            reset()
            h = ChunkedMLP.apply(x, chunk, *[layer.weight for layer in density.layers])
            rgb = torch.sigmoid(ChunkedMLP.apply(torch.cat([h, dir_features], -1), chunk,
                                                 *[layer.weight for layer in colour.layers]))
            (rgb.sum() + h[:, 0].sum()).backward()
        return run

    out = {"float32": time_it(modules(False), repeats, device)}
    for chunk in (2048, 4096, 8192):
        out[f"chunked_{chunk}"] = time_it(chunked(chunk), repeats, device)
    out["bfloat16_autocast"] = time_it(modules(True), repeats, device)
    out["bfloat16"] = time_it(modules(False, "bfloat16"), repeats, device)
    out["float32_again"] = time_it(modules(False), repeats, device)   # drift check
    return out


def training(data: Path, steps: int, rounds: int = 2) -> dict[str, Any]:
    """`steps` NeRF steps per run, float32 and bfloat16 (`mlp_precision`) alternating for
    `rounds` rounds in this process (machine drift cancels): seconds and test PSNR."""
    from ngp_engine import config as cfgmod  # noqa: PLC0415
    from ngp_engine.data.transforms import load_nerf_dataset  # noqa: PLC0415
    from ngp_engine.tasks.nerf.evaluate import evaluate  # noqa: PLC0415
    from ngp_engine.tasks.nerf.task import NerfTask  # noqa: PLC0415

    base = NERF_PRESETS["cpu-fast"]
    train = load_nerf_dataset(data, "train", max_image_size=base.max_image_size)
    test = load_nerf_dataset(data, "test", max_image_size=base.max_image_size)
    test.images, test.cameras = test.images[:8], test.cameras[:8]
    out: dict[str, Any] = {"float32": [], "bfloat16": []}
    for _ in range(rounds):
        for precision in out:
            task = NerfTask(train, cfgmod.replace(base, mlp_precision=precision), torch.device("cpu"))
            t0 = time.perf_counter()
            for _ in range(steps):
                task.step()
            seconds = time.perf_counter() - t0
            psnr = evaluate(task.model, test)["psnr"]
            out[precision].append({"steps": steps, "train_seconds": seconds, "test_psnr_8_views": psnr})
            print(f"{precision}: {steps} steps in {seconds:.1f} s, test PSNR {psnr:.2f} dB", flush=True)
    for precision in list(out):
        runs = out[precision]
        out[precision] = {"runs": runs,
                          "median_train_seconds": statistics.median(r["train_seconds"] for r in runs)}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1 << 16)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--train-steps", type=int, default=0)
    ap.add_argument("--data", default=str(ROOT / "out" / "scene160"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "mlp.json"))
    args = ap.parse_args(argv)
    report: dict[str, Any] = {
        "command": "scripts/bench_mlp.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(torch.device("cpu")), "samples": args.samples,
        "isolated": isolated(args.samples, args.repeats)}
    for name, r in report["isolated"].items():
        print(f"{name:<20} {r['median_s'] * 1e3:7.1f} ms (forward + backward, {args.samples} rows)")
    if args.train_steps:
        report["training"] = training(Path(args.data), args.train_steps)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
