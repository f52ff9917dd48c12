"""Install Engine: a virtual environment with PyTorch and what the engine needs, made by its
own process so that Blender never waits on pip and never has its own site-packages touched.

As a script (standard library only; Blender's Python runs it):

    python engine_setup.py --venv DIR --requirements ngp_engine/requirements.txt
                           [--torch-build cpu|cuda|default] [--torch-index URL]

It prints pip's output and, between, one line per stage for whoever reads the log:

    NGP-PROGRESS <fraction 0..1> <what is happening>
    NGP-DONE <the environment's python>        (last line, on success)
    NGP-ERROR <one sentence>                   (last line, on failure)

The environment counts as installed only once `DIR/ngp_engine_env.json` is written (after
the interpreter probe says it has everything), so a cancelled or failed run is repaired by
running again, which is also how an installed one is upgraded.

In the add-on, `InstallJob` starts the script with its output going to a log file and
`poll()` reads the progress lines back (a timer on Blender's main thread, microseconds).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

TORCH_VERSION = "2.13.0"            # the tested build (scripts/setup.sh pins the same)
TORCH_INDEXES = {                  # where each build comes from ("" = the package index pip uses)
    "cpu": "https://download.pytorch.org/whl/cpu",
    "cuda": "https://download.pytorch.org/whl/cu128",
    "default": "",
}
# Rough download sizes, told to the user before anything is fetched.
DOWNLOAD_MB = {"cpu": 900, "cuda": 3500, "default": 900}
MARKER = "ngp_engine_env.json"


@functools.lru_cache(maxsize=1)
def detect_torch_build() -> tuple[str, str]:
    """(build, why): CUDA when an NVIDIA driver answers, the default wheels on macOS (they
    carry MPS), the CPU build otherwise. Asked once per session (the preferences draw it)."""
    if sys.platform == "darwin":
        return "default", "macOS: the default PyTorch wheels (Apple GPU through MPS)"
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10,
                                 creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
            name = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
        except (OSError, subprocess.SubprocessError):
            name = ""
        if name:
            return "cuda", f"NVIDIA driver found ({name}): the CUDA build"
    return "cpu", "no NVIDIA driver found: the CPU build"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def installed_python(venv: Path) -> str:
    """The environment's python if an install finished there, else ""."""
    try:
        info = json.loads((venv / MARKER).read_text())
    except (OSError, ValueError):
        return ""
    python = info.get("python", "")
    return python if python and Path(python).is_file() else ""


# ------------------------------------------------------------------------------ the script
def _say(kind: str, text: str) -> None:
    print(f"NGP-{kind} {text}", flush=True)


def _run(args: list[str]) -> None:
    print("$ " + " ".join(args), flush=True)
    proc = subprocess.run(args, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} {' '.join(args[1:4])} ... failed (exit {proc.returncode})")


def _has_pip(python: Path) -> bool:
    if not python.is_file():
        return False
    try:
        return subprocess.run([str(python), "-m", "pip", "--version"], capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def install(venv: Path, requirements: Path, build: str, index: str | None) -> str:
    """Make or repair the environment; returns its python."""
    if not requirements.is_file():
        raise RuntimeError(f"requirements file {requirements} not found")
    python = venv_python(venv)
    (venv / MARKER).unlink(missing_ok=True)            # installed again only when this run ends well
    _say("PROGRESS", f"0.02 creating the virtual environment in {venv}")
    if not _has_pip(python):
        # From Blender's own Python: the environment has its own site-packages. --clear: an
        # environment left without pip (a cancelled earlier run) is made again.
        _run([sys.executable, "-m", "venv", "--clear", str(venv)])
    index = TORCH_INDEXES[build] if index is None else index
    where = f" from {index}" if index else ""
    _say("PROGRESS", f"0.10 installing PyTorch {TORCH_VERSION} ({build} build){where}")
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    _run(pip + [f"torch=={TORCH_VERSION}"] + (["--index-url", index] if index else []))
    _say("PROGRESS", "0.60 installing the engine's packages")
    _run(pip + ["-r", str(requirements)])
    _say("PROGRESS", "0.95 checking the environment")
    probe = requirements.with_name("probe.py")
    out = subprocess.run([str(python), str(probe)], capture_output=True, text=True, timeout=300)
    try:
        report = json.loads(out.stdout)
    except ValueError:
        raise RuntimeError(f"the new environment's python does not run ({out.stderr.strip()[-200:]})") from None
    if not report.get("ok"):
        raise RuntimeError("the new environment still lacks " + ", ".join(report.get("missing", [])))
    info = {"python": str(python), "torch": report["torch"], "build": build, "index": index,
            "cuda": report["cuda"], "mps": report["mps"], "installed": time.strftime("%Y-%m-%d %H:%M:%S")}
    (venv / MARKER).write_text(json.dumps(info, indent=1))
    return str(python)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Install the engine's Python environment")
    ap.add_argument("--venv", required=True)
    ap.add_argument("--requirements", required=True)
    ap.add_argument("--torch-build", choices=sorted(TORCH_INDEXES), default=None,
                    help="default: detected (CUDA with an NVIDIA driver, default wheels on macOS, else CPU)")
    ap.add_argument("--torch-index", default=None, help="package index for torch (overrides the build's)")
    args = ap.parse_args(argv)
    build = args.torch_build or detect_torch_build()[0]
    try:
        python = install(Path(args.venv), Path(args.requirements), build, args.torch_index)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        _say("ERROR", str(e).replace("\n", " "))
        return 1
    _say("DONE", python)
    return 0


# ------------------------------------------------------------------------------ in the add-on
@dataclass
class InstallJob:
    """The installer running in its own process group, its output in `log`."""

    venv: Path
    log: Path
    proc: subprocess.Popen
    started: float = field(default_factory=time.monotonic)
    fraction: float = 0.0
    stage: str = "starting"
    result: str = ""                  # the python, once done
    error: str = ""
    _offset: int = 0

    @classmethod
    def start(cls, venv: Path, requirements: Path, build: str, index: str | None = None,
              python: str | None = None) -> "InstallJob":
        venv.parent.mkdir(parents=True, exist_ok=True)
        log = venv.parent / "install.log"
        args = [python or sys.executable, str(Path(__file__).resolve()), "--venv", str(venv),
                "--requirements", str(requirements), "--torch-build", build]
        if index is not None:
            args += ["--torch-index", index]
        with open(log, "wb") as out:          # the child holds its own handle
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=os.name != "nt",
                                    creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
                                    | getattr(subprocess, "CREATE_NO_WINDOW", 0))
        return cls(venv=venv, log=log, proc=proc)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def poll(self) -> bool:
        """Read the log's new progress lines; True while the installer runs."""
        alive = self.running                 # before reading: a last line written just before exit is read
        try:
            with open(self.log, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except OSError:
            chunk = b""
        if not alive:                        # the whole remainder: the process has ended
            end = len(chunk)
        else:
            end = chunk.rfind(b"\n") + 1     # whole lines only
        self._offset += end
        for raw in chunk[:end].decode(errors="replace").splitlines():
            kind, _, rest = raw.partition(" ")
            if kind == "NGP-PROGRESS":
                frac, _, text = rest.partition(" ")
                self.fraction, self.stage = float(frac), text
            elif kind == "NGP-DONE":
                self.result, self.fraction, self.stage = rest.strip(), 1.0, "installed"
            elif kind == "NGP-ERROR":
                self.error = rest.strip()
            elif raw.startswith(("Collecting ", "Downloading ", "Installing collected")):
                self.stage = self.stage.split(":")[0] + ": " + raw.strip()[:80]
        if not alive and not self.result and not self.error:
            self.error = f"the installer stopped (exit {self.proc.returncode}); see {self.log}"
        return alive

    def cancel(self) -> None:
        """Stop the installer and pip under it (the whole process group)."""
        if self.running:
            try:
                if os.name == "nt":                  # the installer, pip and whatever pip runs
                    subprocess.run(["taskkill", "/F", "/T", "/PID", str(self.proc.pid)], capture_output=True,
                                   creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
                else:
                    os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                if os.name != "nt":
                    try:
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    except OSError:
                        pass
                self.proc.kill()
                self.proc.wait()
        self.error = self.error or "cancelled"

    def wait(self, timeout: float | None = None) -> None:
        self.proc.wait(timeout=timeout)
        self.poll()


def platform_summary() -> str:
    return f"{platform.system()} {platform.machine()}, Python {platform.python_version()}"


if __name__ == "__main__":
    sys.exit(main())
