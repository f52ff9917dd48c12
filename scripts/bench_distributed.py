"""Data-parallel NeRF training with gloo on this machine's CPU: what summing the gradients
costs per step, dense all-reduce against touched rows, and the step against one process.

    .venv/bin/python scripts/bench_distributed.py [--data out/scene160]
        [--presets cpu-fast,instant-ngp] [--warmup 12] [--blocks 4] [--block-steps 4]
        [--out benchmarks/distributed.json]

For each preset:
1. One process (all cores) trains `--warmup` steps, then `--blocks` x `--block-steps` timed
   steps: its milliseconds per step.
2. Two processes (gloo on loopback, each with half the cores, as `torchrun --nproc-per-node
   2` or `train` with `processes` 2 run them) train the same way; the timed steps alternate
   blocks of "dense" and "rows" table sums (both ranks switch together; alternating cancels
   the machine's speed drifts). Per step: wall ms, the ms spent in the gradient sum
   (`Ranks.reduce_gradients`, rank 0), the share of table entries one rank's gradient
   touches, and the bytes each rank sends for the table (dense: 4 per entry; rows: 8 per
   touched entry, padded to the largest rank's count).
Medians over the timed steps. Renders out/scene160 with scripts/make_scene.py when it is
missing (Blender as a module).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ngp_engine.config import NERF_PRESETS  # noqa: E402
from ngp_engine.data.transforms import load_nerf_dataset  # noqa: E402
from ngp_engine.device import machine_info  # noqa: E402
from ngp_engine.distributed import Ranks  # noqa: E402
from ngp_engine.tasks.nerf.task import NerfTask  # noqa: E402


class TimedRanks(Ranks):
    """Ranks that time each gradient sum and count the table entries it carries."""

    log: list[dict[str, float]]

    def reduce_gradients(self, groups, figures, count=0):  # type: ignore[override]
        groups = list(groups)
        table = [p for g in groups if g.get("kind") == "encoding" for p in g["params"]]
        touched = sum(int(torch.count_nonzero(p.grad)) for p in table if p.grad is not None)
        size = sum(p.numel() for p in table)
        t0 = time.perf_counter()
        out = super().reduce_gradients(groups, figures, count)
        self.log.append({"sync_ms": 1e3 * (time.perf_counter() - t0), "touched": touched / size,
                         "entries": size, "touched_entries": touched})
        return out


def timed_steps(task: NerfTask, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        task.step()
        times.append(1e3 * (time.perf_counter() - t0))
    return times


def one_process(data: Path, preset: str, args: argparse.Namespace) -> dict[str, Any]:
    cfg = NERF_PRESETS[preset]
    task = NerfTask(load_nerf_dataset(data, "train"), cfg, torch.device("cpu"))
    timed_steps(task, args.warmup)
    ms = timed_steps(task, args.blocks * args.block_steps)
    return {"threads": torch.get_num_threads(), "step_ms": statistics.median(ms)}


def rank_main(rank: int, port: int, data: str, preset: str, args: argparse.Namespace, out: str) -> None:
    import torch.distributed as dist

    threads = max(1, (os.cpu_count() or 1) // 2)
    torch.set_num_threads(threads)
    store = dist.TCPStore("127.0.0.1", port, world_size=2, is_master=rank == 0)
    base = Ranks.join(rank, 2, torch.device("cpu"), store=store)
    ranks = TimedRanks(rank=rank, world=2, device=base.device, group=base.group, _owns_group=True)
    base.group, base._owns_group = None, False     # `ranks` owns the group: its close frees it
    ranks.log = []
    task = NerfTask(load_nerf_dataset(data, "train"), NERF_PRESETS[preset], torch.device("cpu"))
    task.ranks = ranks
    ranks.align(p for g in task.optimizer.param_groups for p in g["params"])
    timed_steps(task, args.warmup)
    rows: dict[str, list[dict[str, float]]] = {"dense": [], "rows": []}
    for block in range(2 * args.blocks):
        sync = ("dense", "rows")[block % 2]
        ranks.gradient_sync = sync
        ranks.log = []
        ms = timed_steps(task, args.block_steps)
        for step_ms, entry in zip(ms, ranks.log):
            rows[sync].append({**entry, "step_ms": step_ms})
    # Every rank's touched counts, to size what the rows sum sends (padded to the largest).
    mine = torch.tensor([e["touched_entries"] for s in ("dense", "rows") for e in rows[s]], dtype=torch.float64)
    theirs = [torch.zeros_like(mine) for _ in range(2)]
    dist.all_gather(theirs, mine)
    ranks.close()
    if rank != 0:
        return
    widest = torch.stack(theirs).max(0).values.tolist()
    k = 0
    result: dict[str, Any] = {"threads_per_process": threads}
    for sync in ("dense", "rows"):
        entries = rows[sync]
        for e in entries:
            e["sent_mb"] = (4 * e["entries"] if sync == "dense" else 8 * widest[k]) / 1e6
            k += 1
        result[sync] = {key: statistics.median(e[key] for e in entries)
                        for key in ("step_ms", "sync_ms", "touched", "sent_mb")}
        result[sync]["table_entries"] = int(entries[0]["entries"])
    Path(out).write_text(json.dumps(result))


def two_processes(data: Path, preset: str, args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "rank0.json")
        mp.spawn(rank_main, args=(port, str(data), preset, args, out), nprocs=2, join=True)
        return json.loads(Path(out).read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "out" / "scene160"))
    ap.add_argument("--presets", default="cpu-fast,instant-ngp")
    ap.add_argument("--warmup", type=int, default=12)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--block-steps", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "distributed.json"))
    args = ap.parse_args()
    data = Path(args.data)
    if not (data / "scene.json").exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_scene.py"), "--out", str(data)], check=True)
    result: dict[str, Any] = {"machine": machine_info(torch.device("cpu")), "data": str(data),
                              "command": " ".join(["scripts/bench_distributed.py", *sys.argv[1:]]),
                              "presets": {}}
    for preset in args.presets.split(","):
        print(f"[bench] {preset}: one process", flush=True)
        one = one_process(data, preset, args)
        print(f"[bench] {preset}: two processes", flush=True)
        two = two_processes(data, preset, args)
        result["presets"][preset] = {"one_process": one, "two_processes": two}
        print(json.dumps(result["presets"][preset]), flush=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"[bench] wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
