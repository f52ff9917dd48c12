"""What an interpreter has for the engine: run as a script by any Python (standard library
only, nothing of the engine imported), it prints one JSON object:

    {"python": sys.executable, "version": "3.11.7", "ok": bool,
     "packages": {pip name: version or null}, "missing": [requirement lines],
     "torch": version or null, "cuda": bool, "cuda_name": str, "mps": bool,
     "triton": version or null, "fix": one command line that installs what is missing, or ""}

    python path/to/ngp_engine/probe.py

The add-on's Detect runs it with each candidate interpreter; `requirements.txt` beside it is
the list it checks against (the one list pyproject.toml and Install Engine use too).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

REQUIREMENTS = Path(__file__).resolve().with_name("requirements.txt")
# The module each requirement is imported as, where it differs from the pip name.
IMPORT_NAMES = {"pillow": "PIL", "scikit-image": "skimage", "pymcubes": "mcubes", "libigl": "igl",
                "openexr": "OpenEXR"}
MIN_PYTHON = (3, 10)


def command_line(args: list[str]) -> str:
    """`args` as one line to paste into this platform's shell."""
    return subprocess.list2cmdline(args) if os.name == "nt" else shlex.join(args)


def requirements(path: Path = REQUIREMENTS) -> list[str]:
    """The requirement lines of `path` (comments and blank lines dropped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def requirement_name(line: str) -> str:
    """The distribution name of a requirement line ("torch>=2.1" -> "torch")."""
    return re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].strip()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _satisfies(line: str, version: str) -> bool:
    """Whether `version` meets the simple specifiers the requirements file uses (==, >=)."""
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", v.split("+")[0])[:3])
    for op, want in re.findall(r"(==|>=)\s*([\w.]+)", line):
        if op == "==" and key(version) != key(want):
            return False
        if op == ">=" and key(version) < key(want):
            return False
    return True


def missing_names(report: dict) -> list[str]:
    """The requirement lines a report lacks, without the reason a broken one carries
    ("torch>=2.1 (import failed: ...)" -> "torch>=2.1")."""
    return [m.split(" (", 1)[0] for m in report.get("missing", [])]


def probe() -> dict:
    report: dict = {"python": sys.executable, "version": ".".join(map(str, sys.version_info[:3])),
                    "packages": {}, "missing": [], "torch": None, "cuda": False, "cuda_name": "",
                    "mps": False, "triton": _version("triton")}
    for line in requirements():
        name = requirement_name(line)
        module = IMPORT_NAMES.get(name.lower(), name.lower())
        version = _version(name) if importlib.util.find_spec(module) is not None else None
        report["packages"][name] = version
        if version is None or not _satisfies(line, version):
            report["missing"].append(line)
    if report["packages"].get("torch"):
        try:
            import torch  # noqa: PLC0415 - only to ask it what devices it sees
            report["torch"] = torch.__version__
            report["cuda"] = bool(torch.cuda.is_available())
            report["cuda_name"] = torch.cuda.get_device_name(0) if report["cuda"] else ""
            mps = getattr(torch.backends, "mps", None)
            report["mps"] = bool(mps is not None and mps.is_available())
        except Exception as e:  # noqa: BLE001 - a broken torch is a finding, not a crash
            report["missing"].append(f"torch (import failed: {type(e).__name__}: {e})".replace("\n", " "))
    too_old = sys.version_info[:2] < MIN_PYTHON
    report["ok"] = not report["missing"] and not too_old
    if too_old:
        report["fix"] = f"Python {'.'.join(map(str, MIN_PYTHON))} or newer is needed (this is {report['version']})"
    elif report["missing"]:
        report["fix"] = command_line([sys.executable, "-m", "pip", "install", *missing_names(report)])
    else:
        report["fix"] = ""
    return report


if __name__ == "__main__":
    print(json.dumps(probe()))
