"""What the `image`, `nerf` and `sdf` commands share: the common options (declared here
only), the training command (one Session, as the service uses) and its progress bar.

Standard library and the engine's stdlib-only modules at import time (so `--help` stays
fast); torch, the tasks and tqdm are imported when a command runs.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..config import BACKEND_NAMES, MLP_PRECISIONS
from ..errors import UserError

if TYPE_CHECKING:
    from ..service.session import Session
    from ..tasks.base import Progress

BACKENDS = list(BACKEND_NAMES)
DEVICES = ["auto", "cpu", "cuda", "mps"]
REDRAW_SECONDS = 0.2        # how often the training bar reads the step's figures


def add_common_options(p: argparse.ArgumentParser, presets: dict[str, Any] | None = None,
                       default_preset: str = "", default_steps: int = 0,
                       preset_help: str = "") -> None:
    """--backend, --device and --quiet, as every engine command takes them; with `presets`
    (a training command) also --preset, --config, --steps/--seconds, --resume and --seed.
    `default_preset` and `default_steps` only word the help: the task class holds the
    defaults (read without importing torch, so that --help stays fast)."""
    if presets is not None:
        p.add_argument("--preset", choices=sorted(presets),
                       help=f"named configuration (default {default_preset}{preset_help})")
        p.add_argument("--config", metavar="JSON",
                       help="JSON file with a full configuration, instead of --preset")
        budget = p.add_mutually_exclusive_group()
        budget.add_argument("--steps", type=int, help=f"training steps (default {default_steps})")
        budget.add_argument("--seconds", type=float, help="training time budget in seconds")
        p.add_argument("--resume", metavar="CHECKPOINT",
                       help="continue from a checkpoint.pt (same configuration); trains "
                            "--steps/--seconds more")
        p.add_argument("--seed", type=int, help="override the configuration's random seed")
        p.add_argument("--mlp-precision", choices=MLP_PRECISIONS,
                       help="the MLPs' matrix products in float32, bfloat16 (faster on CPUs "
                            "with AMX / AVX-512 BF16 and on GPUs with bfloat16 tensor cores) "
                            "or auto (bfloat16 on such CPUs, float32 elsewhere); default: the "
                            "configuration's (auto for a NeRF or SDF, float32 for an image)")
        p.add_argument("--gradient-sync", choices=["dense", "rows"], default="dense",
                       help="under torchrun (data-parallel training): sum hash-table gradients "
                            "over the processes as one dense all-reduce (default) or as the "
                            "touched entries only")
    p.add_argument("--backend", choices=BACKENDS,
                   help="hash-grid implementation (default: the configuration's, normally auto)")
    p.add_argument("--device", default="auto", choices=DEVICES,
                   help="torch device (default: CUDA, then MPS, then CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no log lines")


def open_training(args: argparse.Namespace, mode: str, data: str | None,
                  **overrides: Any) -> "Session":
    """The Session of a `<mode> train` command (checks every input before --out exists).
    Under torchrun every process opens it as one rank of a data-parallel run; only rank 0
    logs and writes."""
    import logging  # noqa: PLC0415

    from ..device import pick_device  # noqa: PLC0415
    from ..distributed import Ranks  # noqa: PLC0415
    from ..service.session import RunSpec, Session, cli_label  # noqa: PLC0415

    ranks = Ranks.from_env(pick_device(args.device), gradient_sync=args.gradient_sync)
    if not ranks.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    return Session.open(RunSpec(
        mode=mode, run_dir=Path(args.out), data=data, config_file=args.config, preset=args.preset,
        overrides={"backend": args.backend, "seed": args.seed,
                   "mlp_precision": args.mlp_precision, **overrides}, resume=args.resume,
        steps=args.steps, seconds=args.seconds, device=ranks.device, label=cli_label, ranks=ranks))


def train_with_progress(session: "Session", args: argparse.Namespace,
                        postfix: Callable[["Progress"], dict[str, Any]]) -> bool:
    """Train for --seconds or --steps (default: the task's `default_steps`) more, with a
    progress bar (unless --quiet) whose postfix comes from `postfix(progress)`. Returns
    whether this process writes the run's outputs: False on the ranks other than 0 of a
    data-parallel run, which only follow rank 0's steps."""
    from .progress import ProgressBar  # noqa: PLC0415
    from ..tasks.base import Budget, follow_training  # noqa: PLC0415

    if not session.ranks.is_main:
        follow_training(session.task)
        session.end()
        return False
    by_time = args.seconds is not None
    if not by_time and args.steps is None:
        session.budget = Budget.starting_at(session.task, session.task.default_steps, None)
    total = args.seconds if by_time else session.budget.steps
    with ProgressBar(total=total, unit="s" if by_time else "step", disable=args.quiet) as bar:
        s0, t0 = session.steps_done, session.seconds
        last_shown = -REDRAW_SECONDS

        def on_step(p: "Progress") -> None:
            # The figures are read from the device only when the bar redraws (about 5 times a
            # second and at the end), not every step.
            nonlocal last_shown
            now = time.monotonic()
            done = p.seconds - t0 if by_time else p.step - s0
            if now - last_shown >= REDRAW_SECONDS or done >= total:
                last_shown = now
                bar.update_to(done, **postfix(p.resolved()))

        session.train(callback=on_step)
    session.end()
    return True


def check_resolution(value: int, option: str, lo: int = 8, hi: int = 2048) -> None:
    if not lo <= value <= hi:
        raise UserError(f"{option}: {value} must be in {lo}..{hi}")


def out_dir(args: argparse.Namespace) -> Path:
    """--out, created and checked writable (after the inputs are known to be good)."""
    from ..files import check_writable_dir  # noqa: PLC0415

    out = Path(args.out)
    check_writable_dir(out, "--out")
    return out
