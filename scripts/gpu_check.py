"""The prepared GPU check: one run of a few minutes on any CUDA (or ROCm) machine.

1. Environment: GPU, driver-side CUDA/HIP, torch, triton, tiny-cuda-nn and numba, present
   or not; what Triton needs to compile at run time (a C compiler, Python.h) and whether a
   one-point Triton hash encoding runs on the device.
2. The GPU tests: tests/test_hash_grid_triton.py and tests/test_render_triton.py (compiled
   Triton kernels against the references on the GPU: hash grid, marcher, compositing; NeRF
   and SDF steps) and the tiny-cuda-nn test of tests/test_hash_grid_backends.py (the
   file's other tests are the CPU kernel's); pass/fail/skip counts and the failures'
   names, read from pytest's verbose lines as they come, so that a run stopped by
   `--test-timeout` still reports the tests it finished.
3. The encoding benchmark (scripts/bench_encoding.py) on 2^20 points, L16 F2 T2^19: the
   torch reference, Triton, tiny-cuda-nn when importable, nerfstudio-style pure torch.
4. The NeRF MLPs alone (scripts/bench_mlp.py) on 2^18 rows: float32 against bfloat16
   autocast (`mlp_precision`), forward + backward.
5. A NeRF of the `scripts/make_scene.py` scene at 400x400 (`--scene`; rendered first when
   missing and bpy is installed): `--seconds` of training with `--preset`, then test PSNR
   over the test views, steps done, samples/s and peak GPU memory; then 16 more steps
   under CUDA's own sync check (`torch.cuda.set_sync_debug_mode`): how many operations
   per step made the host wait for the GPU, and where (a training step should make none
   but on the occupancy grid's updates; see README "A GPU training step that never
   waits").
6. With `--capture DIR` (a photo capture with poses, e.g. instant-ngp's data/nerf/fox,
   copied under out/ and carried to the GPU machine): `--capture-seconds` of training
   with `--preset` at 480 pixels on the long side, every 8th frame of its json held out
   (`holdout_every`), then the held-out PSNR: issue 14's fox figure on a GPU (this CPU:
   27.87 dB after 5 minutes, README "instant-ngp's fox on this CPU").
7. The commands on the device (issue 14: `--device cuda` works for image, NeRF and SDF,
   CLI and service): `image` on one of `--scene`'s photos and `sdf train` on its true
   geometry through the CLI, and an image job through the engine service, each 300 steps
   with `--device`; exit codes, the metrics' device name, peak GPU memory and quality.

Each part runs in a Python process of its own, stopped after a time budget (`part_budget`:
a hang, or a CUDA error that poisons a process, costs that part only), records its own
error, and the next one still runs; the whole result goes to one JSON file (default
benchmarks/gpu_check.json), rewritten after each part, and a summary to stdout.

    python scripts/gpu_check.py [--scene out/scene400] [--seconds 60] [--preset instant-ngp]
        [--capture out/fox --capture-seconds 30] [--test-scene out/test_scene40]
        [--device cuda] [--out benchmarks/gpu_check.json]

`--device cpu` runs the same parts on the CPU (Triton in its interpreter, a short NeRF): a
dry run of the script itself, not a measurement.

A GPU machine's Python may lack Blender's module (bpy has wheels for Python 3.11 only), so
what needs Blender is rendered beforehand, here, by `--prepare`: the 400x400 scene
(`--scene`) and the NeRF tests' 40x40 scene (`--test-scene`; the tests read it through
$NGP_TEST_NERF_SCENE instead of rendering it). It also fetches, into .whl/, the wheels
for that Python (`--wheels-python`, 3.12) of libigl (the SDF tests' samples) and PyMCubes,
and prints the folders to carry along and the command to run there (README, "The GPU
check, rehearsed"). The NeRF parts need neither package (ngp_engine/packages.py); what
else the machine's Python lacks from ngp_engine/requirements.txt is listed under
"environment".
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

# The NeRF tests' scene, rendered before (tests/conftest.py: NERF_SCENE_ARGS, NERF_SCENE_ENV).
TEST_SCENE = ROOT / "out" / "test_scene40"
SCENE400_ARGS = {"size": 400, "n_train": 100, "n_test": 20}
# Wheels for the GPU machine's Python of what the tests need and its image lacks (the SDF
# tests sample with libigl; PyMCubes for completeness: meshing), at the versions used here.
WHEELS = ROOT / ".whl"
WHEEL_DISTS = ("libigl", "PyMCubes")
MANYLINUX = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64")
GPU_TESTS = ["tests/test_hash_grid_triton.py", "tests/test_render_triton.py",
             "tests/test_hash_grid_backends.py::test_tcnn_matches_reference_on_cuda"]
PARTS = ("environment", "tests", "encoding", "mlp", "nerf", "commands", "capture")
# pytest -v: "tests/test_x.py::test_y[case] PASSED [ 10%]", one line per test as it ends.
VERBOSE_LINE = re.compile(r"^(\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b")


def tests_conftest():
    """tests/conftest.py, where the NeRF tests' scene is defined (imports pytest; on a CPU
    it sets TRITON_INTERPRET=1, as the CPU parts need anyway)."""
    if str(ROOT / "tests") not in sys.path:
        sys.path.append(str(ROOT / "tests"))
    return importlib.import_module("conftest")


def version_of(module: str) -> str | None:
    """The module's __version__, or None when it does not import (the reason is logged)."""
    try:
        return str(getattr(importlib.import_module(module), "__version__", "present"))
    except Exception as e:  # noqa: BLE001 (tinycudann raises EnvironmentError without CUDA)
        return f"absent ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})"


def environment(device_name: str) -> dict[str, Any]:
    import torch  # noqa: PLC0415

    from ngp_engine import probe  # noqa: PLC0415

    env: dict[str, Any] = {
        "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "torch_hip": getattr(torch.version, "hip", None),
        "cuda_available": torch.cuda.is_available(),
        "triton": version_of("triton"), "tinycudann": version_of("tinycudann"),
        "numba": version_of("numba"), "numpy": version_of("numpy"),
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"),
        # ngp_engine/requirements.txt's lines this Python lacks (none of them stops a part
        # unless its error says so).
        "engine_requirements_missing": probe.probe()["missing"],
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   compute_capability=f"{props.major}.{props.minor}",
                   gpu_count=torch.cuda.device_count())
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        env["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        env["nvidia_smi"] = f"not run: {e}"
    env["device_asked"] = device_name
    # Triton compiles a small C launcher at its first launch: no compiler or no Python.h
    # and every launch fails though `import triton` works.
    env["c_compiler"] = shutil.which("cc") or shutil.which("gcc")
    env["python_h"] = (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file()
    if device_name != "cpu" and torch.cuda.is_available():
        env["triton_launch"] = triton_launch(torch.device(device_name))
    return env


def triton_launch(device) -> str:
    """'ok' when a one-point hash encoding by the Triton backend runs on `device` and agrees
    with the torch reference, else the error in one line."""
    import torch  # noqa: PLC0415

    from ngp_engine.config import HashGridConfig  # noqa: PLC0415
    from ngp_engine.encoding.hash_grid import HashGrid  # noqa: PLC0415

    try:
        cfg = HashGridConfig(n_levels=2, log2_hashmap_size=8, base_resolution=4, per_level_scale=2.0)
        fast_grid, ref_grid = (HashGrid(3, cfg, backend=b, generator=torch.Generator().manual_seed(0)
                                        ).to(device) for b in ("triton", "torch"))
        x = torch.full((1, 3), 0.3, device=device)
        with torch.no_grad():
            fast, ref = fast_grid(x), ref_grid(x)
        torch.cuda.synchronize()
        return "ok" if torch.allclose(fast, ref, atol=1e-6) else f"differs: {fast} vs {ref}"
    except Exception as e:  # noqa: BLE001 (reported, not raised: the tests say more)
        return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


def gpu_tests(timeout: float, test_scene: Path, tests: list[str] = GPU_TESTS) -> dict[str, Any]:
    """pytest over `tests` in a subprocess; counts and failing test ids from its JUnit XML,
    or, when `timeout` stops it, from its verbose lines. `test_scene` (the NeRF tests' scene
    rendered by --prepare) is used where it exists."""
    env = dict(os.environ)
    scene = test_scene if (test_scene / "scene.json").is_file() else None
    if scene is not None:
        env[tests_conftest().NERF_SCENE_ENV] = str(scene.resolve())
    env["PYTHONUNBUFFERED"] = "1"            # each verbose line reaches the pipe as it ends
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider",
                                   f"--junitxml={xml}", *tests], cwd=ROOT,
                                  capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired as e:
            # pytest writes its XML at the end: what finished is in the verbose lines.
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            return {"timed_out_after_s": timeout, "nerf_scene": str(scene) if scene else None,
                    **verbose_results(out)}
        seconds = time.perf_counter() - t0
        result: dict[str, Any] = {"returncode": proc.returncode, "seconds": round(seconds, 1),
                                  "nerf_scene": str(scene) if scene else None,
                                  "tail": proc.stdout.strip().splitlines()[-1:]}
        if xml.exists():
            failed, skipped, passed = [], [], 0
            for case in ET.parse(xml).getroot().iter("testcase"):
                name = f"{case.get('classname')}::{case.get('name')}"
                if case.find("failure") is not None or case.find("error") is not None:
                    node = case.find("failure") if case.find("failure") is not None else case.find("error")
                    failed.append({"test": name, "message": (node.get("message") or "")[:400]})
                elif case.find("skipped") is not None:
                    skipped.append({"test": name, "reason": (case.find("skipped").get("message") or "")[:200]})
                else:
                    passed += 1
            result.update(passed=passed, failed=failed, skipped=skipped)
        else:
            result["stderr"] = proc.stderr[-2000:]
    return result


def verbose_results(text: str) -> dict[str, Any]:
    """Counts and test ids from pytest -v's lines (a run cut short: no XML, no messages).
    A test's last line counts (a teardown ERROR after PASSED or FAILED), but never PASSED
    after a failure."""
    outcome: dict[str, str] = {}
    for line in text.splitlines():
        m = VERBOSE_LINE.match(line.strip())
        if m and not (m.group(2) == "PASSED" and outcome.get(m.group(1)) in ("FAILED", "ERROR")):
            outcome[m.group(1)] = m.group(2)
    unfinished = text.strip().splitlines()[-1:] if text.strip() else []
    return {"passed": sum(kind == "PASSED" for kind in outcome.values()),
            "failed": [{"test": t, "message": kind} for t, kind in outcome.items()
                       if kind in ("FAILED", "ERROR")],
            "skipped": [{"test": t, "reason": ""} for t, kind in outcome.items() if kind == "SKIPPED"],
            "last_line": unfinished}


def encoding_bench(device, batch_log2: int) -> dict[str, Any]:
    import bench_encoding  # noqa: PLC0415 (scripts/)

    report = bench_encoding.run(device, batch_log2, repeats=5, warmup=2)
    bench_encoding.print_table(report)
    return report


def mlp_bench(device) -> dict[str, Any]:
    import bench_mlp  # noqa: PLC0415 (scripts/)

    out = bench_mlp.isolated(1 << 18, repeats=10, device=device)
    for name, r in out.items():
        print(f"   mlp {name}: {r['median_s'] * 1e3:.2f} ms", flush=True)
    return out


def nerf_run(device, scene: Path, seconds: float, preset: str) -> dict[str, Any]:
    from ngp_engine.config import NERF_PRESETS  # noqa: PLC0415
    from ngp_engine.data.transforms import load_nerf_dataset  # noqa: PLC0415

    if not (scene / "transforms_train.json").exists():
        import importlib.util  # noqa: PLC0415

        if importlib.util.find_spec("bpy") is None:
            return {"skipped": f"{scene} is missing and bpy is not installed to render it "
                               "(render it elsewhere with scripts/make_scene.py --size 400 and carry it)"}
        render_scene(scene, SCENE400_ARGS)
    train, test = load_nerf_dataset(scene, "train"), load_nerf_dataset(scene, "test")
    return {"scene": str(scene),
            **train_and_evaluate(device, train, test, NERF_PRESETS[preset], seconds, preset)}


def render_scene(out: Path, args: dict[str, Any]) -> None:
    """scripts/make_scene.py --out OUT --<arg> <value>... (Blender as a module, here)."""
    cmd = [sys.executable, str(ROOT / "scripts" / "make_scene.py"), "--out", str(out)]
    for key, value in args.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    subprocess.run(cmd, check=True)


def prepare(a: argparse.Namespace, defaults: dict[str, Any]) -> int:
    """--prepare: render what the GPU machine cannot (no bpy there), fetch the wheels its
    Python (`--wheels-python`) lacks into .whl/, print what to carry and the command to run.
    Checks what it can before the slow parts; a failed download keeps the old wheels."""
    import importlib.util  # noqa: PLC0415

    scenes = {"scene": (Path(a.scene), SCENE400_ARGS),
              "test-scene": (Path(a.test_scene), tests_conftest().NERF_SCENE_ARGS)}
    folders = {name: folder for name, (folder, _) in scenes.items()}
    if a.capture:
        folders["capture"] = Path(a.capture)
    carried: dict[str, Path] = {}
    for name, folder in folders.items():
        # Only what lies in the checkout travels (out/ is git-ignored: carried by name).
        rel = Path(os.path.relpath(folder.absolute(), ROOT))
        if rel.parts[0] == ".." or (name == "capture" and not folder.is_dir()):
            print(f"error: --{name} {folder} is not a folder inside {ROOT} (copy it under out/)",
                  file=sys.stderr)
            return 2
        carried[name] = rel
    try:
        pins = [f"{d}=={importlib.metadata.version(d)}" for d in WHEEL_DISTS]
    except importlib.metadata.PackageNotFoundError as e:
        print(f"error: {e.args[0]} is not installed here (scripts/setup.sh installs it)", file=sys.stderr)
        return 2
    make_scene = tests_conftest().make_scene_module()
    have_bpy = importlib.util.find_spec("bpy") is not None
    for name, (folder, args) in scenes.items():
        diff = make_scene.differences(folder, **args)
        if not diff:
            continue
        if (folder / "scene.json").is_file() and set(diff) != {"files"}:
            # Rendering there would replace another dataset (make_scene re-renders in place).
            print(f"error: --{name} {folder} holds another dataset than make_scene.py {args} "
                  f"({diff}); name another folder", file=sys.stderr)
            return 2
        if not have_bpy:
            print(f"error: --{name} {folder}: bpy (Blender as a Python module) is not installed "
                  "here to render it", file=sys.stderr)
            return 2
        render_scene(folder, args)
    (ROOT / "out").mkdir(exist_ok=True)
    fetched = Path(tempfile.mkdtemp(dir=ROOT / "out"))     # git-ignored if left behind
    platforms = [arg for p in MANYLINUX for arg in ("--platform", p)]
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                           "--only-binary=:all:", "--python-version", a.wheels_python,
                           "--implementation", "cp", *platforms, "-d", str(fetched), *pins],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(fetched)
        print(f"error: pip download {' '.join(pins)} for Python {a.wheels_python}: "
              + (proc.stderr.strip().splitlines() or ["failed"])[-1], file=sys.stderr)
        return 2
    shutil.rmtree(WHEELS, ignore_errors=True)   # only this run's versions: pip takes *.whl
    fetched.rename(WHEELS)
    carried["wheels"] = WHEELS.relative_to(ROOT)
    total = 0
    for rel in carried.values():
        size = sum(f.stat().st_size for f in (ROOT / rel).rglob("*") if f.is_file())
        total += size
        print(f"carry {rel}: {size / 2**20:.1f} MiB")
    print(f"together {total / 2**20:.1f} MiB, plus the checkout's tracked files (64 MiB a call)")
    options = {"scene": carried["scene"], "test-scene": carried["test-scene"],
               "capture": carried.get("capture"), "seconds": a.seconds, "preset": a.preset,
               "capture-seconds": a.capture_seconds, "batch-log2": a.batch_log2,
               "test-timeout": a.test_timeout}
    for name in ("scene", "test_scene"):       # folders: as the checkout names them
        defaults[name] = Path(os.path.relpath(defaults[name], ROOT))
    args = "".join(f" --{name} {value}" for name, value in options.items()
                   if value is not None and str(value) != str(defaults[name.replace("-", "_")]))
    # Without the wheels (no pip there, say) only the SDF tests fail: go on regardless.
    print("run there: set -o pipefail; python3 -m pip install -q --no-index --no-deps "
          "--no-compile --target /tmp/site .whl/*.whl || echo 'wheels not installed: the SDF "
          "tests will fail'; export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}; "
          "PYTHONUNBUFFERED=1 python3 scripts/gpu_check.py" + args +
          " --out $OUT/gpu_check.json 2>&1 | tee $OUT/gpu_check.log")
    return 0


def commands_on_device(device, scene: Path, steps: int = 300) -> dict[str, Any]:
    """Part 7: the CLI's `image` and `sdf train` and the service's image job on `device`."""
    from ngp_engine.service.client import EngineClient  # noqa: PLC0415
    from ngp_engine.service.protocol import Train  # noqa: PLC0415

    scene = scene.resolve()                  # the service takes absolute paths only
    photo, mesh = scene / "train" / "r_0.png", scene / "geometry.ply"
    if not (photo.is_file() and mesh.is_file()):
        return {"skipped": f"{scene} lacks train/r_0.png or geometry.ply (scripts/make_scene.py writes both)"}
    keys = ("device", "device_name", "backend", "peak_cuda_memory_mb", "steps", "seconds",
            "psnr", "chamfer", "iou", "normal_consistency")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cmd in (("image_cli", ["image", str(photo)]),
                          ("sdf_cli", ["sdf", "train", str(mesh), "--resolution", "128"])):
            run = Path(tmp) / name
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "ngp_engine", *cmd, "--steps", str(steps),
                                   "--device", device.type, "--quiet", "--out", str(run)],
                                  cwd=ROOT, capture_output=True, text=True, timeout=150)
            entry: dict[str, Any] = {"returncode": proc.returncode,
                                     "seconds": round(time.perf_counter() - t0, 1),
                                     "stderr_tail": proc.stderr.strip().splitlines()[-3:]}
            if (run / "metrics.json").is_file():
                metrics = json.loads((run / "metrics.json").read_text())
                entry["metrics"] = {k: metrics[k] for k in keys if k in metrics}
            out[name] = entry
            print(f"   {name}: exit {proc.returncode}, {entry.get('metrics')}", flush=True)
        client = EngineClient()
        try:
            client.start()
            client.send(Train(mode="image", data=str(photo), run_dir=str(Path(tmp) / "service"),
                              steps=steps, device=device.type, id="check"))
            end = client.wait_for(lambda e: e.type in ("done", "error"), timeout=150)
            out["image_service"] = ({k: end.summary[k] for k in keys if k in end.summary}
                                    if end.type == "done" else {"error": end.message})
        finally:
            out.setdefault("image_service", {})["engine_exit"] = client.close()
        print(f"   image_service: {out['image_service']}", flush=True)
    return out


def capture_run(device, capture: Path, seconds: float, preset: str) -> dict[str, Any]:
    """Part 6: a photo capture, every 8th frame held out, images at 480 px on the long side."""
    from ngp_engine import config as cfgmod  # noqa: PLC0415
    from ngp_engine.config import NERF_PRESETS  # noqa: PLC0415
    from ngp_engine.data.transforms import HOLDOUT  # noqa: PLC0415
    from ngp_engine.tasks.nerf.task import NerfTask  # noqa: PLC0415

    cfg = cfgmod.replace(NERF_PRESETS[preset], holdout_every=8, max_image_size=480)
    train, test = NerfTask.load_data(capture, cfg), NerfTask.load_data(capture, cfg, HOLDOUT)
    return {"capture": str(capture), "split": HOLDOUT,
            **train_and_evaluate(device, train, test, cfg, seconds, preset)}


def train_and_evaluate(device, train, test, cfg, seconds: float, preset: str) -> dict[str, Any]:
    """`seconds` of training on `train` (after 5 untimed steps of a throwaway task: from the
    third on, the steps run on fixed-size buffers, whose kernels compile then), then PSNR on
    `test`, and on CUDA the peak memory and the host waits per step."""
    import torch  # noqa: PLC0415

    from ngp_engine.tasks.nerf.evaluate import evaluate  # noqa: PLC0415
    from ngp_engine.tasks.nerf.task import NerfTask  # noqa: PLC0415

    NerfTask(train, cfg, device).train(steps=5)      # kernel compilation and caches: not timed
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    task = NerfTask(train, cfg, device)
    task.train(seconds=seconds)
    t0 = time.perf_counter()
    ev = evaluate(task.model, test)
    metrics = task.metrics()
    out = {"image_size": [train.width, train.height],
           "n_train": len(train.cameras), "n_test": len(test.cameras), "preset": preset,
           "backend": task.backend, "seconds": round(task.seconds, 1), "steps": task.steps_done,
           "test_psnr": ev["psnr"], "test_ssim": ev["ssim"],
           "eval_seconds": round(time.perf_counter() - t0, 1),
           "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}}
    if device.type == "cuda":
        out["peak_cuda_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        out["host_waits"] = host_waits(task)
    return out


def host_waits(task, steps: int = 16) -> dict[str, Any]:
    """CUDA's own count of the operations that made the host wait, per training step
    (`torch.cuda.set_sync_debug_mode("warn")`: a warning for each), and where; other
    warnings are counted apart. (A warning raised in the backward pass points at the
    `backward()` call.)"""
    import collections  # noqa: PLC0415
    import warnings  # noqa: PLC0415

    import torch  # noqa: PLC0415

    per_step, where, other = [], collections.Counter(), collections.Counter()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        for _ in range(steps):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                task.step()
            waits = [w for w in caught if "synchronizing CUDA operation" in str(w.message)]
            per_step.append(len(waits))
            where.update(f"{Path(w.filename).name}:{w.lineno}" for w in waits)
            other.update(str(w.message).splitlines()[0][:120] for w in caught if w not in waits)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return {"per_step": per_step, "where": dict(where.most_common(12)),
            "other_warnings": dict(other.most_common(6))}


def part(report: dict[str, Any], name: str, fn: Callable[[], Any], out: Path) -> None:
    """Run one part; its result or its error (one line plus the traceback's tail) goes in,
    and the report so far to `out` (a run stopped by a time limit keeps the parts done)."""
    t0 = time.perf_counter()
    print(f"== {name}", flush=True)
    try:
        report[name] = fn()
    except Exception as e:  # noqa: BLE001 (the check reports every part, whatever breaks)
        report[name] = {"error": f"{type(e).__name__}: {e}",
                        "traceback": traceback.format_exc().splitlines()[-12:]}
        print(f"   failed: {type(e).__name__}: {e}", flush=True)
    report.setdefault("part_seconds", {})[name] = round(time.perf_counter() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


def run_part(name: str, a: argparse.Namespace, device) -> Any:
    """The result of part `name` (see the module's docstring)."""
    if name == "environment":
        return environment(a.device)
    if name == "tests":
        return gpu_tests(a.test_timeout, Path(a.test_scene))
    if name == "encoding":
        return encoding_bench(device, a.batch_log2)
    if name == "mlp":
        return mlp_bench(device)
    if name == "nerf":
        return nerf_run(device, Path(a.scene), a.seconds, a.preset)
    if name == "capture":
        return capture_run(device, Path(a.capture), a.capture_seconds, a.preset)
    return commands_on_device(device, Path(a.scene))


def part_budget(name: str, a: argparse.Namespace) -> float:
    """Seconds part `name` may run before its process is stopped. With the defaults the
    parts end within 19 minutes at worst; as estimated for a GPU from the CPU dry run, in
    about 7."""
    return {"environment": 60.0, "tests": a.test_timeout + 30.0, "encoding": 120.0,
            "mlp": 90.0, "nerf": a.seconds + 150.0, "capture": a.capture_seconds + 150.0,
            "commands": 240.0}[name]


def part_in_own_process(report: dict[str, Any], name: str, args: list[str], budget: float,
                        out: Path) -> None:
    """Part `name` in a Python process of its own (this script with --part), stopped after
    `budget` seconds with whatever it started (its own session, killed as a group): a hang,
    or a CUDA error that poisons its process's context (an illegal address is sticky: every
    later CUDA call fails), costs that part only. Its output goes to this process's,
    unbuffered; its result, or its error, into `report`, and the report so far to `out` (a
    run stopped by a time limit keeps the parts done)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        part_out = Path(tmp) / "part.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), *args, "--part", name,
               "--out", str(part_out)]
        stopped = None
        try:
            proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
            try:
                code = proc.wait(timeout=budget)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                code, stopped = None, f"stopped after {budget:.0f} s (its processes were killed)"
            if part_out.is_file():          # written, then hung on its way out: kept
                report[name] = json.loads(part_out.read_text())[name]
                if stopped:
                    report[name]["note"] = stopped
            else:
                report[name] = {"error": stopped or f"its process exited with {code} and "
                                                    "wrote no result"}
        except Exception as e:  # noqa: BLE001 (the next part still runs)
            report[name] = {"error": f"{type(e).__name__}: {e}"}
    if "error" in report[name]:
        print(f"   {name}: {report[name]['error']}", flush=True)
    report.setdefault("part_seconds", {})[name] = round(time.perf_counter() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", default=str(ROOT / "out" / "scene400"))
    ap.add_argument("--seconds", type=float, default=60.0, help="NeRF training time")
    ap.add_argument("--preset", default="instant-ngp")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu for a dry run")
    ap.add_argument("--batch-log2", type=int, default=20, help="encoding benchmark batch")
    ap.add_argument("--test-timeout", type=float, default=180.0)
    ap.add_argument("--capture", default=None,
                    help="also a photo capture (e.g. a copy of instant-ngp's data/nerf/fox under out/)")
    ap.add_argument("--capture-seconds", type=float, default=30.0)
    ap.add_argument("--test-scene", default=str(TEST_SCENE),
                    help="the NeRF tests' scene rendered by --prepare (used where it exists)")
    ap.add_argument("--prepare", action="store_true",
                    help="render --scene and --test-scene here (needs bpy), print what to "
                         "carry and the command to run on the GPU machine, and stop")
    ap.add_argument("--wheels-python", default="3.12",
                    help="--prepare: the GPU machine's Python version, for its wheels")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "gpu_check.json"))
    ap.add_argument("--part", choices=PARTS,
                    help=argparse.SUPPRESS)     # the check runs each part as its own process
    a = ap.parse_args(argv)
    if a.prepare:
        return prepare(a, vars(ap.parse_args([])))
    import torch  # noqa: PLC0415

    if a.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device is visible to torch (torch "
              f"{torch.__version__}); run on a GPU machine or pass --device cpu for a dry run",
              file=sys.stderr)
        return 2
    if a.device == "cuda":
        # Compiled kernels, not the interpreter, for the tests and the benchmarks.
        os.environ.pop("TRITON_INTERPRET", None)
    device = torch.device(a.device)
    out = Path(a.out)
    args = sys.argv[1:] if argv is None else list(argv)
    if a.part:                         # one part, in the process its parent started for it
        report: dict[str, Any] = {}
        part(report, a.part, lambda: run_part(a.part, a, device), out)
        return 0
    t0 = time.perf_counter()
    report = {"command": "scripts/gpu_check.py " + " ".join(args)}
    for name in PARTS:
        if name == "capture" and not a.capture:
            continue
        part_in_own_process(report, name, args, part_budget(name, a), out)
        if name == "environment":
            print(json.dumps(report["environment"], indent=1), flush=True)
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    t = report["tests"]
    print(f"tests: {t.get('passed')} passed, {len(t.get('failed', []))} failed, "
          f"{len(t.get('skipped', []))} skipped" if "error" not in t else f"tests: {t['error']}")
    if "timed_out_after_s" in t:
        print(f"  (stopped by --test-timeout after {t['timed_out_after_s']} s; last line: "
              f"{' '.join(t['last_line'])[:200]})")
    for f in t.get("failed", []):
        print(f"  FAILED {f['test']}: {f['message'][:200]}")
    enc = report["encoding"]
    for name, r in enc.get("results", {}).items():
        print(f"encoding {name}: fwd+bwd {r['forward_backward']['points_per_s'] / 1e6:.1f} Mpts/s")
    n = report["nerf"]
    print("nerf: " + (f"{n['test_psnr']:.2f} dB after {n['seconds']} s, {n['steps']} steps, "
                      f"backend {n['backend']}" if "test_psnr" in n else json.dumps(n)[:300]))
    if "host_waits" in n:
        print(f"host waits per step: {n['host_waits']['per_step']} {n['host_waits']['where']}")
    c = report.get("capture")
    if c is not None:
        print("capture: " + (f"{c['test_psnr']:.2f} dB held-out after {c['seconds']} s, "
                             f"{c['steps']} steps" if "test_psnr" in c else json.dumps(c)[:300]))
    cmds = report.get("commands", {})
    for name in ("image_cli", "sdf_cli", "image_service"):
        if name in cmds:
            print(f"{name}: {json.dumps(cmds[name])[:300]}")
    if "error" in cmds or "skipped" in cmds:
        print(f"commands: {json.dumps(cmds)[:300]}")
    print(f"wrote {out} ({report['total_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
