"""The Triton hash-grid kernels against the PyTorch reference, run on the CPU by Triton's
interpreter (conftest.py sets TRITON_INTERPRET=1 before anything imports triton): outputs,
table gradients and input gradients, then NeRF and SDF training steps end to end."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from ngp_engine import config as cfgmod
from ngp_engine.config import HashGridConfig
from ngp_engine.encoding import backends
from ngp_engine.encoding.hash_grid import HashGrid
from test_hash_grid_backends import CASES as KERNEL_CASES
from test_hash_grid_backends import _pair as kernel_pair
from triton_support import DEVICE, require_triton

require_triton()

CPU = torch.device("cpu")
# The CPU kernel's cases (dense and hashed levels, every F, tiny and large tables, the three
# interpolations) and instant-ngp's NeRF grid.
CASES = KERNEL_CASES + [(3, 16, 2, 19, 16, 1.3819, "Linear")]


def test_triton_runs_here_compiled_on_a_gpu_or_in_the_interpreter():
    assert DEVICE.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
    assert backends.resolve("triton", DEVICE) == "triton"


def _pair(*case):
    """The reference and the triton backend on one case, same table, on DEVICE."""
    ref, tri = kernel_pair(*case, backend="triton")
    return ref.to(DEVICE), tri.to(DEVICE)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "d{}-L{}-F{}-T{}-{}".format(c[0], c[1], c[2], c[3], c[6]))
def test_triton_kernel_matches_reference(case, monkeypatch):
    from ngp_engine.encoding import _triton_kernel

    # 5000 points in blocks of 1024 (the interpreter's) or 128 (a GPU's): several programs
    # per level and a last, partial block.
    monkeypatch.setattr(_triton_kernel, "INTERPRETER_BLOCK", 1024)
    assert 5000 % _triton_kernel.block_size(5000) != 0 and 5000 > _triton_kernel.block_size(5000)
    ref, tri = _pair(*case)
    d = case[0]
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(5000, d, generator=gen)
    x[:4] = torch.tensor([0.0, 1.0, 0.5, 1.0 - 1e-7])[:, None]   # faces and the far corner
    x[4:8] = torch.tensor([-0.3, 1.7, -1e-3, 2.5])[:, None]        # outside: indices wrap
    x = x.to(DEVICE)
    xr, xt = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, yt = ref(xr), tri(xt)
    assert yt.shape == yr.shape == (5000, case[1] * case[2])
    torch.testing.assert_close(yt, yr, rtol=0, atol=2e-6)
    dy = torch.randn(yr.shape, generator=gen).to(DEVICE)
    (yr * dy).sum().backward()
    (yt * dy).sum().backward()
    scale = ref.params.grad.abs().max().item()
    # Atomic adds in another order than the reference's scatter: float rounding only.
    torch.testing.assert_close(tri.params.grad, ref.params.grad, rtol=0, atol=1e-5 * max(scale, 1))
    assert torch.equal(tri.params.grad != 0, ref.params.grad != 0)   # the same entries touched
    if case[6] == "Nearest":
        assert xr.grad is None or torch.all(xr.grad == 0)
        assert torch.all(xt.grad == 0)
    else:
        gscale = xr.grad.abs().max().item()
        assert gscale > 0
        torch.testing.assert_close(xt.grad, xr.grad, rtol=0, atol=1e-5 * max(gscale, 1))


def test_empty_batch_and_double_backward_refused():
    ref, tri = _pair(3, 3, 2, 10, 4, 2.0, "Linear")
    assert tri(torch.zeros(0, 3, device=DEVICE)).shape == (0, 6)
    x = torch.rand(10, 3, device=DEVICE, requires_grad=True)
    (g,) = torch.autograd.grad(tri(x).sum(), x)          # first derivatives: fine
    assert g.shape == (10, 3) and g.abs().sum() > 0
    with pytest.raises(RuntimeError, match="no second derivatives"):
        torch.autograd.grad(tri(x).sum(), x, create_graph=True)


def test_backend_choice():
    # auto on the CPU keeps the numba kernel (the interpreter is for tests, not speed);
    # triton is asked for by name.
    assert backends.resolve("auto", CPU) == "cpu"
    assert "triton" not in backends.available(CPU)
    if DEVICE.type == "cuda":
        assert backends.available(DEVICE)[:2] == ["torch", "triton"]
        expected = "tcnn" if "tcnn" in backends.available(DEVICE) else "triton"
        assert backends.resolve("auto", DEVICE) == expected
    with pytest.raises(backends.BackendUnavailable, match="2-D and 3-D"):
        backends.resolve("triton", CPU, n_input_dims=4)


@pytest.mark.parametrize("value,on", [("1", True), ("true", True), ("On", True), ("yes", True),
                                      ("0", False), ("off", False), ("", False)])
def test_the_interpreter_switch_is_read_as_triton_reads_it(value, on, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", value)
    assert backends.triton_interpreted() is on


def test_triton_off_the_interpreter_on_the_cpu_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(backends.BackendUnavailable, match="TRITON_INTERPRET=1"):
        backends.resolve("triton", CPU)


def _table_update_agrees(ref_update: torch.Tensor, tri_update: torch.Tensor) -> None:
    """Training moved the table, and the same way: the backward reached every level."""
    assert tri_update.abs().max() > 1e-3
    cos = float(ref_update @ tri_update / (ref_update.norm() * tri_update.norm()))
    assert cos > 0.99, cos


def _nerf_run(scene, backend: str, steps: int) -> tuple[list[float], torch.Tensor]:
    from ngp_engine.config import NERF_PRESETS, OccupancyGridConfig, replace
    from ngp_engine.data.transforms import load_nerf_dataset
    from ngp_engine.tasks.nerf.task import NerfTask

    # Small enough for the interpreter (~8 s a step): 4096 samples, a 16^3 occupancy grid.
    # float32 MLPs, as auto gives on a GPU (on a CPU with bfloat16 units auto would round the
    # products, and the kernels' float rounding differences with them).
    cfg = replace(NERF_PRESETS["cpu-fast"], backend=backend, mlp_precision="float32",
                  target_batch_samples=1 << 12,
                  initial_rays=256, occupancy=OccupancyGridConfig(resolution=16),
                  encoding=HashGridConfig(n_levels=8, n_features_per_level=2,
                                          log2_hashmap_size=15, base_resolution=16,
                                          max_resolution=256))
    task = NerfTask(load_nerf_dataset(scene, "train"), cfg, DEVICE)
    assert task.model.field.encoding.backend_for(DEVICE) == backend
    start = task.model.field.encoding.params.detach().clone()
    losses = [task.step().resolved().loss for _ in range(steps)]
    return losses, (task.model.field.encoding.params.detach() - start).cpu()


def test_nerf_training_steps_match_the_reference_backend(nerf_scene):
    # backend="triton" runs every Triton kernel of a step: the hash grid, the marcher and
    # the compositing with its backward (the reference: torch grid and sums, numba marcher).
    ref, ref_update = _nerf_run(nerf_scene, "torch", 3)
    tri, tri_update = _nerf_run(nerf_scene, "triton", 3)
    # Same seed, same rays, the same table up to float summation order.
    np.testing.assert_allclose(tri, ref, rtol=1e-3)
    _table_update_agrees(ref_update, tri_update)


def _gpu_path_task(scene, target_samples: int = 1 << 10, max_per_ray: int = 48):
    """A NerfTask on the Triton kernels, tiny enough for the interpreter (a few seconds a
    step), reading its demand back two steps late as on a GPU."""
    from ngp_engine.config import NERF_PRESETS, OccupancyGridConfig, replace
    from ngp_engine.data.transforms import load_nerf_dataset
    from ngp_engine.device import LaggedReads
    from ngp_engine.tasks.nerf.task import NerfTask

    # float32 MLPs: what auto gives on a GPU, whose path this task stands in for.
    cfg = replace(NERF_PRESETS["cpu-fast"], backend="triton", mlp_precision="float32",
                  target_batch_samples=target_samples,
                  initial_rays=64, occupancy=OccupancyGridConfig(resolution=16),
                  marching=replace(NERF_PRESETS["cpu-fast"].marching, max_samples_per_ray=max_per_ray),
                  encoding=HashGridConfig(n_levels=4, n_features_per_level=2,
                                          log2_hashmap_size=12, base_resolution=8,
                                          max_resolution=64))
    task = NerfTask(load_nerf_dataset(scene, "train", max_image_size=20), cfg, DEVICE)
    assert task.model.reads_nothing_back
    task.reads = LaggedReads(DEVICE, lag=2)
    return task


def test_a_gpu_training_step_reads_nothing_back(nerf_scene, monkeypatch):
    # Where the Triton marcher runs (GPUs; here the interpreter on CPU tensors) a NeRF step
    # uses fixed-size buffers: no operation of the step waits for the device (a value read
    # back, a boolean mask, a data-sized output, a tensor made from host values), except
    # the LaggedReads of the demand of the step two steps back (on a GPU long done: the
    # read finds it ready). The MLPs' backward and the tables' Adam take their GPU paths
    # (torch code, not the CPU kernels).
    from ngp_engine.host_syncs import HostSyncs
    from ngp_engine.nn import optim
    from ngp_engine.nn.mlp import MLP

    monkeypatch.setattr(MLP, "hand_backward", False)
    monkeypatch.setattr(optim, "_kernel_applies", lambda p: False)
    task = _gpu_path_task(nerf_scene)
    for _ in range(3):          # the occupancy update, then buffers sized by reading counts
        task.step()
    assert task.capacity.marched is not None      # step 1's demand has arrived
    start = task.model.field.encoding.params.detach().clone()
    with HostSyncs() as syncs:
        p = task.step()
    waits = {k: n for k, n in syncs.counts.items() if k[1:] != ("device.py", k[2], "ready")}
    assert not waits, syncs.report()
    assert sum(syncs.counts.values()) == 1        # the one late read
    p = p.resolved()
    assert np.isfinite(p.loss) and 1 < p.samples_per_ray <= 48
    assert (task.model.field.encoding.params.detach() != start).any()      # it trained


def test_a_gpu_path_run_resumes_exactly(nerf_scene, tmp_path):
    # The demand not read yet and the buffer sizes travel in the checkpoint: 3 + 3 steps
    # through a checkpoint give the 6 steps' state (ray counts and sizes included). At most
    # 12 samples per ray against a target of 4096: the ray count is still adapting.
    from ngp_engine.files import save_torch
    from ngp_engine.tasks.nerf.task import NerfTask
    from test_nerf import assert_identical

    one_go = _gpu_path_task(nerf_scene, 1 << 12, 12)
    counts = []
    for _ in range(6):
        one_go.train(steps=1)
        counts.append(one_go.n_rays)
    assert len(set(counts[2:])) >= 3, counts                # adapting from step 3 on
    first = _gpu_path_task(nerf_scene, 1 << 12, 12)
    first.train(steps=3)
    assert len(first.reads.pending()) == 2
    save_torch(tmp_path / "half.pt", first.state_dict())
    second = _gpu_path_task(nerf_scene, 1 << 12, 12)
    second.load_state_dict(NerfTask.read_checkpoint(tmp_path / "half.pt"))
    saved, loaded = first.state_dict(), second.state_dict()
    del saved["seconds"], loaded["seconds"]
    assert_identical(loaded, saved)              # the checkpoint itself, on every device
    second.train(steps=3)
    assert second.steps_done == 6 and len(second.reads.pending()) == 2
    if DEVICE.type == "cuda":
        # Float atomics (the table gradient, index_add's backward) sum in another order on
        # every GPU run: two runs differ in their last bits and, through the occupancy grid
        # and the adaptive ray count, soon in their sizes. Only the interpreter's runs are
        # bit-reproducible.
        return
    assert second.capacity == one_go.capacity and second.n_rays == one_go.n_rays
    expected, resumed = one_go.state_dict(), second.state_dict()
    del expected["seconds"], resumed["seconds"]
    assert_identical(resumed, expected)


def test_sdf_training_steps_match_the_reference_backend(tmp_path, monkeypatch):
    # ... and on the GPU paths (Adam's torch code) an SDF step waits for nothing either
    # (after the first, which builds the ground-truth pool).
    from ngp_engine.config import SdfConfig
    from ngp_engine.data.mesh import load_sdf_mesh
    from ngp_engine.host_syncs import HostSyncs
    from ngp_engine.mesh.io import write_ply
    from ngp_engine.nn import optim
    from ngp_engine.tasks.sdf.task import SdfTask
    from test_sdf import icosphere

    monkeypatch.setattr(optim, "_kernel_applies", lambda p: False)

    v, f = icosphere(0.5, 3)
    write_ply(tmp_path / "sphere.ply", v, f)
    mesh = load_sdf_mesh(tmp_path / "sphere.ply")
    runs = {}
    for backend in ("torch", "triton"):
        cfg = SdfConfig(encoding=HashGridConfig(n_levels=6, n_features_per_level=2,
                                                log2_hashmap_size=14, base_resolution=8,
                                                max_resolution=128),
                        optimizer=cfgmod.AdamConfig(learning_rate=1e-2), backend=backend,
                        batch_size=1 << 12, ground_truth_pool=1 << 15,
                        mlp_precision="float32")     # auto's choice on a GPU (see _nerf_run)
        task = SdfTask(mesh, cfg, DEVICE)
        start = task.model.encoding.params.detach().clone()
        steps = [task.step()]                   # (the first builds the ground-truth pool)
        with HostSyncs() as syncs:
            steps += [task.step() for _ in range(5)]
        assert syncs.total == 0, syncs.report()
        losses = [p.resolved().loss for p in steps]
        runs[backend] = losses, (task.model.encoding.params.detach() - start).cpu()
    np.testing.assert_allclose(runs["triton"][0], runs["torch"][0], rtol=1e-3)
    _table_update_agrees(runs["torch"][1], runs["triton"][1])
