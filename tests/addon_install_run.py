"""Install Engine for real, in a Blender (bpy) process of its own whose user folder is a
temporary one (BLENDER_USER_RESOURCES, set by tests/test_addon_install.py before Blender
starts): refused with online access off, started and cancelled, run to completion, Detect,
a bare interpreter and a mismatched engine refused, then an SDF trained with the installed
engine. Writes what it saw as JSON for the test to judge.

    BLENDER_USER_RESOURCES=TMP/user python tests/addon_install_run.py TMP OUT.json
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import bpy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from addon_harness import installed_extension  # noqa: E402


def site_packages_listing() -> list[str]:
    """What Blender's own interpreter has installed (it must not change)."""
    import site  # noqa: PLC0415
    names = set()
    for sp in site.getsitepackages():
        if os.path.isdir(sp):
            names.update(n for n in os.listdir(sp) if n.endswith(".dist-info"))
    return sorted(names)


def _group_gone(pgid: int, wait: float = 10.0) -> bool:
    """Whether no process of the installer's process group (pip under it) is left (POSIX)."""
    if os.name == "nt":
        return True
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def error_of(op, *args, **kwargs) -> str:
    try:
        op(*args, **kwargs)
    except RuntimeError as e:
        return str(e)
    return ""


def main(tmp: Path, out: Path) -> None:
    seen: dict = {}
    with installed_extension(tmp, "ngp_install_repo") as (mod, module_name, _index):
        prefs = bpy.context.preferences.addons[module_name].preferences
        prefs.engine_python = ""
        prefs.torch_build = "DEFAULT"        # torch==2.13.0 from the package index, as setup.sh does
        venv = mod.preferences.engine_folder()
        seen["venv"] = str(venv)
        seen["site_before"] = site_packages_listing()

        # 1. Online access off: refused, nothing made.
        bpy.context.preferences.system.use_online_access = False
        seen["offline_error"] = error_of(bpy.ops.ngp.install_engine)
        seen["offline_made_venv"] = venv.exists()

        # 2. The UI path (what the button's invoke does; headless bpy.ops has no event to invoke
        # with): returns at once, the timer follows it; cancelled once torch is on its way.
        bpy.context.preferences.system.use_online_access = True
        t0 = time.perf_counter()
        job = mod.preferences.start_install(prefs)
        seen["invoke_return_s"] = time.perf_counter() - t0
        seen["invoke_timer"] = bpy.app.timers.is_registered(mod.preferences.watch)
        stages, longest_tick = [], 0.0
        deadline = time.monotonic() + 120
        while job.running and job.fraction < 0.1 and time.monotonic() < deadline:
            t = time.perf_counter()
            mod.preferences.watch()
            longest_tick = max(longest_tick, time.perf_counter() - t)
            stages.append(job.stage)
            time.sleep(0.05)
        seen["stages_before_cancel"] = sorted(set(stages))
        seen["watch_longest_tick_ms"] = 1000 * longest_tick
        bpy.ops.ngp.cancel_install()
        seen["cancel_process_ended"] = job.proc.poll() is not None
        seen["cancel_group_gone"] = _group_gone(job.proc.pid)
        seen["cancel_status"] = prefs.install_status
        seen["cancel_engine_python"] = prefs.engine_python
        seen["cancel_marker"] = (venv / mod.engine_setup.MARKER).exists()

        # 3. The script path: runs to completion, sets Engine Python, runs Check.
        t0 = time.perf_counter()
        seen["exec_result"] = sorted(bpy.ops.ngp.install_engine())
        seen["install_seconds"] = time.perf_counter() - t0
        seen["engine_python"] = prefs.engine_python
        seen["engine_status"] = prefs.engine_status
        seen["install_status"] = prefs.install_status
        seen["marker"] = json.loads((venv / mod.engine_setup.MARKER).read_text())
        seen["site_after"] = site_packages_listing()
        seen["log_exists"] = (venv.parent / "install.log").is_file()

        # 4. Detect: the installed one can run the engine; a bare one cannot and gets a fix.
        bare = tmp / "bare"
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
        bare_python = seen["bare_python"] = str(mod.engine_setup.venv_python(bare))
        os.environ["NGP_ENGINE_PYTHON"] = bare_python      # one of Detect's candidates
        bpy.ops.ngp.detect_engines()
        seen["detected"] = [{"python": it.python, "origin": it.origin, "ok": it.ok, "summary": it.summary(),
                             "fix": it.report.get("fix", "")} for it in mod.preferences.WORK.detection.snapshot()]
        installed = prefs.engine_python
        prefs.engine_python = bare_python
        seen["bare_check_error"] = error_of(bpy.ops.ngp.check_engine)
        prefs.engine_python = installed

        # 5. A mismatched engine is refused with one line.
        fake = tmp / "old_engine"
        shutil.copytree(Path(mod.__file__).parent / "ngp_engine", fake / "ngp_engine",
                        ignore=shutil.ignore_patterns("__pycache__"))
        init = fake / "ngp_engine" / "__init__.py"
        init.write_text(init.read_text().replace(f'__version__ = "{mod.engine_link.ENGINE_VERSION}"',
                                                 '__version__ = "0.0.1"'))
        mod.engine_link.shutdown()
        try:
            mod.engine_link.ensure_engine(installed, engine_root=fake)
            seen["mismatch_error"] = ""
        except mod.engine_link.EngineError as e:
            seen["mismatch_error"] = str(e)
        seen["mismatch_engine_running"] = mod.engine_link.client() is not None

        # 6. Train with the installed engine: an SDF of a cube, imported when done.
        bpy.ops.mesh.primitive_cube_add(size=1.0)
        scene = bpy.context.scene
        scene.ngp.run_folder = str(tmp / "runs")
        scene.ngp.train_budget, scene.ngp.train_steps, scene.ngp.mesh_resolution = "STEPS", 60, 48
        seen["train_result"] = sorted(bpy.ops.ngp.train_sdf())
        link = mod.engine_link
        seen["train_python"] = link.STATE.engine_info.get("python", "")
        deadline = time.monotonic() + 300
        while bpy.data.objects.get("Cube SDF") is None and time.monotonic() < deadline:
            link.pump()
            if link.STATE.status == "error":
                break
            time.sleep(0.05)
        sdf = bpy.data.objects.get("Cube SDF")
        seen["sdf_vertices"] = len(sdf.data.vertices) if sdf is not None else 0
        seen["train_status"], seen["train_message"] = link.STATE.status, link.STATE.message
    out.write_text(json.dumps(seen, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
