"""PSNR against training time for image fitting.

Fits scikit-image's bundled astronaut photograph (`skimage.data.astronaut()`, 512x512
RGB, float32 in [0, 1]) with `ImageTask` using an image preset (default "seed"),
and at checkpoints of *training* time (default 1, 2, 5, 10, 20, 30 s) records
{seconds, steps, psnr}. Training time is `task.seconds`, which counts only
optimisation steps: rendering the image for PSNR is not included. Unless
`--no-baseline`, the "frequency" preset (NeRF positional encoding with a wider MLP)
is run the same way for comparison. Before each measured run, a throwaway fitter of
the same preset trains a few steps, so one-off costs (loading the numba kernel,
thread pools, allocator) do not land in the first checkpoint (`--warmup-steps 0`
keeps them in).

Run from the repo root (about 1 minute of training per preset by default):
    .venv/bin/python scripts/bench_image.py [--preset seed] [--checkpoints 1,2,5,10,20,30]
        [--no-baseline] [--device auto] [--mlp-precision P] [--out benchmarks/image.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ngp_engine import config as cfgmod  # noqa: E402
from ngp_engine.config import IMAGE_PRESETS, MLP_PRECISIONS  # noqa: E402
from ngp_engine.device import machine_info, pick_device  # noqa: E402
from ngp_engine.errors import UserError  # noqa: E402
from ngp_engine.tasks.image import ImageTask  # noqa: E402

IMAGE_PATH = "skimage:astronaut"
BASELINE = "frequency"


def load_astronaut() -> np.ndarray:
    """The astronaut photograph as float32 [512, 512, 3] in [0, 1]."""
    from skimage import data  # noqa: PLC0415

    return np.ascontiguousarray(data.astronaut(), dtype=np.float32) / 255.0


def fit_curve(image: np.ndarray, preset: str, device: torch.device,
              checkpoints: list[float], warmup_steps: int,
              mlp_precision: str | None = None) -> dict[str, Any]:
    """Train `preset` (its MLPs in `mlp_precision`, default the preset's) until each
    checkpoint of training time; PSNR at each (not timed)."""
    cfg = IMAGE_PRESETS[preset]
    if mlp_precision is not None:
        cfg = cfgmod.replace(cfg, mlp_precision=mlp_precision)
    if warmup_steps > 0:  # a separate fitter: the measured one starts from step 0
        ImageTask((image, IMAGE_PATH), cfg, device).train(steps=warmup_steps)
    fitter = ImageTask((image, IMAGE_PATH), cfg, device)
    curve = []
    wall0 = time.perf_counter()
    for target in checkpoints:
        while fitter.seconds < target:
            fitter.step()
        curve.append({"seconds": round(fitter.seconds, 4), "steps": fitter.steps_done,
                      "psnr": round(fitter.psnr(), 4)})
        print(f"  {preset:<10} t={fitter.seconds:7.2f}s steps={fitter.steps_done:6d} "
              f"psnr={curve[-1]['psnr']:.2f} dB", flush=True)
    return {"preset": preset, "config": cfgmod.to_dict(cfg), "backend": fitter.backend,
            "mlp_precision": fitter.mlp_precision,
            "n_params": fitter.n_params, "curve": curve,
            "warmup_steps": warmup_steps,
            "wall_seconds_incl_eval": round(time.perf_counter() - wall0, 3)}


def run(preset: str, baseline: bool, device: torch.device, checkpoints: list[float],
        warmup_steps: int = 10, mlp_precision: str | None = None) -> dict[str, Any]:
    image = load_astronaut()
    presets = [preset] + ([BASELINE] if baseline and preset != BASELINE else [])
    runs = [fit_curve(image, name, device, checkpoints, warmup_steps, mlp_precision)
            for name in presets]
    h, w, c = image.shape
    return {"machine": machine_info(device), "image": IMAGE_PATH,
            "image_size": {"height": h, "width": w, "channels": c}, "presets": presets,
            "checkpoints_s": checkpoints, "runs": runs}


def print_table(report: dict[str, Any]) -> None:
    size = report["image_size"]
    print(f"\nPSNR (dB) vs training time, {report['image']} {size['width']}x{size['height']}, "
          f"device {report['machine']['device']}")
    names = [f"{r['preset']} ({r['backend']}, {r['n_params']} params)" for r in report["runs"]]
    print(f"{'target s':>8}  " + "  ".join(f"{n:>34}" for n in names))
    for i, target in enumerate(report["checkpoints_s"]):
        cells = [f"{r['curve'][i]['psnr']:6.2f} dB @ {r['curve'][i]['steps']:6d} steps"
                 for r in report["runs"]]
        print(f"{target:>8g}  " + "  ".join(f"{c:>34}" for c in cells))


def parse_checkpoints(text: str) -> list[float]:
    values = sorted(float(v) for v in text.split(",") if v.strip())
    if not values or values[0] <= 0:
        raise argparse.ArgumentTypeError("checkpoints must be positive seconds, e.g. 1,2,5")
    return values


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="seed", choices=sorted(IMAGE_PRESETS))
    ap.add_argument("--checkpoints", type=parse_checkpoints, default=[1, 2, 5, 10, 20, 30],
                    help="comma-separated seconds of training time")
    ap.add_argument("--no-baseline", action="store_true", help=f"skip the {BASELINE!r} preset")
    ap.add_argument("--warmup-steps", type=int, default=10,
                    help="steps of a throwaway fitter before each measured run")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    ap.add_argument("--mlp-precision", choices=MLP_PRECISIONS, default=None,
                    help="the MLPs' precision (default: the presets')")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/image.json"))
    args = ap.parse_args(argv)
    try:
        device = pick_device(args.device)
    except UserError as e:
        ap.error(str(e))
    report = run(args.preset, not args.no_baseline, device,
                 [float(c) for c in args.checkpoints], args.warmup_steps, args.mlp_precision)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
