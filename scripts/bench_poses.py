"""Structure from motion on a rendered 40-view capture, against the true cameras.

Renders (or reuses from `--cache`) `scripts/make_capture.py`'s default capture: 40 views of
384x384 pixels around a photo-textured still life, Cycles in a subprocess (not timed).
Then `find_poses` on the photo folder with the default options (exhaustive matching,
SIMPLE_RADIAL, one shared camera) and records: images registered, mean reprojection error,
the camera errors after a similarity alignment on the camera centres (median / max
rotation error in degrees, median / max position error relative to the 2 m scene), the
tilt of that alignment away from a turn about +Z (how wrong "up" is), stage and total wall
times, and the machine.

Run from the repo root (about 3 minutes plus the render on 2 cores):
    .venv/bin/python scripts/bench_poses.py [--views 40] [--cache out/bench_poses]
        [--out benchmarks/poses.json]
Targets: all 40 registered, median rotation error < 1 degree, under 5 minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ngp_engine.poses import PosesSpec, find_poses  # noqa: E402
from ngp_engine.poses.evaluate import compare_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--views", type=int, default=40)
    ap.add_argument("--cache", default="out/bench_poses", help="capture and dataset folder")
    ap.add_argument("--out", default="benchmarks/poses.json")
    a = ap.parse_args(argv)
    cache = (ROOT / a.cache).resolve()
    capture = cache / f"capture{a.views}"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_capture.py"), "--out", str(capture),
                    "--n-views", str(a.views)], check=True, cwd=ROOT)
    render_s = time.perf_counter() - t0

    stages: dict[str, float] = {}
    t0 = time.perf_counter()

    def progress(p) -> None:
        stages.setdefault(p.stage, time.perf_counter() - t0)

    result = find_poses(PosesSpec(capture / "photos", cache / "dataset", overwrite=True), progress)
    wall = time.perf_counter() - t0
    errors = compare_dataset(result.dataset, capture / "truth.json")
    truth = json.loads((capture / "truth.json").read_text())
    doc = {
        "command": "python scripts/bench_poses.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "capture": {**truth["params"], "render_seconds_uncounted": round(render_s, 1)},
        "options": "defaults: exhaustive matching, SIMPLE_RADIAL, one shared camera, sfm long side 1600",
        "n_images": result.n_images, "n_registered": result.n_registered,
        "mean_reprojection_error_px": round(result.reprojection_error, 3),
        "n_points": result.n_points,
        **{k: round(v, 4) for k, v in errors.items()},
        "wall_seconds": round(wall, 1),
        "stage_seconds": {k: round(v, 1) for k, v in result.timings.items()},
        "targets": {"all_registered": result.n_registered == result.n_images,
                    "median_rotation_under_1_deg": errors["rotation_error_deg_median"] < 1.0,
                    "under_5_minutes": wall < 300},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
    }
    out = ROOT / a.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
