"""What the `image`, `nerf` and `sdf` commands share: configs from --preset/--config and
overrides, budget checks, resume rules and the training loop with its progress bar.

Standard library and the engine's stdlib-only modules at import time (so `--help` stays
fast); the progress bar (tqdm) is imported when training starts.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from . import config as cfgmod
from .config import ConfigError
from .errors import UserError


def add_common_options(p: argparse.ArgumentParser) -> None:
    """--backend, --device and --quiet, as every engine command takes them."""
    p.add_argument("--backend", choices=["auto", "torch", "cpu", "tcnn"],
                   help="hash-grid implementation (default: the configuration's, normally auto)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="torch device (default: CUDA, then MPS, then CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no log lines")


def read_config_file(cls: type, path: str) -> Any:
    """A config of type `cls` from a JSON file; problems are one-line UserErrors naming it."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{file}: no such config file")
    try:
        return cfgmod.from_json(cls, file.read_text())
    except ConfigError as e:
        raise UserError(f"{file}: {e}") from None


def config_from_args(args: argparse.Namespace, cls: type, presets: dict[str, Any], default: str,
                     **overrides: Any) -> Any:
    """--config file or --preset (default `default`), then --backend, --seed and any
    `overrides` that are not None."""
    cfg = read_config_file(cls, args.config) if args.config else presets[args.preset or default]
    changes = {"backend": args.backend or None, "seed": args.seed, **overrides}
    changes = {k: v for k, v in changes.items() if v is not None}
    return cfgmod.replace(cfg, **changes) if changes else cfg


def check_budget(args: argparse.Namespace) -> None:
    """--steps and --seconds must not be negative."""
    if args.steps is not None and args.steps < 0:
        raise UserError(f"--steps: {args.steps} must be >= 0")
    if args.seconds is not None and args.seconds < 0:
        raise UserError(f"--seconds: {args.seconds} must be >= 0")


def refuse_config_on_resume(args: argparse.Namespace, *extra: str) -> None:
    """A resumed run keeps its checkpoint's configuration: --preset, --config, --seed (and
    the `extra` options, given as attribute names) may not be set with --resume."""
    for name in ("preset", "config", "seed", *extra):
        if getattr(args, name, None) is not None:
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag}: a resumed run keeps its checkpoint's configuration")


def train_with_progress(trainer: Any, args: argparse.Namespace, default_steps: int,
                        postfix: Callable[[Any], dict[str, Any]]) -> None:
    """Train for --seconds or --steps (default `default_steps`) more, with a progress bar
    (unless --quiet) whose postfix comes from `postfix(progress)`."""
    from .progress import ProgressBar  # noqa: PLC0415

    by_time = args.seconds is not None
    steps = args.steps if args.steps is not None else default_steps
    with ProgressBar(total=args.seconds if by_time else steps, unit="s" if by_time else "step",
                     disable=args.quiet) as bar:
        s0, t0 = trainer.steps_done, trainer.seconds

        def on_step(p: Any) -> None:
            bar.update_to(p.seconds - t0 if by_time else p.step - s0, **postfix(p))

        trainer.train(steps=None if by_time else steps, seconds=args.seconds, callback=on_step)
