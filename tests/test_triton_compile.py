"""Every Triton kernel the engine launches compiles for real GPUs, here, without one:
scripts/compile_triton_kernels.py drives the engine's launch code with a stand-in driver and
Triton's own compiler (ptxas and the AMDGCN backend ship in the triton wheel). The
interpreter tests (test_hash_grid_triton.py, test_render_triton.py) check what the kernels
compute; this checks that the compiler accepts them, as the interpreter does not (it ran a
constexpr reassigned in a loop that no GPU could compile), and that nothing spills."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT
from triton_support import require_triton

require_triton()


def _compile(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "compile.json"
    # The interpreter compiles nothing: the script runs without it.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    proc = subprocess.run([sys.executable, "scripts/compile_triton_kernels.py", *args,
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, json.loads(out.read_text())


def test_every_variant_compiles_for_an_nvidia_gpu_without_spills(tmp_path):
    """Ampere (sm_80): the hash grid for d 2/3, F 1/2/4/8, three interpolations, forward and
    both gradients at two batch sizes; the marcher's two passes; compositing both ways."""
    _, result = _compile(tmp_path, "--targets", "sm_80")
    (target,) = result["targets"]
    assert target["failed"] == 0
    # 2 d x 4 F x 3 interpolations x 2 sizes x (forward, table gradient) + the input
    # gradient without Nearest (2 x 4 x 2 x 2) + 2 sizes x (2 marcher passes + 2 x 2
    # compositing launches), less the marcher's second size: its ray count is not
    # specialised on, so those launches reuse the first size's kernels.
    launches = 96 + 32 + 12
    assert len(target["variants"]) == launches
    assert [v["kernel"] for v in target["variants"] if v.get("reused")] == ["_march_kernel"] * 2
    assert target["compiled"] == launches - 2
    assert set(target["kernels"]) == set(result["engine_kernels"]) == {
        "_table_kernel", "_input_grad_kernel", "_march_kernel", "_composite_kernel",
        "_composite_backward_kernel"}
    assert target["spilling"] == []
    for v in target["variants"]:
        # A cubin's own resource table: registers within a thread's 255, no local memory.
        assert v.get("reused") or (0 < v["registers"] <= 255 and v["spills"] == 0), v
    forwards = {(v["constexprs"]["D"], v["constexprs"]["F"], v["constexprs"]["INTERP"])
                for v in target["variants"]
                if v["kernel"] == "_table_kernel" and not v["constexprs"]["BACKWARD"]}
    assert forwards == {(d, f, i) for d in (2, 3) for f in (1, 2, 4, 8) for i in (0, 1, 2)}


def test_the_nerf_variants_compile_for_amd_and_blackwell_gpus(tmp_path):
    """The NeRF's variants (d=3, F=2, Linear) for AMD MI300 (gfx942), RDNA3 (gfx1100) and
    Blackwell consumer cards (sm_120, their own ptxas)."""
    proc, result = _compile(tmp_path, "--quick", "--targets", "gfx942,gfx1100,sm_120")
    assert [t["target"] for t in result["targets"]] == ["gfx942", "gfx1100", "sm_120"]
    for target in result["targets"]:
        assert target["failed"] == 0 and target["compiled"] == 6 + 12 - 2, target["target"]
        assert set(target["kernels"]) == set(result["engine_kernels"])
        assert target["spilling"] == []
        assert all(v.get("reused") or v["registers"] > 0 for v in target["variants"])
    assert "gfx942: 16 compiled, 0 failed, 0 spilling" in proc.stdout
