"""Which Pythons could run the engine, and what each has (Detect in the preferences).

Candidates: the environment Install Engine made, $NGP_ENGINE_PYTHON, the configured one,
Blender's own interpreter, python3/python on PATH, and conda environments (the active one,
those in ~/.conda/environments.txt, and the usual install folders). Each is asked by the
engine's own probe (`ngp_engine/probe.py`, run by that interpreter) in a thread of its own,
so a slow one (importing torch takes seconds) neither blocks the others nor Blender.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from .ngp_engine.probe import missing_names

PROBE = Path(__file__).resolve().parent / "ngp_engine" / "probe.py"
PROBE_TIMEOUT = 60.0


@dataclass
class Interpreter:
    """One candidate and the probe's answer (`report` is probe.py's JSON, {} on failure)."""

    python: str
    origin: str                         # where it was found: "installed", "PATH", "conda", ...
    report: dict = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.report.get("ok"))

    def summary(self) -> str:
        """One line: what it has, or what it lacks."""
        if self.error:
            return self.error
        r = self.report
        devices = [d for d, on in (("CUDA " + r.get("cuda_name", ""), r.get("cuda")), ("MPS", r.get("mps"))) if on]
        extras = [f"{k} {r['packages'][k]}" for k in ("numba",) if r.get("packages", {}).get(k)]
        if r.get("triton"):
            extras.append(f"triton {r['triton']}")
        has = f"Python {r.get('version', '?')}, torch {r.get('torch') or 'missing'}"
        has += f" ({', '.join(d.strip() for d in devices) or 'CPU only'})"
        if extras:
            has += ", " + ", ".join(extras)
        if not r.get("ok"):
            missing = missing_names(r)
            has += "; lacks " + ", ".join(missing) if missing else ""
        return has


def python_key(python: str) -> str:
    """What tells two interpreter paths apart: not resolved, since a virtual environment's
    python is a link to its base interpreter and still another environment."""
    return os.path.normcase(os.path.abspath(python))


def same_python(a: str, b: str) -> bool:
    return python_key(a) == python_key(b)


def _python_in(prefix: Path) -> Path:
    return prefix / ("python.exe" if os.name == "nt" else "bin/python")


def candidates(installed: str = "", configured: str = "") -> list[tuple[str, str]]:
    """(python, origin) pairs, each real file once, in the order worth trying."""
    found: list[tuple[str, str]] = [(installed, "installed by Install Engine"),
                                    (os.environ.get("NGP_ENGINE_PYTHON", ""), "$NGP_ENGINE_PYTHON"),
                                    (configured, "configured"), (sys.executable, "Blender's Python")]
    for name in ("python3", "python"):
        found.append((shutil.which(name) or "", "PATH"))
    prefixes: list[Path] = []
    if os.environ.get("CONDA_PREFIX"):
        prefixes.append(Path(os.environ["CONDA_PREFIX"]))
    envs_txt = Path.home() / ".conda" / "environments.txt"
    if envs_txt.is_file():
        prefixes += [Path(line.strip()) for line in envs_txt.read_text(errors="replace").splitlines() if line.strip()]
    for base in ("miniconda3", "anaconda3", "miniforge3", "mambaforge"):
        root = Path.home() / base
        if root.is_dir():
            prefixes.append(root)
            prefixes += sorted(p for p in (root / "envs").glob("*") if p.is_dir())
    found += [(str(_python_in(p)), f"conda ({p.name})") for p in prefixes]
    seen, out = set(), []
    for python, origin in found:
        if not python or not os.path.isfile(python):
            continue
        key = python_key(python)
        if key not in seen:
            seen.add(key)
            out.append((python, origin))
    return out


def probe(python: str, origin: str = "") -> Interpreter:
    """Ask `python` what it has (never raises; a failure is the entry's error line)."""
    it = Interpreter(python=python, origin=origin)
    try:
        out = subprocess.run([python, str(PROBE)], capture_output=True, text=True, timeout=PROBE_TIMEOUT,
                             stdin=subprocess.DEVNULL, creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        it.report = json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}
        if not it.report:
            it.error = f"does not run the probe ({(out.stderr.strip().splitlines() or ['no output'])[-1][:120]})"
    except subprocess.TimeoutExpired:
        it.error = f"did not answer within {PROBE_TIMEOUT:.0f} s"
    except (OSError, ValueError) as e:
        it.error = f"cannot be run ({type(e).__name__}: {e})"
    return it


class Detection:
    """Probing all candidates in a background thread; `results` fills in as each answers."""

    def __init__(self, found: list[tuple[str, str]]) -> None:
        self.results: list[Interpreter] = []
        self.total = len(found)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, args=(found,), daemon=True)
        self._thread.start()

    def _run(self, found: list[tuple[str, str]]) -> None:
        with ThreadPoolExecutor(max_workers=4) as pool:
            for future in as_completed([pool.submit(probe, *c) for c in found]):   # as each answers
                with self._lock:
                    self.results.append(future.result())

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def snapshot(self) -> list[Interpreter]:
        with self._lock:
            return list(self.results)
