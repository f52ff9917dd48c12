"""The Triton ray marcher and compositing kernels against the references (numba marcher,
torch sums and autograd), run by Triton's interpreter on CPU tensors here (conftest.py
sets TRITON_INTERPRET=1), compiled on a GPU machine."""
from __future__ import annotations

import pytest
import torch

from ngp_engine.render.ray_marching import march_rays, marcher_for, step_bounds
from ngp_engine.render.rays import ray_box_intersect
from ngp_engine.render.volume_rendering import composite, compositor_for
from test_render import _check_packing, _grid, _packed_samples, _random_rays
from triton_support import DEVICE, require_triton

require_triton()

CPU = torch.device("cpu")
N_RAYS = 300


def _small_blocks(monkeypatch):
    """Blocks of 128 rays (a GPU's size) in the interpreter too: 300 rays make two full
    programs and a partial one."""
    from ngp_engine.render import _triton_compositing, _triton_marching

    for mod in (_triton_marching, _triton_compositing):
        monkeypatch.setattr(mod, "INTERPRETER_BLOCK", 128)
        assert N_RAYS % mod.block_size(N_RAYS) != 0 and N_RAYS > mod.block_size(N_RAYS)


def _marching_case(case: str, gen: torch.Generator):
    """Rays, box distances, an occupancy grid with a random pattern and the marching
    parameters (steps_per_diagonal 256 keeps the interpreter's loop short)."""
    aabb, n_casc, cone = (4.0, 3, 1 / 64) if case in ("cone_3cascades", "jitter") else (1.0, 1, 0.0)
    r = 16
    grid = _grid(r, n_casc)
    grid.occupied = torch.rand(n_casc, r ** 3, generator=gen) < 0.3
    o, d = _random_rays(N_RAYS, aabb, gen)
    half = aabb / 2
    t_near, t_far = ray_box_intersect(o, d, torch.full((3,), 0.5 - half), torch.full((3,), 0.5 + half))
    min_step, max_step = step_bounds(256, n_casc, r)
    max_samples = {"capped": 12, "one_sample": 1}.get(case, 1024)
    jitter = torch.rand(N_RAYS, generator=gen) if case in ("jitter", "capped") else None
    return o, d, t_near, t_far, grid, min_step, max_step, cone, max_samples, jitter


@pytest.mark.parametrize("case", ["cone0_1cascade", "cone_3cascades", "jitter", "capped", "one_sample"])
def test_triton_marcher_gives_the_reference_samples(case, monkeypatch):
    _small_blocks(monkeypatch)
    gen = torch.Generator().manual_seed(7 + len(case))
    o, d, t_near, t_far, grid, *rest = _marching_case(case, gen)
    ref = march_rays(o, d, t_near, t_far, grid, *rest, backend="cpu")
    grid.occupied = grid.occupied.to(DEVICE)
    tri = march_rays(*(v.to(DEVICE) for v in (o, d, t_near, t_far)), grid, *rest[:-1],
                     None if rest[-1] is None else rest[-1].to(DEVICE), backend="triton")
    assert tri.t.device.type == DEVICE.type
    assert tri.t.dtype == tri.dt.dtype == torch.float32 and tri.ray_idx.dtype == torch.int64
    assert torch.equal(tri.offsets.cpu(), ref.offsets)
    assert torch.equal(tri.ray_idx.cpu(), ref.ray_idx)
    # Bit for bit on a GPU too: the marcher is compiled without fused multiply-adds.
    assert torch.equal(tri.t.cpu(), ref.t) and torch.equal(tri.dt.cpu(), ref.dt)
    _check_packing(ref, N_RAYS, rest[-2])
    counts = ref.offsets.diff()
    assert ref.n_samples > 150 and (counts == 0).any()      # real work, and rays that miss
    if case in ("capped", "one_sample"):
        assert int(counts.max()) == rest[-2] and (counts == rest[-2]).sum() > 10


@pytest.mark.parametrize("room", ["ample", "exact", "cut", "boundary", "none"])
def test_triton_marcher_with_a_capacity_reads_nothing_back(room, monkeypatch):
    # The GPU's training march: buffers of exactly `capacity` entries, whole rays in order
    # while they fit, padding t = dt = 0 on the last ray: the reference marcher's samples
    # cut by `fit_capacity`, bit for bit in the interpreter, with no read to the host.
    from ngp_engine.host_syncs import HostSyncs
    from ngp_engine.render.ray_marching import fit_capacity

    _small_blocks(monkeypatch)
    gen = torch.Generator().manual_seed(21)
    o, d, t_near, t_far, grid, *rest = _marching_case("jitter", gen)
    full = march_rays(o, d, t_near, t_far, grid, *rest, backend="cpu")
    first = int(full.offsets.diff().nonzero()[0])               # the first ray with samples
    capacity = {"ample": full.n_samples + 77, "exact": full.n_samples, "cut": full.n_samples // 2,
                "boundary": int(full.offsets[N_RAYS // 2]),
                "none": int(full.offsets[first + 1]) - 1}[room]
    ref = fit_capacity(full, capacity)
    grid.occupied = grid.occupied.to(DEVICE)
    args = [v.to(DEVICE) for v in (o, d, t_near, t_far)]
    with HostSyncs() as syncs:
        tri = march_rays(*args, grid, *rest[:-1], rest[-1].to(DEVICE), backend="triton",
                         capacity=capacity)
    assert syncs.total == 0, syncs.report()
    with HostSyncs() as syncs:          # without a capacity the total is read: it is seen
        march_rays(*args, grid, *rest[:-1], rest[-1].to(DEVICE), backend="triton")
    assert syncs.total == 1, syncs.report()
    assert tri.n_samples == capacity
    for name in ("offsets", "ray_idx", "fits", "demand"):
        assert torch.equal(getattr(tri, name).cpu(), getattr(ref, name)), name
    assert torch.equal(tri.t.cpu(), ref.t) and torch.equal(tri.dt.cpu(), ref.dt)
    k = int(ref.fits.sum())
    n = int(ref.count)
    assert int(ref.demand) == full.n_samples and (ref.t[n:] == 0).all() and (ref.dt[n:] == 0).all()
    if room in ("ample", "exact"):
        assert k == N_RAYS and n == full.n_samples
    elif room == "none":
        assert k == first and n == 0
    else:
        assert 50 < k < N_RAYS - 50 and n == int(full.offsets[k]) <= capacity
        assert torch.equal(ref.t[:n], full.t[:n])
        if room == "boundary":
            assert k >= N_RAYS // 2 and n == capacity


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the pinned-memory path needs CUDA")
def test_lagged_reads_on_cuda_come_back_without_waiting():
    # On CUDA the values go to pinned memory with an event: read two pushes later they are
    # the values pushed, in order, even while later work is queued.
    from ngp_engine.device import LaggedReads

    dev = torch.device("cuda")
    reads = LaggedReads(dev)
    assert reads.lag == 2
    big = torch.randn(4096, 4096, device=dev)
    got = []
    for step in range(6):
        value = (big @ big).sum() * 0 + step                 # queued behind a matrix product
        reads.push(torch.stack([value.long(), torch.tensor(step * 3, device=dev)]), step)
        got += reads.ready()
    assert got == [(s, [s, 3 * s]) for s in range(4)]


def test_triton_marcher_with_nothing_to_march():
    gen = torch.Generator().manual_seed(3)
    o, d, t_near, t_far, grid, *rest = _marching_case("cone0_1cascade", gen)
    grid.occupied = torch.zeros_like(grid.occupied).to(DEVICE)     # all empty
    args = [v.to(DEVICE) for v in (o, d, t_near, t_far)]
    s = march_rays(*args, grid, *rest, backend="triton")
    assert s.n_samples == 0 and s.offsets.tolist() == [0] * (N_RAYS + 1)
    s = march_rays(*(v[:0] for v in args), grid, *rest, backend="triton")      # no rays
    assert s.n_samples == 0 and s.offsets.tolist() == [0]


@pytest.mark.parametrize("with_prefix", [False, True])
def test_triton_compositing_and_its_backward_match_torch(with_prefix, monkeypatch):
    _small_blocks(monkeypatch)
    gen = torch.Generator().manual_seed(11)
    sigma, rgb, t, dt, ray_idx, offsets = _packed_samples(gen, N_RAYS)
    prefix = torch.rand(N_RAYS, generator=gen) if with_prefix else None
    # A loss touching every output: colour, opacity (non-linearly) and depth.
    g_rgb = torch.randn(N_RAYS, 3, generator=gen)
    g_depth = torch.randn(N_RAYS, generator=gen)
    results = {}
    for backend, dev in (("torch", CPU), ("triton", DEVICE)):
        sg = sigma.to(dev).requires_grad_()
        cg = rgb.to(dev).requires_grad_()
        c = composite(sg, cg, t.to(dev), dt.to(dev), ray_idx.to(dev), offsets.to(dev), N_RAYS,
                      prefix_trans=None if prefix is None else prefix.to(dev),
                      want_transmittance=True, backend=backend)
        loss = ((c.rgb * g_rgb.to(dev)).sum() + (c.opacity ** 2).sum()
                + (c.depth * g_depth.to(dev)).sum())
        loss.backward()
        results[backend] = [v.detach().cpu() for v in (c.opacity, c.rgb, c.depth, c.transmittance,
                                                        sg.grad, cg.grad)]
    ref, tri = results["torch"], results["triton"]
    for name, a, b in zip(("opacity", "rgb", "depth", "transmittance", "d_sigma", "d_rgb"), ref, tri):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=2e-6, msg=name)
    opacity = ref[0] if prefix is None else ref[0] / prefix           # of this window's samples
    assert (opacity > 0.999).sum() > 10 and (opacity[:5] == 0).all()   # saturated and empty rays
    assert ref[4].abs().max() > 1e-3 and ref[5].abs().max() > 1e-2       # gradients are not zero


def test_triton_compositing_without_samples():
    offsets = torch.zeros(4, dtype=torch.int64, device=DEVICE)
    empty = torch.zeros(0, device=DEVICE)
    sigma = empty.clone().requires_grad_()
    c = composite(sigma, torch.zeros(0, 3, device=DEVICE), empty, empty,
                  torch.zeros(0, dtype=torch.int64, device=DEVICE), offsets, 3,
                  want_transmittance=True, backend="triton")
    assert c.opacity.tolist() == [0.0] * 3 and c.transmittance.tolist() == [1.0] * 3
    c.opacity.sum().backward()
    assert sigma.grad.shape == (0,)


def test_auto_picks_the_triton_kernels_on_gpus_only():
    assert marcher_for(CPU) == "cpu" and compositor_for(CPU) == "cpu"      # numba on the CPU
    assert compositor_for(CPU, "torch") == "torch"
    assert marcher_for(torch.device("mps")) == "torch" and compositor_for(torch.device("mps")) == "torch"
    if torch.cuda.is_available():
        assert marcher_for(torch.device("cuda")) == "triton"
        assert compositor_for(torch.device("cuda")) == "triton"
    with pytest.raises(ValueError, match="marching backend: 'numba'"):
        marcher_for(CPU, "numba")
