"""Engine service latency: spawn -> `ready`, and a 128x128 preview requested mid-training.

Spawn: `EngineClient().start()` from Popen to the `ready` event, repeated (one untimed start
first, so the operating system's file cache is warm), median and max. Preview: a NeRF
(cpu-fast) trains on the 160x160 scene of `scripts/make_scene.py`; once past each of
`--at-steps`, previews of the first test camera at 128x128 (rgb pass, or --passes) are
requested one after another while training continues; latency = request sent -> last pass artifact received
(this includes waiting for the running training step to end). Writes benchmarks/service.json.

    .venv/bin/python scripts/bench_service.py [--spawns 5] [--previews 10] [--passes rgb]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ngp_engine.service.client import EngineClient  # noqa: E402
from ngp_engine.service.protocol import Camera, Preview, Stop, Train  # noqa: E402


def spawn_times(n: int) -> list[float]:
    warm = EngineClient()     # untimed: warms the file cache
    warm.start()
    warm.close()
    times = []
    for _ in range(n):
        client = EngineClient()
        t0 = time.perf_counter()
        client.start()
        times.append(time.perf_counter() - t0)
        client.close()
    return times


def preview_times(scene: Path, n: int, passes: list[str], at_steps: list[int]) -> list[dict]:
    """n previews (one after another) once training passes each step count in `at_steps`."""
    meta = json.loads((scene / "transforms_test.json").read_text())
    w = h = 160
    cam = Camera(transform_matrix=meta["frames"][0]["transform_matrix"], w=w, h=h,
                 fl_x=0.5 * w / math.tan(0.5 * meta["camera_angle_x"]))
    results = []
    with tempfile.TemporaryDirectory() as tmp, EngineClient() as client:
        client.start()
        client.send(Train(mode="nerf", data=str(scene), run_dir=str(Path(tmp) / "run"), id="t"))
        for at in at_steps:
            client.wait_for(lambda e: e.type == "progress" and e.step >= at, timeout=900)
            latencies, renders, steps = [], [], []
            for i in range(n):
                rid = f"p{at}_{i}"
                t0 = time.perf_counter()
                client.send(Preview(camera=cam, passes=passes, resolution=[128, 128], id=rid))
                arts = [client.wait_for(lambda e: e.type in ("artifact", "error") and e.request == rid,
                                        timeout=60) for _ in passes]
                latencies.append(time.perf_counter() - t0)
                if arts[0].type == "error":
                    raise SystemExit(f"preview failed: {arts[0].message}")
                renders.append(arts[0].info["render_seconds"])
                steps.append(arts[0].info["step"])
            results.append({"after_step": at, "steps": steps, "runs": [round(t, 3) for t in latencies],
                            "median": statistics.median(latencies), "max": max(latencies),
                            "render_seconds_median": statistics.median(renders)})
        client.send(Stop())
        client.wait_for("done", timeout=120)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spawns", type=int, default=5)
    ap.add_argument("--previews", type=int, default=10)
    ap.add_argument("--passes", default="rgb", help="comma-separated passes per preview")
    ap.add_argument("--at-steps", default="50,300",
                    help="preview once training passes these step counts (cpu-fast: the occupancy "
                         "grid's warm-up ends at 256; ~300 steps is one minute here)")
    ap.add_argument("--scene", default=str(ROOT / "out" / "scene160"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "service.json"))
    args = ap.parse_args(argv)
    scene = Path(args.scene)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_scene.py"), "--out", str(scene),
                    "--size", "160", "--n-train", "100", "--n-test", "20"], check=True)
    spawns = spawn_times(args.spawns)
    passes = [p.strip() for p in args.passes.split(",") if p.strip()]
    previews = preview_times(scene, args.previews, passes, [int(v) for v in args.at_steps.split(",")])
    import torch  # noqa: PLC0415 - for the machine record only

    from ngp_engine.device import machine_info, pick_device  # noqa: PLC0415

    result = {
        "benchmark": "service",
        "command": "scripts/bench_service.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "spawn_to_ready_seconds": {"runs": [round(t, 3) for t in spawns], "median": statistics.median(spawns),
                                   "max": max(spawns)},
        "preview_128": {"passes": passes, "scene": str(scene), "camera": "test frame 0",
                        "points": previews},
        "machine": machine_info(pick_device("auto")),
        "torch_threads": torch.get_num_threads(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"spawn_median_s": round(result["spawn_to_ready_seconds"]["median"], 3),
                      **{f"preview_median_s_after_{p['after_step']}": round(p["median"], 3) for p in previews}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
