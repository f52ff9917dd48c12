"""The main job (until NeRF lands): fit scikit-image's astronaut photograph.

Writes out/demo/: astronaut.png (the input), reconstruction.png, comparison.png
(input | reconstruction), metrics.json and checkpoint.pt. Run from the repo root:

    .venv/bin/python scripts/demo.py [--seconds 30] [--out out/demo]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="training time budget")
    parser.add_argument("--preset", default="seed", help="image preset (default: seed)")
    parser.add_argument("--out", default=str(ROOT / "out" / "demo"), help="output folder")
    args = parser.parse_args(argv)

    from skimage import data

    from ngp_engine.cli import main as cli_main
    from ngp_engine.data.image import save_png

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    photo = out / "astronaut.png"
    save_png(photo, data.astronaut() / 255.0)              # 512x512 RGB, ships with scikit-image
    return cli_main(["image", str(photo), "--preset", args.preset, "--seconds", str(args.seconds),
                     "--out", str(out)])


if __name__ == "__main__":
    sys.exit(main())
