"""Compile every Triton kernel the engine launches for real GPU targets, on a machine
without a GPU: NVIDIA (PTX, then ptxas to a cubin) and AMD (AMDGCN, then an hsaco).

Triton's interpreter (TRITON_INTERPRET=1, which the tests use on the CPU) runs a kernel's
Python with numpy: it accepts code that the compiler rejects (a constexpr reassigned in a
loop, say) and it says nothing of registers or spills. This script drives the engine's own
launch code (`encoding/_triton_kernel.py`, `render/_triton_marching.py`,
`render/_triton_compositing.py`) with CPU tensors, while a stand-in for Triton's GPU driver
answers "this is an sm_90 (or gfx942, ...) device" and every launch is turned into a
compilation without a launch. Each kernel is therefore compiled with exactly the
signature, constexprs and integer/pointer specialisations that a real launch would give,
through Triton's own compiler, ptxas included (both ship in the triton wheel).

Variants: the hash grid's forward, table gradient and input gradient for d 2/3, F 1/2/4/8
and the three interpolations; the ray marcher's two passes; compositing and its backward
with and without a transmittance prefix; each at a batch size divisible by 16 and one that
is not (Triton compiles those apart); the grids have 16 levels, as every preset (Triton
also specialises on an integer argument divisible by 16). A launch whose variant an
earlier launch compiled is recorded as `reused`. Per variant it records registers,
`spills` (NVIDIA: bytes of local memory, cuobjdump's LOCAL; AMD: spilled VGPRs + SGPRs
from the code object's metadata), shared memory and compile time, in one JSON file.

    python scripts/compile_triton_kernels.py [--targets sm_80,sm_90,gfx942] [--quick]
        [--out benchmarks/triton_compile.json]

Exit status 1 when any variant fails to compile (its error is in the JSON and on stderr),
or when a target compiled nothing or not every engine kernel.
"""
from __future__ import annotations

import argparse
import json
import atexit
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The engine asks for fused a * b + c at every launch but the marcher's
# (backends.TRITON_LAUNCH_OPTIONS, _triton_marching.MARCH_LAUNCH_OPTIONS); this only keeps
# Triton 3.9 from warning that its default will change.
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
# A fresh cache unless one is given: every variant is compiled by this run's compiler
# (honest times, no stale binaries from another Triton); removed at exit.
if "TRITON_CACHE_DIR" not in os.environ:
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="triton-compile-")
    atexit.register(shutil.rmtree, os.environ["TRITON_CACHE_DIR"], ignore_errors=True)

# Consumer and data-centre GPUs our users have: Turing (T4, RTX 20xx), Ampere (A100;
# RTX 30xx), Ada (RTX 40xx), Hopper (H100/H200), Blackwell (RTX 50xx); AMD CDNA2/3
# (MI200/MI300) and RDNA3 (RX 7900).
DEFAULT_TARGETS = "sm_75,sm_80,sm_86,sm_89,sm_90,sm_120,gfx90a,gfx942,gfx1100"
INTERPOLATIONS = {"Linear": 0, "Nearest": 1, "Smoothstep": 2}


def parse_target(name: str):
    """'sm_90' -> GPUTarget('cuda', 90, 32); 'gfx942' -> GPUTarget('hip', 'gfx942', 64)."""
    from triton.backends.compiler import GPUTarget  # noqa: PLC0415

    if name.startswith("sm_"):
        return GPUTarget("cuda", int(name[3:]), 32)
    if name.startswith("gfx"):
        # RDNA (gfx10xx/11xx/12xx) runs wave32 by default, CDNA (gfx9xx) wave64.
        return GPUTarget("hip", name, 32 if name.startswith(("gfx10", "gfx11", "gfx12")) else 64)
    raise SystemExit(f"--targets: {name!r} is neither sm_NN (NVIDIA) nor gfxNNN (AMD)")


class TargetDriver:
    """Stands in for Triton's GPU driver: names the target, and nothing can be launched."""

    def __init__(self, target: Any) -> None:
        import torch  # noqa: PLC0415

        self.target = target
        self.torch_device = torch.device("cpu")

    def get_current_target(self) -> Any:
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def get_active_torch_device(self) -> Any:
        return self.torch_device


def cuda_resources(cubin: bytes) -> dict[str, int]:
    """Registers, local memory (spills) and stack of a cubin, by the cuobjdump in triton."""
    import triton  # noqa: PLC0415

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([str(tool), "-res-usage", f.name], capture_output=True,
                              text=True, check=True).stdout
    fields = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", text))
    return {"registers": int(fields["REG"]), "spills": int(fields["LOCAL"]),
            "stack_bytes": int(fields["STACK"])}


def amd_resources(amdgcn: str) -> dict[str, int]:
    """VGPRs, SGPRs and spilled registers from the code object's metadata (AMDGCN text)."""
    def field(name: str) -> int:
        m = re.search(rf"\.{name}:\s+(\d+)", amdgcn)
        if m is None:     # a silent 0 would read as "no spills"
            raise ValueError(f"no .{name} in the AMDGCN metadata")
        return int(m.group(1))

    return {"registers": field("vgpr_count"), "sgprs": field("sgpr_count"),
            "spills": field("vgpr_spill_count") + field("sgpr_spill_count")}


class Compiler:
    """Turns launches into compilations for one target and records each variant."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.case = ""
        self.constexprs: dict[str, Any] = {}
        self.seen: set[int] = set()        # compiled kernels of this target, by id

    def install(self) -> None:
        from triton.runtime.jit import JITFunction  # noqa: PLC0415

        compiler = self
        original = JITFunction.run

        def run(kernel: Any, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> Any:
            bound = dict(zip(kernel.arg_names, args)) | kwargs
            compiler.constexprs = {p.name: bound[p.name] for p in kernel.params
                                   if p.is_constexpr and p.name in bound}
            t0 = time.perf_counter()
            try:
                compiled = original(kernel, *args, grid=grid, warmup=True, **kwargs)
            except Exception as e:  # noqa: BLE001 (every failure is recorded, the next runs)
                compiler.record(kernel.__name__, None, time.perf_counter() - t0, e)
                raise
            compiler.record(kernel.__name__, compiled, time.perf_counter() - t0, None)
            fake_outputs(kernel.__name__, bound)
            return compiled

        JITFunction.run = run

    def record(self, name: str, compiled: Any, seconds: float, error: Exception | None) -> None:
        entry: dict[str, Any] = {"kernel": name, "case": self.case,
                                 "constexprs": self.constexprs, "seconds": round(seconds, 3)}
        if error is not None:
            entry["error"] = f"{type(error).__name__}: {error}"
        elif id(compiled) in self.seen:
            entry["reused"] = True
        else:
            self.seen.add(id(compiled))
            meta = compiled.metadata
            entry["shared_bytes"] = int(meta.shared)
            entry["num_warps"] = int(meta.num_warps)
            if "cubin" in compiled.asm:
                entry |= cuda_resources(compiled.asm["cubin"])
            else:
                entry |= amd_resources(compiled.asm["amdgcn"])
        self.records.append(entry)


def fake_outputs(kernel: str, bound: dict[str, Any]) -> None:
    """Nothing runs, so give the host code the outputs it reads back: the marcher's sample
    counts (two per ray) size its second pass."""
    if kernel == "_march_kernel" and not bound["WRITE"]:
        bound["counts_ptr"].fill_(2)


def hash_grid_cases(quick: bool) -> list[tuple[str, Callable[[], None]]]:
    """(name, thunk) per hash-grid launch: forward, table and input gradients."""
    import torch  # noqa: PLC0415

    from ngp_engine.config import HashGridConfig  # noqa: PLC0415
    from ngp_engine.encoding import _triton_kernel as kernel  # noqa: PLC0415
    from ngp_engine.encoding.hash_grid import HashGrid  # noqa: PLC0415

    dims = (3,) if quick else (2, 3)
    features = (2,) if quick else (1, 2, 4, 8)
    interps = ("Linear",) if quick else tuple(INTERPOLATIONS)
    sizes = (1000, 4096)                       # not / divisible by 16: compiled apart
    cases = []
    for d in dims:
        for f in features:
            for interp in interps:
                cfg = HashGridConfig(n_levels=16, n_features_per_level=f,
                                     log2_hashmap_size=12, base_resolution=4,
                                     per_level_scale=1.3, interpolation=interp)
                grid = HashGrid(d, cfg, backend="torch")
                tables, params = grid._tables(), grid.params.detach()
                code = INTERPOLATIONS[interp]
                for n in sizes:
                    x = torch.rand(n, d)
                    dy = torch.randn(n, cfg.n_levels * f)
                    tag = f"d{d}-F{f}-{interp}-n{n}"

                    def fwd(x=x, p=params, t=tables, f=f, c=code) -> None:
                        kernel.forward(x, p, t, f, c)

                    def bwd(x=x, dy=dy, t=tables, f=f, c=code, n_p=params.numel()) -> None:
                        kernel.backward_params(x, dy, t, n_p, f, c)

                    def dx(x=x, dy=dy, p=params, t=tables, f=f, c=code) -> None:
                        kernel.backward_input(x, dy, p, t, f, c)

                    cases += [(f"forward {tag}", fwd), (f"table gradient {tag}", bwd)]
                    if interp != "Nearest":   # Nearest has no input gradient (no launch)
                        cases.append((f"input gradient {tag}", dx))
    return cases


def render_cases() -> list[tuple[str, Callable[[], None]]]:
    """(name, thunk) per marcher and compositing launch."""
    import torch  # noqa: PLC0415

    from ngp_engine.render import _triton_compositing as comp  # noqa: PLC0415
    from ngp_engine.render import _triton_marching as march  # noqa: PLC0415

    cases = []
    for n in (1000, 4096):
        o, d = torch.rand(n, 3), torch.nn.functional.normalize(torch.randn(n, 3), dim=-1)
        tn, tf, jit = torch.zeros(n), torch.ones(n), torch.rand(n)
        occupied = torch.ones(3, 16 ** 3, dtype=torch.bool)

        def marcher(o=o, d=d, tn=tn, tf=tf, jit=jit, occ=occupied) -> None:
            march.march(o, d, tn, tf, jit, occ, 3, 16, 1e-3, 1e-1, 1 / 256, 64)

        cases.append((f"march n{n}", marcher))
        for prefix in (False, True):
            offsets = torch.arange(0, 2 * n + 1, 2)
            s = 2 * n
            sigma = torch.rand(s, requires_grad=True)
            rgb = torch.rand(s, 3, requires_grad=True)
            t, dt = torch.rand(s), torch.rand(s)
            pre = torch.rand(n) if prefix else None

            def composite(sigma=sigma, rgb=rgb, t=t, dt=dt, off=offsets, pre=pre) -> None:
                opacity, colour, depth, _ = comp.composite(sigma, rgb, t, dt, off, pre)
                (opacity.sum() + colour.sum() + depth.sum()).backward()

            cases.append((f"composite{' with prefix' if prefix else ''} n{n}", composite))
    return cases


def engine_kernel_functions() -> list[Any]:
    """The engine's Triton functions (kernels and the helpers they call)."""
    from triton.runtime.jit import JITFunction  # noqa: PLC0415

    from ngp_engine.encoding import _triton_kernel  # noqa: PLC0415
    from ngp_engine.render import _triton_compositing, _triton_marching  # noqa: PLC0415

    return [obj for mod in (_triton_kernel, _triton_marching, _triton_compositing)
            for obj in vars(mod).values() if isinstance(obj, JITFunction)]


def engine_kernels() -> set[str]:
    """The names of the engine's launched Triton kernels (module-level *_kernel JITs)."""
    return {k.__name__ for k in engine_kernel_functions() if k.__name__.endswith("_kernel")}


def compile_target(name: str, compiler: Compiler, quick: bool) -> dict[str, Any]:
    """Every variant for one target: {target, variants: [...], failed, ...}."""
    from triton.runtime.driver import driver  # noqa: PLC0415

    driver.set_active(TargetDriver(parse_target(name)))
    # A kernel keeps its compiled variants per device number, and the target it read when
    # it first saw that device: forget both so that this target's compiler runs.
    for kernel in engine_kernel_functions():
        kernel.device_caches.clear()
    compiler.records = []
    compiler.seen = set()
    t0 = time.perf_counter()
    for case, thunk in hash_grid_cases(quick) + render_cases():
        compiler.case = case
        try:
            thunk()
        except Exception:  # noqa: BLE001 (recorded by Compiler.record; go on)
            last = compiler.records[-1] if compiler.records else {}
            if "error" not in last or last["case"] != case:     # failed in host code
                compiler.records.append({"kernel": "?", "case": case,
                                         "error": traceback.format_exc(limit=3)})
    failed = [r for r in compiler.records if "error" in r]
    ok = [r for r in compiler.records if "error" not in r and not r.get("reused")]
    return {"target": name, "variants": compiler.records, "compiled": len(ok),
            "failed": len(failed), "kernels": sorted({r["kernel"] for r in ok}),
            "max_registers": {k: max(r["registers"] for r in ok if r["kernel"] == k)
                              for k in sorted({r["kernel"] for r in ok})},
            "spilling": sorted({f"{r['kernel']} {r['case']}" for r in ok if r["spills"]}),
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default=DEFAULT_TARGETS,
                    help=f"comma-separated sm_NN / gfxNNN (default {DEFAULT_TARGETS})")
    ap.add_argument("--quick", action="store_true",
                    help="only d=3, F=2, Linear for the hash grid (the NeRF's variant)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "triton_compile.json")
    args = ap.parse_args()
    import torch  # noqa: PLC0415
    import triton  # noqa: PLC0415
    from triton import knobs  # noqa: PLC0415

    if knobs.runtime.interpret:     # TRITON_INTERPRET=1/true/on: nothing would compile
        print("compile_triton_kernels: unset TRITON_INTERPRET (the interpreter compiles "
              "nothing)", file=sys.stderr)
        return 2

    compiler = Compiler()
    compiler.install()
    targets = [compile_target(t.strip(), compiler, args.quick)
               for t in args.targets.split(",") if t.strip()]
    result = {"command": "python scripts/compile_triton_kernels.py " + " ".join(sys.argv[1:]),
              "date": time.strftime("%Y-%m-%d"), "triton": triton.__version__,
              "torch": torch.__version__, "host": platform.platform(),
              "engine_kernels": sorted(engine_kernels()), "targets": targets}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(args.out)
    bad = 0
    for t in targets:
        if not t["compiled"] or set(t["kernels"]) != set(result["engine_kernels"]):
            bad += 1
            print(f"  {t['target']}: compiled {t['kernels']}, not every engine kernel "
                  f"{result['engine_kernels']}", file=sys.stderr)
        regs = ", ".join(f"{k} {v}" for k, v in t["max_registers"].items())
        print(f"{t['target']:>8}: {t['compiled']} compiled, {t['failed']} failed, "
              f"{len(t['spilling'])} spilling, {t['seconds']} s; most registers: {regs}")
        for r in t["variants"]:
            if "error" in r:
                bad += 1
                print(f"  FAILED {r['kernel']} [{r['case']}]: {r['error'].splitlines()[-1]}",
                      file=sys.stderr)
    print(f"wrote {args.out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
