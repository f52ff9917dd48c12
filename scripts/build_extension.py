"""Build the installable Blender extension zip with Blender's own extension tool.

The extension is the add-on package (`addon/`) with the engine (`ngp_engine/`) bundled inside
it, so the add-on imports the engine's standard-library modules (`protocol`, `client`)
relatively and starts `python -m ngp_engine serve` from its own folder. This script stages
that tree (manifest + addon/* + ngp_engine/, no caches), then runs `blender_ext.py build`
(what `blender --command extension build` runs; it ships inside the `bpy` package) and
`blender_ext.py validate` on the result.

    .venv/bin/python scripts/build_extension.py [--out dist/] [--stage-only DIR]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc", ".pytest_cache")


def blender_ext_tool() -> Path:
    """blender_ext.py inside the installed bpy package (found without importing bpy)."""
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: the bpy package (pip install bpy==5.0.1) is needed to build the extension")
    base = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(base.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not found:
        raise SystemExit(f"error: blender_ext.py not found under {base}")
    return found[-1]


def stage(dest: Path) -> Path:
    """Lay out the extension's source tree in `dest` (created, must not exist)."""
    shutil.copytree(ROOT / "addon", dest, ignore=IGNORE)
    shutil.copytree(ROOT / "ngp_engine", dest / "ngp_engine", ignore=IGNORE)
    shutil.copyfile(ROOT / "blender_manifest.toml", dest / "blender_manifest.toml")
    return dest


def build(out_dir: Path) -> Path:
    """Stage, build and validate; returns the zip's path."""
    tool = blender_ext_tool()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        src = stage(Path(tmp) / "instant_ngp_fields")
        manifest = (src / "blender_manifest.toml").read_text()
        version = next(line.split("=")[1].strip().strip('"') for line in manifest.splitlines()
                       if line.startswith("version"))
        zip_path = out_dir / f"instant_ngp_fields-{version}.zip"
        zip_path.unlink(missing_ok=True)
        for cmd in (["build", "--source-dir", str(src), "--output-filepath", str(zip_path)],
                    ["validate", str(zip_path)]):
            proc = subprocess.run([sys.executable, str(tool), *cmd], capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"error: blender_ext {cmd[0]} failed:\n{proc.stdout}{proc.stderr}")
    return zip_path


def install_in_blender(zip_path: Path, repo_dir: Path, repo_name: str = "ngp_local") -> str:
    """Install the zip into a user repository at `repo_dir` of the running Blender (bpy) the
    way a user does (Install from Disk), enabled; returns the add-on's module name."""
    import bpy  # noqa: PLC0415 - only inside Blender

    repos = bpy.context.preferences.extensions.repos
    if repos.get(repo_name) is None:
        repos.new(name=repo_name, module=repo_name, custom_directory=str(repo_dir), source="USER")
    result = bpy.ops.extensions.package_install_files(filepath=str(zip_path), repo=repo_name,
                                                       enable_on_install=True)
    if result != {"FINISHED"}:
        raise SystemExit(f"error: installing {zip_path} failed ({result})")
    return f"bl_ext.{repo_name}.instant_ngp_fields"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "dist"), help="folder for the zip (default dist/)")
    ap.add_argument("--stage-only", metavar="DIR", help="only lay out the source tree in DIR")
    args = ap.parse_args(argv)
    if args.stage_only:
        print(stage(Path(args.stage_only)))
        return 0
    print(build(Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
