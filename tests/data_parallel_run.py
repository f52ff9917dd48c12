"""Helper of tests/test_distributed.py: train one run through the Session, as one process
or as one rank under torchrun, and have rank 0 write the loss of every step
(`losses.json`) beside the run's checkpoint.

    python tests/data_parallel_run.py MODE DATA OUT STEPS [GRADIENT_SYNC]
    torchrun --nproc-per-node 2 tests/data_parallel_run.py MODE DATA OUT STEPS [GRADIENT_SYNC]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from ngp_engine.distributed import Ranks
from ngp_engine.service.session import RunSpec, Session, cli_label
from ngp_engine.tasks.base import follow_training


def main(mode: str, data: str, out: str, steps: int, gradient_sync: str = "dense") -> int:
    ranks = Ranks.from_env(torch.device("cpu"), gradient_sync=gradient_sync)
    # float32 MLPs: the comparison is of the ranks' gradient sum up to summation order. In
    # bfloat16 (a NeRF's auto on a CPU with bfloat16 units) each rank's weight gradients are
    # rounded to bfloat16 before the sum, and Adam's tiny eps turns those roundings into
    # differences of whole steps (1.8% of the table entries off by > 1e-3 after 12 steps).
    session = Session.open(RunSpec(mode=mode, run_dir=Path(out), data=data, steps=steps,
                                   device=ranks.device, label=cli_label, ranks=ranks,
                                   overrides={"mlp_precision": "float32"}))
    if not ranks.is_main:
        follow_training(session.task)
        session.end()
        return 0
    losses: list[float] = []
    session.train(callback=lambda p: losses.append(p.resolved().loss))
    session.end()
    session.save_checkpoint()
    (Path(out) / "losses.json").write_text(json.dumps(losses))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4], int(sys.argv[4]), *sys.argv[5:]))
