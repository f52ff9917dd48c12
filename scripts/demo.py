"""The main job: render a scene with Blender, train a NeRF on it, and get back test metrics,
rendered passes and a coloured mesh.

1. `scripts/make_scene.py` renders the default scene with real Blender (bpy, Cycles on the CPU):
   100 training and 20 test views at 160x160 into out/scene160 (about 2 minutes, once; later
   runs reuse it).
2. `python -m ngp_engine nerf train` trains the cpu-fast preset for --seconds (default 120),
   evaluates the test split and extracts the mesh: out/demo/checkpoint.pt, metrics.json
   (key psnr), renders/, mesh.ply, mesh.obj.
3. `python -m ngp_engine nerf render` writes the RGB, depth, opacity and normal passes of the
   first test camera to out/demo/passes/.

    .venv/bin/python scripts/demo.py [--seconds 120] [--out out/demo]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="NeRF training time budget")
    parser.add_argument("--scene", default=str(ROOT / "out" / "scene160"), help="dataset folder")
    parser.add_argument("--out", default=str(ROOT / "out" / "demo"), help="output folder")
    args = parser.parse_args(argv)

    from ngp_engine.cli import main as cli_main

    # Blender in its own process: bpy stays out of the engine's process.
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_scene.py"), "--out", args.scene])
    if done.returncode:
        return done.returncode
    out = Path(args.out)
    rc = cli_main(["nerf", "train", args.scene, "--out", str(out), "--seconds", str(args.seconds),
                   "--mesh"])
    if rc:
        return rc
    return cli_main(["nerf", "render", str(out / "checkpoint.pt"), "--out", str(out / "passes"),
                     "--frames", "0"])


if __name__ == "__main__":
    sys.exit(main())
