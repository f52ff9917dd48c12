"""NeRF rendering: volume rendering, rays, cameras, occupancy grid, ray marching, render_rays.

Numbers are worked by hand in the comments; no mocks. The marcher's two backends (numba and
torch reference) must produce bit-identical samples.
"""
from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from ngp_engine.config import OccupancyGridConfig
from ngp_engine.formats.camera import Camera
from ngp_engine.render.occupancy_grid import BLOCK, OccupancyGrid, cascade_of, cell_of
from ngp_engine.render.ray_marching import RaySamples, march_rays, step_bounds
from ngp_engine.render.rays import camera_rays, pixel_grid, ray_box_intersect
from ngp_engine.render.renderer import MarchSettings, render_rays
from ngp_engine.render.volume_rendering import (accumulate, composite, compositor_for,
                                                  render_weights, transmittance)

from conftest import ROOT

CPU = torch.device("cpu")
MIN_STEP = math.sqrt(3.0) / 1024          # instant-ngp's NERF_STEPS = 1024: 0.00169145586...
E = math.exp


def _offsets(counts: list[int]) -> torch.Tensor:
    return torch.tensor([0, *np.cumsum(counts).tolist()], dtype=torch.int64)


def _ray_idx(counts: list[int]) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))


def _grid(resolution: int = 8, n_cascades: int = 1, min_step: float = MIN_STEP, **cfg) -> OccupancyGrid:
    return OccupancyGrid(OccupancyGridConfig(resolution=resolution, **cfg), n_cascades, min_step, CPU)


# =====================================================================================
# 1. Volume rendering
# =====================================================================================
# Ray A: sigma = [1, 2, 0.5], dt = [0.5, 0.25, 1]  ->  sigma*dt = [0.5, 0.5, 0.5]
#   T     = [1, e^-0.5, e^-1]          = [1, 0.6065306597, 0.3678794412]
#   alpha = 1 - e^-0.5 (each)          = 0.3934693403
#   w     = T * alpha                  = [0.3934693403, 0.2386512185, 0.1447492810]
#   opacity = sum w = 1 - e^-1.5       = 0.7768698399
#   with t = [1, 1.5, 2]: depth = sum w t = 0.3934693403 + 0.3579768278 + 0.2894985620
#                                         = 1.0409447301
# Ray B: sigma = [4, 1], dt = [0.25, 0.5]  ->  sigma*dt = [1, 0.5]
#   T = [1, e^-1], w = [1 - e^-1, e^-1 (1 - e^-0.5)] = [0.6321205588, 0.1447492810]
SIGMA_A, DT_A, T_A = [1.0, 2.0, 0.5], [0.5, 0.25, 1.0], [1.0, 1.5, 2.0]
SIGMA_B, DT_B, T_B = [4.0, 1.0], [0.25, 0.5], [0.5, 0.75]


def _packed_samples(gen: torch.Generator, n_rays: int = 300):
    """n_rays rays of 0..40 samples (some with none), sigma up to 30 so that some rays saturate."""
    counts = torch.randint(0, 41, (n_rays,), generator=gen)
    counts[:5] = 0
    offsets = torch.zeros(n_rays + 1, dtype=torch.int64)
    offsets[1:] = counts.cumsum(0)
    s = int(offsets[-1])
    ray_idx = torch.repeat_interleave(torch.arange(n_rays), counts)
    dt = torch.rand(s, generator=gen) * 0.05 + 0.01
    t = torch.cumsum(dt, 0)          # increasing along each ray (distances need not restart)
    sigma = torch.rand(s, generator=gen) ** 3 * 30.0
    rgb = torch.rand(s, 3, generator=gen)
    return sigma, rgb, t, dt, ray_idx, offsets


@pytest.mark.parametrize("with_prefix", [False, True])
def test_cpu_compositing_and_its_backward_match_torch(with_prefix):
    """The numba kernels (`_cpu_compositing.py`, what "auto" runs on the CPU) against the
    torch sums and autograd: outputs, transmittance, and the gradients of sigma and rgb."""
    gen = torch.Generator().manual_seed(11)
    sigma, rgb, t, dt, ray_idx, offsets = _packed_samples(gen)
    n = offsets.numel() - 1
    prefix = torch.rand(n, generator=gen) if with_prefix else None
    g_rgb, g_depth = torch.randn(n, 3, generator=gen), torch.randn(n, generator=gen)
    results = {}
    for backend in ("torch", "auto"):
        sg, cg = sigma.clone().requires_grad_(), rgb.clone().requires_grad_()
        c = composite(sg, cg, t, dt, ray_idx, offsets, n, prefix_trans=prefix,
                      want_transmittance=True, backend=backend)
        ((c.rgb * g_rgb).sum() + (c.opacity ** 2).sum() + (c.depth * g_depth).sum()).backward()
        results[backend] = [c.opacity, c.rgb, c.depth, c.transmittance, sg.grad, cg.grad]
        if backend == "auto":
            assert type(c.opacity.grad_fn).__name__ == "_CompositeBackward"   # the kernel ran
    for name, a, b in zip(("opacity", "rgb", "depth", "transmittance"), results["torch"],
                          results["auto"]):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-5, atol=2e-6, msg=name)
    # The gradients against the float64 reference: the kernel's are at least as exact as the
    # float32 reference's (d_sigma is a difference of sums as large as g_depth * t, t <= 200).
    sg, cg = sigma.double().requires_grad_(), rgb.double().requires_grad_()
    c = composite(sg, cg, t.double(), dt.double(), ray_idx, offsets, n,
                  prefix_trans=None if prefix is None else prefix.double(), backend="torch")
    ((c.rgb * g_rgb.double()).sum() + (c.opacity ** 2).sum() + (c.depth * g_depth.double()).sum()
     ).backward()
    for exact, ref32, got in ((sg.grad, results["torch"][4], results["auto"][4]),
                              (cg.grad, results["torch"][5], results["auto"][5])):
        assert (got.double() - exact).abs().max() <= max((ref32.double() - exact).abs().max(), 1e-7)
    ref = results["torch"]
    opacity = ref[0] if prefix is None else ref[0] / prefix
    assert (opacity > 0.999).sum() > 10 and (opacity[:5] == 0).all()    # saturated and empty rays
    assert ref[4].abs().max() > 1e-3 and ref[5].abs().max() > 1e-2      # gradients are not zero
    # Only some outputs in the loss (the others' gradients are None): colour alone.
    sg = sigma.clone().requires_grad_()
    composite(sg, rgb, t, dt, ray_idx, offsets, n, backend="auto").rgb.sum().backward()
    sr = sigma.clone().requires_grad_()
    composite(sr, rgb, t, dt, ray_idx, offsets, n, backend="torch").rgb.sum().backward()
    torch.testing.assert_close(sg.grad, sr.grad, rtol=1e-5, atol=1e-5)


def test_cpu_compositing_without_samples():
    offsets = torch.zeros(4, dtype=torch.int64)
    sigma = torch.zeros(0, requires_grad=True)
    c = composite(sigma, torch.zeros(0, 3), torch.zeros(0), torch.zeros(0),
                  torch.zeros(0, dtype=torch.int64), offsets, 3, want_transmittance=True,
                  backend="cpu")
    assert c.opacity.tolist() == [0.0] * 3 and c.transmittance.tolist() == [1.0] * 3
    c.opacity.sum().backward()
    assert sigma.grad.shape == (0,)


def test_cpu_sample_positions_are_the_torch_arithmetic_bit_for_bit():
    """The numba positions (`_cpu_windows.positions`, what the CPU renderer uses) equal
    o[ray] + t * d[ray] computed by torch exactly, far cameras included."""
    from ngp_engine.render import _cpu_windows

    gen = torch.Generator().manual_seed(4)
    o = (torch.rand(50, 3, generator=gen) - 0.5) * torch.logspace(0, 3, 50)[:, None]
    d = torch.nn.functional.normalize(torch.randn(50, 3, generator=gen), dim=1)
    ray_idx = torch.randint(0, 50, (4000,), generator=gen)
    t = torch.rand(4000, generator=gen) * 2000.0
    assert torch.equal(_cpu_windows.positions(o, d, ray_idx, t), o[ray_idx] + t[:, None] * d[ray_idx])


def test_one_ray_hand_worked_weights_opacity_depth():
    sigma, dt, t = torch.tensor(SIGMA_A), torch.tensor(DT_A), torch.tensor(T_A)
    ray_idx, offsets = _ray_idx([3]), _offsets([3])
    w, trans = render_weights(sigma, dt, ray_idx, offsets)
    torch.testing.assert_close(trans, torch.tensor([1.0, 0.6065306597, 0.3678794412]))
    torch.testing.assert_close(w, torch.tensor([0.3934693403, 0.2386512185, 0.1447492810]))
    torch.testing.assert_close(transmittance(sigma * dt, ray_idx, offsets), trans)
    opacity = accumulate(w, None, ray_idx, 1)
    # With a bound on the samples per ray (the windowed search's window) nothing is read
    # back from the device, and a loose bound gives the same result.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.Tensor, "__int__", lambda self: pytest.fail("read back"))
        torch.testing.assert_close(transmittance(sigma * dt, ray_idx, offsets, 8), trans,
                                   rtol=0, atol=0)
    torch.testing.assert_close(opacity, torch.tensor([1.0 - E(-1.5)]))          # 0.7768698399
    depth = accumulate(w, t, ray_idx, 1)
    torch.testing.assert_close(depth, torch.tensor([1.0409447301]))
    # A pure red / green / blue sample each: the composited colour is the weights themselves.
    rgb = accumulate(w, torch.eye(3), ray_idx, 1)
    torch.testing.assert_close(rgb, w[None, :])


def test_packed_rays_do_not_leak():
    # Ray A, then a ray with no samples, then ray B; and a first ray so opaque (sigma*dt = 1000)
    # that any float32 leak of its optical depth into the next ray would zero that ray out.
    sigma = torch.tensor(SIGMA_A + SIGMA_B)
    dt = torch.tensor(DT_A + DT_B)
    counts = [3, 0, 2]
    ray_idx, offsets = _ray_idx(counts), _offsets(counts)
    w, trans = render_weights(sigma, dt, ray_idx, offsets)
    assert trans[3].item() == 1.0                         # ray B's first T is exactly 1
    torch.testing.assert_close(trans[3:], torch.tensor([1.0, E(-1.0)]))
    torch.testing.assert_close(w[3:], torch.tensor([0.6321205588, 0.1447492810]))
    torch.testing.assert_close(w[:3], torch.tensor([0.3934693403, 0.2386512185, 0.1447492810]))
    opacity = accumulate(w, None, ray_idx, 3)
    torch.testing.assert_close(opacity, torch.tensor([1 - E(-1.5), 0.0, 1 - E(-1.5)]))
    assert opacity[1].item() == 0.0                       # the empty ray gets nothing

    opaque = torch.tensor([1000.0, 1000.0, 3.0, 1.0])     # ray 0: sigma*dt = [1000, 1000]
    counts = [2, 2]
    w2, trans2 = render_weights(opaque, torch.ones(4), _ray_idx(counts), _offsets(counts))
    assert trans2[2].item() == 1.0
    torch.testing.assert_close(trans2[3], torch.tensor(E(-3.0)))
    torch.testing.assert_close(w2[2:], torch.tensor([1 - E(-3.0), E(-3.0) * (1 - E(-1.0))]))


def test_composite_in_windows_equals_all_at_once():
    # One ray, samples sigma = (1, 2, 4), dt = 0.5, t = (1, 1.5, 2), grey levels (0.2, 0.6, 1).
    # All at once: T = (1, e^-0.5, e^-1.5), alpha = 1 - e^(-sigma dt) = (1 - e^-0.5, 1 - e^-1,
    # 1 - e^-2), w = T alpha; transmittance behind the ray e^-3.5.
    # In two windows, (sample 0) then (samples 1, 2) with the transmittance after the first
    # window (e^-0.5) carried in as prefix_trans: the same weights, so the same sums.
    sigma, dt = torch.tensor([1.0, 2.0, 4.0]), torch.full((3,), 0.5)
    t, grey = torch.tensor([1.0, 1.5, 2.0]), torch.tensor([0.2, 0.6, 1.0])
    rgb = grey[:, None].expand(3, 3)
    e = math.exp
    w = [1 - e(-0.5), e(-0.5) * (1 - e(-1.0)), e(-1.5) * (1 - e(-2.0))]
    whole = composite(sigma, rgb, t, dt, torch.zeros(3, dtype=torch.long), torch.tensor([0, 3]), 1,
                      want_transmittance=True)
    assert float(whole.opacity) == pytest.approx(sum(w), rel=1e-6)
    assert float(whole.depth) == pytest.approx(w[0] * 1 + w[1] * 1.5 + w[2] * 2, rel=1e-6)
    assert float(whole.rgb[0, 1]) == pytest.approx(w[0] * 0.2 + w[1] * 0.6 + w[2], rel=1e-6)
    assert float(whole.transmittance) == pytest.approx(e(-3.5), rel=1e-6)
    one = torch.zeros(1, dtype=torch.long)
    first = composite(sigma[:1], rgb[:1], t[:1], dt[:1], one, torch.tensor([0, 1]), 1,
                      want_transmittance=True)
    rest = composite(sigma[1:], rgb[1:], t[1:], dt[1:], one.expand(2), torch.tensor([0, 2]), 1,
                     prefix_trans=first.transmittance, want_transmittance=True)
    for name in ("opacity", "depth", "rgb"):
        torch.testing.assert_close(getattr(first, name) + getattr(rest, name), getattr(whole, name))
    torch.testing.assert_close(rest.transmittance, whole.transmittance)


def test_no_samples_at_all():
    empty = torch.zeros(0)
    ray_idx = torch.zeros(0, dtype=torch.int64)
    offsets = torch.zeros(3, dtype=torch.int64)           # two rays, neither has a sample
    w, trans = render_weights(empty, empty, ray_idx, offsets)
    assert w.shape == (0,) and trans.shape == (0,)
    assert torch.equal(accumulate(w, None, ray_idx, 2), torch.zeros(2))
    assert torch.equal(accumulate(w, torch.zeros(0, 3), ray_idx, 2), torch.zeros(2, 3))


def test_gradients_match_hand_worked_and_gradcheck():
    # d opacity / d sigma_j = dt_j * exp(-sum sigma dt) = dt_j * e^-1.5
    #                       = [0.5, 0.25, 1] * 0.2231301601 = [0.1115650801, 0.0557825400, 0.2231301601]
    sigma = torch.tensor(SIGMA_A, dtype=torch.float64, requires_grad=True)
    dt = torch.tensor(DT_A, dtype=torch.float64)
    w, _ = render_weights(sigma, dt, _ray_idx([3]), _offsets([3]))
    accumulate(w, None, _ray_idx([3]), 1).sum().backward()
    torch.testing.assert_close(sigma.grad, torch.tensor([0.1115650801, 0.0557825400, 0.2231301601],
                                                        dtype=torch.float64))

    counts = [3, 0, 2]
    ray_idx, offsets = _ray_idx(counts), _offsets(counts)
    dt = torch.tensor(DT_A + DT_B, dtype=torch.float64)
    t = torch.tensor(T_A + T_B, dtype=torch.float64)
    bg = torch.tensor([0.2, 0.3, 0.4], dtype=torch.float64)

    def composite(sigma, rgb):
        w, _ = render_weights(sigma, dt, ray_idx, offsets)
        opacity = accumulate(w, None, ray_idx, 3)
        color = accumulate(w, rgb, ray_idx, 3) + (1 - opacity)[:, None] * bg
        return color, opacity, accumulate(w, t, ray_idx, 3)

    gen = torch.Generator().manual_seed(0)
    sigma = torch.tensor(SIGMA_A + SIGMA_B, dtype=torch.float64, requires_grad=True)
    rgb = torch.rand(5, 3, generator=gen, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(composite, (sigma, rgb), eps=1e-6, atol=1e-8)


# =====================================================================================
# 2. Ray / box intersection
# =====================================================================================
def _box(lo=0.0, hi=1.0):
    return torch.full((3,), lo), torch.full((3,), hi)


@pytest.mark.parametrize("origin, direction, t_near, t_far", [
    # along +x from x = -1: enters at x = 0 (t = 1), leaves at x = 1 (t = 2)
    ((-1.0, 0.5, 0.5), (1.0, 0.0, 0.0), 1.0, 2.0),
    # along -x from x = 2: same numbers mirrored
    ((2.0, 0.5, 0.5), (-1.0, 0.0, 0.0), 1.0, 2.0),
    # t is in units of |dir|: dir = (2, 0, 0) halves them
    ((-1.0, 0.5, 0.5), (2.0, 0.0, 0.0), 0.5, 1.0),
    # the main diagonal from (-1,-1,-1): corner (0,0,0) at t = sqrt3, (1,1,1) at 2 sqrt3
    ((-1.0, -1.0, -1.0), (1 / math.sqrt(3),) * 3, math.sqrt(3), 2 * math.sqrt(3)),
    # d = (0, 1, 0.5) from (0.5, -1, 0.2): y slab t in [1, 2], z slab t in [(0-0.2)/0.5,
    # (1-0.2)/0.5] = [-0.4, 1.6], x component exactly 0 inside the slab: t in [1, 1.6]
    ((0.5, -1.0, 0.2), (0.0, 1.0, 0.5), 1.0, 1.6),
    # starts inside: t_near = 0, leaves at x = 1 (t = 0.75)
    ((0.25, 0.5, 0.5), (1.0, 0.0, 0.0), 0.0, 0.75),
    # starts inside, axis-parallel in two components
    ((0.5, 0.5, 0.5), (0.0, 0.0, -1.0), 0.0, 0.5),
    # parallel to a face and on it: counts as inside (rays.py's documented choice)
    ((-1.0, 0.0, 0.5), (1.0, 0.0, 0.0), 1.0, 2.0),
])
def test_ray_box_hits(origin, direction, t_near, t_far):
    tn, tf = ray_box_intersect(torch.tensor([origin]), torch.tensor([direction]), *_box())
    assert tn.item() == pytest.approx(t_near, abs=1e-6)
    assert tf.item() == pytest.approx(t_far, abs=1e-6)
    assert tn.item() < tf.item()


@pytest.mark.parametrize("origin, direction", [
    ((-1.0, 2.0, 0.5), (1.0, 0.0, 0.0)),          # axis-parallel, outside the y slab
    ((-1.0, 0.5, -0.001), (1.0, 0.0, 0.0)),       # axis-parallel, just below the z slab
    ((-1.0, -1.0, 0.5), (1 / math.sqrt(2), -1 / math.sqrt(2), 0.0)),   # heading away diagonally
    ((2.0, 0.5, 0.5), (1.0, 0.0, 0.0)),           # box entirely behind the origin
    ((-1.0, 0.9, 0.5), (0.6, 0.8, 0.0)),          # x slab t in [1.67, 3.33], y slab [-1.125, 0.125]
    ((-2.0, 0.5, 0.5), (0.0, 0.0, 1.0)),          # parallel to x, outside, moving along z
])
def test_ray_box_misses(origin, direction):
    tn, tf = ray_box_intersect(torch.tensor([origin]), torch.tensor([direction]), *_box())
    assert tn.item() >= tf.item()
    assert tn.item() >= 0.0


def test_ray_box_batch_and_scene_box():
    # Scene box of aabb_scale 4: [-1.5, 2.5]^3. From (0.5, 0.5, -3) along +z: t in [1.5, 5.5];
    # the second ray starts at the box centre: t in [0, 2] along -x.
    o = torch.tensor([[0.5, 0.5, -3.0], [0.5, 0.5, 0.5], [5.0, 5.0, 5.0]])
    d = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    tn, tf = ray_box_intersect(o, d, *_box(-1.5, 2.5))
    torch.testing.assert_close(tn[:2], torch.tensor([1.5, 0.0]))
    torch.testing.assert_close(tf[:2], torch.tensor([5.5, 2.0]))
    assert tn[2] >= tf[2]


# =====================================================================================
# 3. Cameras: project <-> camera_rays, pixel_grid
# =====================================================================================
def _rotation(axis, angle) -> np.ndarray:
    """Rodrigues: rotation by `angle` about unit `axis`."""
    a = np.asarray(axis, np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def _c2w(rot: np.ndarray, pos) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = rot
    m[:3, 3] = pos
    return m


def test_project_hand_worked_axes():
    # Camera at (1, 2, 3), no rotation (looks down -Z, +Y up). fl_x = 500, fl_y = 420,
    # cx = 310.3, cy = 190.7. A point at camera-space (x, y, -z) lands at
    # u = cx + fx x / z, v = cy - fy y / z.
    cam = Camera.from_arrays(_c2w(np.eye(3), [1, 2, 3]), 500.0, 420.0, 310.3, 190.7, 640, 400)
    pts = np.array([[1, 2, 1],          # on the axis, depth 2     -> (cx, cy)
                    [2, 2, 1],          # x = 1, depth 2            -> u = 310.3 + 250 = 560.3
                    [1, 3, 1],          # y = 1 (up), depth 2       -> v = 190.7 - 210 = -19.3
                    [1, 2, 5]], float)  # behind the camera         -> NaN
    uv = cam.project(pts)
    np.testing.assert_allclose(uv[:3], [[310.3, 190.7], [560.3, 190.7], [310.3, -19.3]], atol=1e-9)
    assert np.isnan(uv[3]).all()


def test_project_then_camera_rays_round_trip():
    rot = _rotation([1.0, 2.0, 3.0], 0.7)
    c2w = _c2w(rot, [0.3, -1.2, 2.5])
    cam = Camera.from_arrays(c2w, 500.0, 420.0, 310.3, 190.7, 640, 400)
    rng = np.random.default_rng(0)
    n = 50
    z = rng.uniform(0.5, 6.0, n)                               # depth in front of the camera
    local = np.stack([rng.uniform(-0.6, 0.6, n) * z, rng.uniform(-0.5, 0.5, n) * z, -z], 1)
    pts = local @ rot.T + c2w[:3, 3]                           # world points
    uv = cam.project(pts)
    assert np.isfinite(uv).all()

    t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731 - float32, as training
    o, d = camera_rays(t(c2w)[None].expand(n, 4, 4), t([500.0] * n), t([420.0] * n),
                       t([310.3] * n), t([190.7] * n), t(uv[:, 0]), t(uv[:, 1]))
    o, d = o.double().numpy(), d.double().numpy()
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-6)
    rel = pts - o
    along = (rel * d).sum(1)
    assert (along > 0).all()                                   # the point is ahead on the ray
    dist = np.linalg.norm(rel - along[:, None] * d, axis=1)
    assert (dist / np.linalg.norm(rel, axis=1)).max() < 1e-5


def test_pixel_grid_row_major_centres():
    # W = 3, H = 2: row 0 first, left to right, centres at +0.5.
    u, v = pixel_grid(3, 2)
    assert u.tolist() == [0.5, 1.5, 2.5, 0.5, 1.5, 2.5]
    assert v.tolist() == [0.5, 0.5, 0.5, 1.5, 1.5, 1.5]
    assert u.dtype == v.dtype == torch.float32
    # The ray through pixel (i=2, j=1) of a 3x2 camera with fx = fy = 1, cx = 1.5, cy = 1
    # has camera direction ((2.5 - 1.5) / 1, -(1.5 - 1) / 1, -1) = (1, -0.5, -1) / 1.5.
    o, d = camera_rays(torch.eye(4)[None], torch.ones(1), torch.ones(1), torch.tensor([1.5]),
                       torch.tensor([1.0]), u[5:6], v[5:6])
    torch.testing.assert_close(d, torch.tensor([[1.0, -0.5, -1.0]]) / 1.5)
    assert torch.equal(o, torch.zeros(1, 3))


# =====================================================================================
# 4. Occupancy grid
# =====================================================================================
def test_cascade_and_cell_hand_worked():
    # R = 8. Cascade k spans |p - 0.5| <= 2^(k-1), cell size 2^k / 8; rel = (p-0.5)/2^k + 0.5.
    pts = torch.tensor([
        [0.1, 0.8, 0.3],       # m = 0.4 < 0.5: cascade 0; floor(8 p) = (0, 6, 2) -> 6*8 + 2 = 50
        [0.5, 0.9999, 0.5],    # m = 0.4999: cascade 0; (4, 7, 4) -> 256 + 56 + 4 = 316
        [0.5, 0.5, 1.1],       # m = 0.6: cascade 1; rel (.5, .5, .8) -> (4, 4, 6) -> 256 + 32 + 6 = 294
        [0.0, 0.5, 0.5],       # m = 0.5 (cascade 0's face): cascade 1; rel (.25, .5, .5) -> (2, 4, 4) = 164
        [2.0, 0.5, -0.2],      # m = 1.5: cascade 2; rel (.875, .5, .325) -> (7, 4, 2) -> 448 + 32 + 2 = 482
        [-0.6, 0.5, 0.5],      # m = 1.1: cascade 2; rel (.225, .5, .5) -> (1, 4, 4) -> 64 + 32 + 4 = 100
    ])
    k3 = cascade_of(pts, 3)
    assert k3.tolist() == [0, 0, 1, 1, 2, 2]
    assert cell_of(pts, k3, 8).tolist() == [50, 316, 294, 164, 482, 100]
    # One cascade: everything in cascade 0, cells clamped to the grid:
    # (0.5, 0.5, 1.1) -> (4, 4, 8.8 -> 7) = 295; (0, .5, .5) -> (0, 4, 4) = 36;
    # (2, .5, -.2) -> (16 -> 7, 4, -1.6 -> 0) = 480; (-0.6, .5, .5) -> (0, 4, 4) = 36.
    k1 = cascade_of(pts, 1)
    assert k1.tolist() == [0] * 6
    assert cell_of(pts, k1, 8).tolist() == [50, 316, 295, 36, 480, 36]
    assert cascade_of(pts, 2).tolist() == [0, 0, 1, 1, 1, 1]
    # cell_centres is the inverse of cell_of.
    grid = _grid(8, 3)
    for k in range(3):
        idx = torch.arange(grid.n_cells)
        centres = grid.cell_centres(k, idx)
        assert torch.equal(cell_of(centres, torch.full((grid.n_cells,), k), 8), idx)


def test_lookup_is_false_outside_the_scene_box():
    # All cells occupied. The scene box of 1 cascade is [0, 1]^3, of 3 cascades [-1.5, 2.5]^3.
    for n_cascades, half in ((1, 0.5), (3, 2.0)):
        grid = _grid(8, n_cascades)
        pts = torch.tensor([[0.5, 0.5, 0.5 + half], [0.5, 0.5 - 0.99 * half, 0.5],
                            [0.5, 0.5, 0.5 + 1.4 * half], [0.5 - 1.01 * half, 0.5, 0.5]])
        assert grid.lookup(pts).tolist() == [True, True, False, False]


def _x_half_density(p: torch.Tensor) -> torch.Tensor:
    """10 where x < 0.5, else 0: constant over every cell of every cascade (cell faces of all
    cascades pass through x = 0.5)."""
    return torch.where(p[:, 0] < 0.5, torch.tensor(10.0), torch.tensor(0.0))


def test_update_rule_during_warmup():
    r, n_casc = 8, 2
    grid = _grid(r, n_casc, decay=0.95, threshold=0.01, warmup_steps=256)
    gen = torch.Generator().manual_seed(1)
    old = torch.rand(n_casc, r ** 3, generator=gen) * 0.06
    old[:, ::7] = -1.0                                                    # unseen cells
    grid.load_state_dict({"values": old.clone(), "updates": 3})
    grid.update(_x_half_density, step=0, generator=gen)
    assert grid.updates == 4
    ix = torch.arange(r ** 3) // (r * r)                                  # x-major layout
    for k in range(n_casc):
        # new thickness = density * min_step * 2^k: 10 * 0.0016914559 = 0.016914559 (k = 0),
        # 0.033829117 (k = 1), for the cells with x < 0.5 (ix < 4); 0 for the others.
        thick = torch.tensor(10.0) * (MIN_STEP * 2.0 ** k)
        assert thick.item() == pytest.approx(0.016914559 * 2 ** k, rel=1e-6)
        fresh = torch.where(ix < r // 2, thick, torch.tensor(0.0))
        expected = torch.where(old[k] < 0, old[k], torch.maximum(old[k] * 0.95, fresh))
        assert torch.equal(grid.values[k], expected)
        assert (grid.values[k][::7] == -1).all()
        # both branches of the max happen
        assert ((expected == fresh) & (old[k] >= 0)).any()
        assert ((expected == old[k] * 0.95) & (expected > fresh)).any()
    # occupied = value > min(threshold, mean of cascade 0 clamped at 0) (cascade 0 is the
    # finest, so no pooled bits there).
    thr = min(0.01, grid.values[0].clamp_min(0).mean().item())
    assert torch.equal(grid.occupied[0], grid.values[0] > thr)
    assert not grid.occupied[0, ::7].any()
    # (cascade 1's -1 cells may still be set by the max-pooled cascade 0 bits, see below)


def test_occupancy_threshold_hand_worked():
    # R = 4: 64 cells. 8 cells at 0.05, one at 0.008, one at 0.004, one at -1, the rest 0:
    # mean of max(v, 0) = (0.4 + 0.008 + 0.004) / 64 = 0.0064375 < 0.01, so the threshold is
    # the mean: the eight 0.05 cells and the 0.008 cell are occupied, 0.004 is not.
    grid = _grid(4, 1)
    v = torch.zeros(1, 64)
    v[0, :8] = 0.05
    v[0, 10], v[0, 11], v[0, 12] = 0.008, 0.004, -1.0
    grid.load_state_dict({"values": v, "updates": 0})
    assert torch.nonzero(grid.occupied[0]).squeeze(1).tolist() == [*range(8), 10]
    # All cells at 0.5 except 0.02 and 0.005: mean ~0.49 > 0.01, so the threshold is 0.01.
    v = torch.full((1, 64), 0.5)
    v[0, 3], v[0, 4] = 0.02, 0.005
    grid.load_state_dict({"values": v, "updates": 0})
    assert not grid.occupied[0, 4] and grid.occupied[0, 3]
    assert int(grid.occupied.sum()) == 63


def test_update_after_warmup_samples_a_subset():
    r, n_casc = 8, 2
    n = r ** 3
    grid = _grid(r, n_casc, decay=0.95, warmup_steps=4)
    gen = torch.Generator().manual_seed(2)
    old = 0.001 + torch.rand(n_casc, n, generator=gen) * 0.01           # decay*old < 0.0105
    grid.load_state_dict({"values": old.clone(), "updates": 0})
    grid.update(lambda p: torch.full((p.shape[0],), 20.0), step=4, generator=gen)
    for k in range(n_casc):
        thick = torch.tensor(20.0) * (MIN_STEP * 2.0 ** k)                # 0.0338 * 2^k > 0.0105
        decayed = grid.values[k] == old[k] * 0.95
        sampled = grid.values[k] == thick
        assert (decayed | sampled).all()
        # at most n/4 uniform + n/4 occupied picks are sampled, so at least half just decay
        assert int(decayed.sum()) >= n // 2
        assert 0 < int(sampled.sum()) <= n // 2
    # During warm-up the same update samples every cell.
    grid.load_state_dict({"values": old.clone(), "updates": 0})
    grid.update(lambda p: torch.full((p.shape[0],), 20.0), step=3, generator=gen)
    for k in range(n_casc):
        assert (grid.values[k] == torch.tensor(20.0) * (MIN_STEP * 2.0 ** k)).all()


def test_cells_to_update_after_warmup_pick_occupied_cells_without_host_reads():
    # n/4 uniform cells, then n/4 picked uniformly among the occupied ones (all of them
    # reached over a few updates, nothing else), with no operation that would wait for a
    # GPU; with nothing occupied, uniform picks again.
    from ngp_engine.host_syncs import HostSyncs

    r, n_casc = 16, 2
    n = r ** 3
    grid = _grid(r, n_casc, warmup_steps=4)
    gen = torch.Generator().manual_seed(4)
    grid.occupied = torch.zeros(n_casc, n, dtype=torch.bool)
    occupied = torch.randperm(n, generator=gen)[:37]
    grid.occupied[0, occupied] = True
    grid.occupied[0, n - 1] = True                       # the last cell too (searchsorted's end)
    picked = torch.zeros(n, dtype=torch.long)
    with HostSyncs() as syncs:
        for _ in range(20):
            idx = grid.cells_to_update(0, 5, gen)
            assert idx.shape == (n // 2,)
            picked.index_add_(0, idx[n // 4:], torch.ones(n // 4, dtype=torch.long))
        empty = grid.cells_to_update(1, 5, gen)
    assert syncs.total == 0, syncs.report()
    assert torch.equal(picked > 0, grid.occupied[0])      # every occupied cell, nothing else
    share = picked[grid.occupied[0]].float() / picked.sum()
    assert share.max() < 3.0 / 38 and share.min() > 0.3 / 38          # about uniform
    assert empty.shape == (n // 2,) and 0 <= int(empty.min()) and int(empty.max()) < n
    assert torch.equal(grid.cells_to_update(0, 3, gen), torch.arange(n))  # warm-up: all


def _look(forward, up, position) -> torch.Tensor:
    """c2w [4, 4] of a camera at `position` looking along `forward` (NeRF: -Z forward, +Y up)."""
    z = -np.asarray(forward, np.float64)
    y = np.asarray(up, np.float64)
    x = np.cross(y, z)
    return torch.from_numpy(_c2w(np.stack([x, y, z], 1), position)).float()


@pytest.mark.parametrize("forward, up", [((0, 0, -1), (0, 1, 0)), ((1, 0, 0), (0, 1, 0))])
def test_mark_unseen_one_camera_in_the_cube(forward, up):
    # R = 8, one cascade: cell centres at (i + 0.5) / 8, half-diagonal sqrt3/16 = 0.108.
    # The camera sits at the centre with a 90 degree field of view (fx = W/2). Along the view
    # axis, cells whose centre is more than 0.108 behind the camera plane are unseen (-1); cells
    # in front, near the axis, stay; a cell barely in front but far off axis is outside the image.
    grid = _grid(8, 1)
    c2w = _look(forward, up, (0.5, 0.5, 0.5))[None]
    f = torch.tensor([32.0])
    grid.mark_unseen(c2w, f, f, torch.tensor([32.0]), torch.tensor([32.0]), 64, 64)
    centres = grid.cell_centres(0)
    fwd = torch.tensor(forward, dtype=torch.float32)
    upv = torch.tensor(up, dtype=torch.float32)
    side = torch.cross(fwd, upv, dim=0)
    depth = (centres - 0.5) @ fwd                    # +0.4375 .. -0.4375 in steps of 0.125
    lateral = ((centres - 0.5) @ upv).abs().maximum(((centres - 0.5) @ side).abs())
    unseen = grid.values[0] == -1
    behind = depth < -0.11
    assert behind.sum() == 3 * 64
    assert unseen[behind].all()
    in_view = (depth > 0.15) & (lateral < depth)      # well inside the 90 degree frustum
    assert in_view.sum() > 0 and not unseen[in_view].any()
    # depth 0.0625, lateral 0.4375: u = 32 +- 32 * 0.4375 / 0.0625 = 32 +- 224, beyond the
    # border margin fx * 0.108 / 0.0625 = 55 px.
    off_axis = ((depth - 0.0625).abs() < 1e-6) & ((lateral - 0.4375).abs() < 1e-6)
    assert off_axis.sum() > 0 and unseen[off_axis].all()
    assert not grid.occupied[0, unseen].any()
    # Unseen cells stay -1 through an update with a dense field.
    grid.update(lambda p: torch.full((p.shape[0],), 100.0), step=0)
    assert torch.equal(grid.values[0] == -1, unseen)
    assert grid.occupied[0].tolist() == (~unseen).tolist()


def test_coarser_cascade_contains_max_pooled_finer_occupancy():
    # One occupied cell (5, 2, 7) in cascade 0, centre (0.6875, 0.3125, 0.9375).
    # Cascade 1: rel = (p - 0.5)/2 + 0.5 = (0.59375, 0.40625, 0.71875) -> cell (4, 3, 5)
    #   (= 8/4 + (5, 2, 7) // 2).  Cascade 2: rel = (p - 0.5)/4 + 0.5 -> cell (4, 3, 4).
    r = 8
    grid = _grid(r, 3)
    v = torch.zeros(3, r ** 3)
    fine = (5 * r + 2) * r + 7
    v[0, fine] = 1.0
    v[1, 0] = 1.0                    # cascade 1's own occupied corner cell must survive the pooling
    grid.load_state_dict({"values": v, "updates": 0})
    c1, c2 = (4 * r + 3) * r + 5, (4 * r + 3) * r + 4
    assert torch.nonzero(grid.occupied[0]).squeeze(1).tolist() == [fine]
    assert torch.nonzero(grid.occupied[1]).squeeze(1).tolist() == [0, c1]
    # ... and the pooling chains: cascade 1's corner (0, 0, 0) lands in cascade 2 at
    # (2, 2, 2) = 146, next to the fine cell's (4, 3, 4).
    assert torch.nonzero(grid.occupied[2]).squeeze(1).tolist() == [(2 * r + 2) * r + 2, c2]
    centre = grid.cell_centres(0, torch.tensor([fine]))
    assert cell_of(centre, torch.tensor([1]), r).item() == c1
    assert cell_of(centre, torch.tensor([2]), r).item() == c2
    # General case: random values, each coarse inner octant ORs the 2x2x2 finer cells below.
    grid.load_state_dict({"values": torch.rand(3, r ** 3, generator=torch.Generator().manual_seed(3)),
                          "updates": 0})
    for k in (1, 2):
        own = grid.values[k] > min(0.01, grid.values[0].mean().item())
        finer = grid.occupied[k - 1].view(r // 2, 2, r // 2, 2, r // 2, 2).any(5).any(3).any(1)
        expected = own.view(r, r, r).clone()
        expected[2:6, 2:6, 2:6] |= finer
        assert torch.equal(grid.occupied[k].view(r, r, r), expected)


def test_state_dict_round_trip():
    grid = _grid(8, 2)
    gen = torch.Generator().manual_seed(4)
    grid.update(lambda p: (p[:, 1] > 0.7).float() * 50.0, step=0, generator=gen)
    grid.update(lambda p: (p[:, 2] < 0.3).float() * 50.0, step=300, generator=gen)
    state = grid.state_dict()
    other = _grid(8, 2)
    assert not torch.equal(other.occupied, grid.occupied)
    other.load_state_dict(state)
    assert torch.equal(other.values, grid.values)
    assert torch.equal(other.occupied, grid.occupied)
    assert other.updates == grid.updates == 2
    with pytest.raises(ValueError, match="shape"):
        _grid(8, 3).load_state_dict(state)


# =====================================================================================
# 5. Ray marching
# =====================================================================================
def _random_rays(n: int, aabb: float, gen: torch.Generator):
    """Origins outside the scene box, aimed at points of a box 1.6x the unit cube (scaled), so
    that some miss the unit cube and a few miss the scene box; plus some aimed away."""
    d0 = torch.randn(n, 3, generator=gen)
    d0 = d0 / d0.norm(dim=-1, keepdim=True)
    o = 0.5 + d0 * (0.5 * aabb * math.sqrt(3) + 0.25)
    target = 0.5 + (torch.rand(n, 3, generator=gen) - 0.5) * 1.6 * aabb
    d = target - o
    d[: n // 10] *= -1                                     # a tenth point away from the box
    d = d / d.norm(dim=-1, keepdim=True)
    return o, d


def _check_packing(s: RaySamples, n_rays: int, max_samples: int):
    counts = torch.bincount(s.ray_idx, minlength=n_rays)
    assert torch.equal(s.offsets, torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]))
    assert (s.ray_idx[1:] >= s.ray_idx[:-1]).all()        # sorted by ray
    same = s.ray_idx[1:] == s.ray_idx[:-1]
    assert (s.t[1:][same] > s.t[:-1][same]).all()          # then by t
    assert counts.max() <= max_samples


@pytest.mark.parametrize("one_march", [True, False])
@pytest.mark.parametrize("case", ["cone0_1cascade", "cone_3cascades", "jitter", "capped"])
def test_numba_and_torch_marchers_agree(case, one_march, monkeypatch):
    # one_march: the numba marcher's single march into a padded buffer (what small batches
    # get, the other tests included); else its count-then-fill passes (large batches).
    from ngp_engine.render import ray_marching

    monkeypatch.setattr(ray_marching, "PADDED_MARCH_SLOTS", 1 << 20 if one_march else 0)
    gen = torch.Generator().manual_seed(sum(map(ord, case)))
    aabb, n_casc, cone = (4.0, 3, 1 / 256) if case in ("cone_3cascades", "jitter") else (1.0, 1, 0.0)
    r = 32
    grid = _grid(r, n_casc)
    grid.occupied = torch.rand(n_casc, r ** 3, generator=gen) < 0.3    # random pattern
    n = 300
    o, d = _random_rays(n, aabb, gen)
    half = aabb / 2
    t_near, t_far = ray_box_intersect(o, d, torch.full((3,), 0.5 - half), torch.full((3,), 0.5 + half))
    min_step, max_step = step_bounds(1024, n_casc, r)
    max_samples = 40 if case == "capped" else 1024
    jitter = torch.rand(n, generator=gen) if case in ("jitter", "capped") else None
    a = march_rays(o, d, t_near, t_far, grid, min_step, max_step, cone, max_samples, jitter, backend="cpu")
    b = march_rays(o, d, t_near, t_far, grid, min_step, max_step, cone, max_samples, jitter, backend="torch")
    assert torch.equal(a.ray_idx, b.ray_idx)
    assert torch.equal(a.t, b.t)
    assert torch.equal(a.dt, b.dt)
    assert torch.equal(a.offsets, b.offsets)
    assert a.t.dtype == a.dt.dtype == torch.float32 and a.ray_idx.dtype == torch.int64
    _check_packing(a, n, max_samples)
    counts = a.offsets.diff()
    hit = t_near < t_far
    assert 0 < int(hit.sum()) < n                         # some rays miss the box
    assert (counts[~hit] == 0).all()
    assert a.n_samples > 1000
    if case == "capped":
        assert 0 < int((counts == max_samples).sum()) < int(hit.sum())
    if cone > 0:
        # dt = clamp(t / 256, min_step, max_step), max_step = sqrt3 * 4 / 32 = 0.2165
        expect = (a.t * torch.tensor(cone)).clamp(min_step, max_step)
        assert torch.equal(a.dt, expect)
        assert (a.dt > min_step * 1.5).any()
    else:
        assert (a.dt == torch.tensor(min_step, dtype=torch.float32)).all()
    # Every sample lies in an occupied cell inside the box, within [t_near, t_far).
    p = o[a.ray_idx] + a.t[:, None] * d[a.ray_idx]
    assert grid.lookup(p).all()
    assert (a.t >= t_near[a.ray_idx]).all() and (a.t < t_far[a.ray_idx]).all()


def _cpu_and_torch_marches(o, d, grid, r, n_casc, gen):
    """The numba and the torch marcher on the same rays (box [-0.5, 1.5]^3, cone 0, jittered)."""
    t_near, t_far = ray_box_intersect(o, d, torch.full((3,), -0.5), torch.full((3,), 1.5))
    min_step, max_step = step_bounds(1024, n_casc, r)
    jitter = torch.rand(o.shape[0], generator=gen)
    return tuple(march_rays(o, d, t_near, t_far, grid, min_step, max_step, 0.0, 1024, jitter,
                            backend=backend) for backend in ("cpu", "torch"))


def _lattice_rays(n: int, per_edge: int, m: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n rays (box [-1, 2]^3 setting of `_random_rays`), the first 3m on the corners of a
    lattice of `per_edge` cells per unit edge: m along +x, m grazing (+x, 1e-7 in y), m
    along -z; the rest random."""
    o, d = _random_rays(n, 2.0, gen)
    lattice = torch.randint(0, per_edge + 1, (n, 3), generator=gen).float() / per_edge
    o[:2 * m] = lattice[:2 * m]
    o[:2 * m, 0] = -0.4                                    # outside, looking along +x
    d[:2 * m] = torch.tensor([1.0, 0.0, 0.0])
    d[m:2 * m, 1] = 1e-7                                   # grazing: almost along the face
    d[2 * m:3 * m] = torch.tensor([0.0, 0.0, -1.0])
    o[2 * m:3 * m] = lattice[2 * m:3 * m]
    o[2 * m:3 * m, 2] = 1.4
    return o, d / d.norm(dim=-1, keepdim=True)


def _assert_same_samples(a: RaySamples, b: RaySamples) -> None:
    for x, y in ((a.ray_idx, b.ray_idx), (a.t, b.t), (a.dt, b.dt), (a.offsets, b.offsets)):
        assert torch.equal(x, y)


def test_numba_marcher_skipping_empty_cells_keeps_every_sample():
    # The numba marcher steps over empty cells of the finest cascade without lookups; rays
    # along cell faces and edges (origins on the lattice, axis-aligned or nearly), through a
    # sparse grid, must still give the reference's samples bit for bit.
    gen = torch.Generator().manual_seed(7)
    r, n_casc = 32, 2
    grid = _grid(r, n_casc)
    grid.occupied = torch.rand(n_casc, r ** 3, generator=gen) < 0.03
    o, d = _lattice_rays(600, r, 100, gen)                # cell corners
    a, b = _cpu_and_torch_marches(o, d, grid, r, n_casc, gen)
    _assert_same_samples(a, b)
    assert int((a.offsets.diff()[:300] > 0).sum()) > 30    # the lattice rays do hit cells
    assert a.n_samples > 1000


def _block_cells(full: torch.Tensor, r: int) -> torch.Tensor:
    """Blocks to cells: [C, (r / BLOCK)^3] bool -> [C, r^3] bool (x-major, as the grid)."""
    nb = r // BLOCK
    cells = full.view(-1, nb, nb, nb)
    for axis in (1, 2, 3):
        cells = cells.repeat_interleave(BLOCK, axis)
    return cells.reshape(full.shape[0], -1)


def _grid_in_blocks(r: int, n_casc: int, n_full: int, gen: torch.Generator) -> OccupancyGrid:
    """Matter (half the cells) in `n_full` random BLOCK^3 blocks of cascade 0, none elsewhere
    there; coarser cascades random."""
    grid = _grid(r, n_casc)
    nb = r // BLOCK
    full = torch.zeros(nb ** 3, dtype=torch.bool)
    full[torch.randperm(nb ** 3, generator=gen)[:n_full]] = True
    grid.occupied = torch.rand(n_casc, r ** 3, generator=gen) < 0.5
    grid.occupied[0] &= _block_cells(full[None], r)[0]
    return grid


def test_block_occupancy_layout_and_refresh():
    gen = torch.Generator().manual_seed(3)
    r = 32
    grid = _grid(r, 2)
    grid.occupied = torch.rand(2, r ** 3, generator=gen) < 0.002
    nb = r // BLOCK
    brute = torch.tensor([[bool(grid.occupied[k].view(r, r, r)[x * BLOCK:(x + 1) * BLOCK,
                                                              y * BLOCK:(y + 1) * BLOCK,
                                                              z * BLOCK:(z + 1) * BLOCK].any())
                           for x in range(nb) for y in range(nb) for z in range(nb)] for k in range(2)])
    assert 0 < int(brute[0].sum()) < nb ** 3 and not torch.equal(brute[0], brute[1])
    assert torch.equal(grid.block_occupancy(), brute)            # [C, blocks] x-major, as the cells
    grid.occupied[:] = False                                     # written in place
    assert not grid.block_occupancy().any()
    grid.occupied = torch.ones(2, r ** 3, dtype=torch.bool)      # replaced
    assert grid.block_occupancy().all()
    with torch.inference_mode():
        grid.occupied = torch.zeros(2, r ** 3, dtype=torch.bool)
    assert not grid.block_occupancy().any()
    assert _grid(36, 1).block_occupancy() is None                # 36 cells: no 8^3 blocks


def test_numba_marcher_skipping_empty_blocks_keeps_every_sample():
    # Matter in a few 8^3 blocks of cells, the rest empty: the numba marcher crosses empty
    # blocks whole (to within a margin of their faces). Rays along block faces and edges,
    # axis-aligned or grazing, and random rays must give the reference's samples bit for bit.
    gen = torch.Generator().manual_seed(5)
    r, n_casc, n = 64, 2, 900
    grid = _grid_in_blocks(r, n_casc, 12, gen)                   # 12 of 512 blocks
    assert 0 < int(grid.block_occupancy()[0].sum()) <= 12
    o, d = _lattice_rays(n, r // BLOCK, 150, gen)         # block corners
    cpu, ref = _cpu_and_torch_marches(o, d, grid, r, n_casc, gen)
    _assert_same_samples(cpu, ref)
    assert int((cpu.offsets.diff()[:450] > 0).sum()) > 20  # the lattice rays do hit blocks
    assert cpu.n_samples > 1000


@pytest.mark.parametrize("r", [32, 16, 24])      # 4, 2 and 3 blocks per edge
@pytest.mark.parametrize("cone", [0.0, 1 / 256])
def test_numba_marcher_skipping_in_coarser_cascades_keeps_every_sample(cone, r):
    # A real capture's setting: 4 cascades, cameras inside the scene box, little matter in
    # the coarse cascades. The numba marcher skips their empty cells and blocks too, except
    # from cells inside the next finer cascade's cube (a point exactly on its lower faces
    # belongs to the coarser cascade). Rays in those face planes, along them and across
    # them, and random rays: the reference's samples bit for bit.
    gen = torch.Generator().manual_seed(13)
    n_casc, n = 4, 1200
    grid = _grid(r, n_casc)
    nb = r // BLOCK                                  # matter in a sixth of the blocks
    full = torch.stack([torch.randperm(nb ** 3, generator=gen) < max(1, nb ** 3 // 6)
                        for _ in range(n_casc)])
    grid.occupied = (torch.rand(n_casc, r ** 3, generator=gen) < 0.1) & _block_cells(full, r)
    o = 0.5 + (torch.rand(n, 3, generator=gen) - 0.5) * 7.0          # inside the box [-3.5, 4.5]^3
    d = torch.randn(n, 3, generator=gen)
    faces = torch.tensor([0.5 - 2.0 ** (k - 2) for k in range(1, n_casc)])     # lower faces
    plane = faces[torch.randint(0, n_casc - 1, (n,), generator=gen)]
    axis = torch.randint(0, 3, (n,), generator=gen)
    rows = torch.arange(n)
    # Rays 300-400 start on a lower face, inside its square, unjittered (their first lookup
    # is on the face exactly) and go into the finer cascade.
    inner = 0.5 + (torch.rand(n, 3, generator=gen) - 0.5) * 1.8 * (0.5 - plane[:, None]).abs()
    o[300:400] = inner[300:400]
    o[rows[:400], axis[:400]] = plane[:400]                      # in a face plane...
    d[rows[:200], axis[:200]] = 0.0                              # ...along it
    d[rows[200:300], axis[200:300]] = 1e-7                       # ...grazing it
    d[rows[300:400], axis[300:400]] = d[rows[300:400], axis[300:400]].abs() + 0.1   # ...or across
    d = d / d.norm(dim=-1, keepdim=True)
    half = 2.0 ** (n_casc - 1) / 2
    t_near, t_far = ray_box_intersect(o, d, torch.full((3,), 0.5 - half), torch.full((3,), 0.5 + half))
    min_step, max_step = step_bounds(1024, n_casc, r)
    jitter = torch.rand(n, generator=gen)
    jitter[300:400] = 0.0
    cpu, ref = (march_rays(o, d, t_near, t_far, grid, min_step, max_step, cone, 4096, jitter,
                           backend=backend) for backend in ("cpu", "torch"))
    for x, y in ((cpu.offsets, ref.offsets), (cpu.t, ref.t), (cpu.dt, ref.dt), (cpu.ray_idx, ref.ray_idx)):
        assert torch.equal(x, y)
    p = o[cpu.ray_idx] + cpu.t[:, None] * d[cpu.ray_idx]
    k = cascade_of(p, n_casc)
    assert all(int((k == c).sum()) > 20 for c in range(n_casc)), torch.bincount(k)   # every cascade
    assert int((cpu.offsets.diff()[:400] > 0).sum()) > 30


FAR_CAMERA = """
import torch
from ngp_engine.config import OccupancyGridConfig
from ngp_engine.render.occupancy_grid import OccupancyGrid
from ngp_engine.render.ray_marching import march_rays, max_t, step_bounds
from ngp_engine.render.rays import ray_box_intersect

grid = OccupancyGrid(OccupancyGridConfig(resolution=16), 1, 1e-3, torch.device("cpu"))
grid.occupied.view(1, 16, 16, 16)[..., :8] = False             # empty where z < 0.5
min_step, max_step = step_bounds(1024, 1, 16)
o = torch.tensor([[0.5, 0.5, -1e5], [0.5, 0.5, -100.0]])       # 1e5: t + min_step == t
d = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
t_near, t_far = ray_box_intersect(o, d, torch.zeros(3), torch.ones(3))
assert float(t_near[0] + min_step) == float(t_near[0]) and t_near[0] > max_t(min_step)
for backend in ("cpu", "torch"):
    s = march_rays(o, d, t_near, t_far, grid, min_step, max_step, 0.0, 4096, backend=backend)
    print(backend, s.offsets.tolist())
"""


def test_marchers_end_rays_where_a_step_no_longer_moves_t():
    # A camera 1e5 unit-cube units away: there t + min_step == t in float32, and the
    # marchers looped for ever in empty cells (in occupied ones they returned max_samples
    # copies of one sample). In a subprocess with a timeout, so that a regression fails.
    proc = subprocess.run([sys.executable, "-c", FAR_CAMERA], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    # The far ray gets no samples; the one 100 units away those of its half in z >= 0.5.
    assert lines == ["cpu [0, 0, 295]", "torch [0, 0, 295]"], lines


def test_numba_marcher_does_not_skip_from_a_face_of_a_finer_cascade():
    # Points exactly on cascade k - 1's lower face (y here) belong to cascade k with an
    # inner cell index; a coordinate a few ulps below the upper face (x) has its index
    # rounded up to 3R/4. Such a point's cell is not outside cascade k - 1: marching along
    # the face into matter of cascade k - 1 must find every sample (a review's case).
    r = 32
    grid = _grid(r, 3)
    grid.values[:] = 0.0
    grid.values[0, (31 * r + 1) * r + 16] = 1.0
    grid.values[1, (31 * r + 4) * r + 16] = 1.0
    grid.load_state_dict({"values": grid.values, "updates": 1})      # bits (pooled) as trained
    below = lambda v: float(np.nextafter(np.float32(v), np.float32(0)))   # noqa: E731
    o = torch.tensor([[below(1.0), 0.0, 0.5], [below(1.5), -0.5, 0.5]])
    d = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    cpu, ref = (march_rays(o, d, torch.zeros(2), torch.full((2,), 2.0), grid, 1 / 256, 1 / 256,
                           0.0, 4096, torch.zeros(2), backend=backend) for backend in ("cpu", "torch"))
    assert ref.offsets.tolist() == [0, 8, 24]
    assert torch.equal(cpu.offsets, ref.offsets) and torch.equal(cpu.t, ref.t)


@pytest.mark.parametrize("cone", [0.0, 1 / 256, 1 / 64])
def test_numba_marcher_skipping_across_the_constant_step_regime(cone):
    # Over an empty stretch the numba marcher adds a constant step while t * cone stays
    # below min_step, else it recomputes step(t). Origins inside the unit cube put
    # t = min_step / cone (0.43 and 0.11) inside the finest cascade, where stretches over
    # empty cells and blocks start on one side of it and end on the other: the samples
    # must be the reference's.
    gen = torch.Generator().manual_seed(11)
    r, n_casc, n = 64, 2, 800
    grid = _grid_in_blocks(r, n_casc, 40, gen)
    grid.occupied[0] &= torch.rand(r ** 3, generator=gen) < 0.1     # sparse in the blocks too
    o = 0.1 + 0.8 * torch.rand(n, 3, generator=gen)
    d = torch.randn(n, 3, generator=gen)
    d = d / d.norm(dim=-1, keepdim=True)
    t_near, t_far = ray_box_intersect(o, d, torch.full((3,), -0.5), torch.full((3,), 1.5))
    min_step, max_step = step_bounds(1024, n_casc, r)
    jitter = torch.rand(n, generator=gen)
    cpu, ref = (march_rays(o, d, t_near, t_far, grid, min_step, max_step, cone, 1024, jitter,
                           backend=backend) for backend in ("cpu", "torch"))
    for x, y in ((cpu.offsets, ref.offsets), (cpu.t, ref.t), (cpu.dt, ref.dt), (cpu.ray_idx, ref.ray_idx)):
        assert torch.equal(x, y)
    assert cpu.n_samples > 2000
    if cone > 0:      # samples on both sides of the regime's boundary
        assert (cpu.t < min_step / cone).any() and (cpu.t > 2 * min_step / cone).any()


@pytest.mark.parametrize("distance", [400.0, 3000.0])
def test_numba_marcher_skipping_keeps_every_sample_of_far_cameras(distance):
    # Far from the unit cube, o + t * d rounds by more than a fixed margin (half an ulp of
    # 256 is 1.5e-5): the skipping margin grows with |o|, or samples went missing (a review
    # found 154 of 2.7 M missing at distance 400 with a fixed 1e-5).
    gen = torch.Generator().manual_seed(int(distance))
    r, n_casc, n = 128, 2, 1500
    grid = _grid(r, n_casc)
    grid.occupied = torch.rand(n_casc, r ** 3, generator=gen) < 0.5
    u = torch.randn(n, 3, generator=gen)
    o = 0.5 + u / u.norm(dim=-1, keepdim=True) * distance
    d = torch.rand(n, 3, generator=gen) - o
    d = d / d.norm(dim=-1, keepdim=True)
    a, b = _cpu_and_torch_marches(o, d, grid, r, n_casc, gen)
    assert a.n_samples > 100_000
    for x, y in ((a.offsets, b.offsets), (a.t, b.t), (a.dt, b.dt)):
        assert torch.equal(x, y)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_march_hand_worked_ray_through_full_cube(backend):
    # Along +x from (-0.5, 0.5, 0.5): box entry t_near = 0.5, exit t_far = 1.5. With
    # min_step = sqrt3 / 1024 = 0.0016914559 and cone 0, samples are at t = 0.5 + i min_step
    # while t < 1.5: 1 / min_step = 1024 / sqrt3 = 591.2, so i = 0..591, i.e. 592 samples
    # (the last at 0.5 + 591 * 0.0016914559 = 1.4996532).
    grid = _grid(16, 1)                                   # a fresh grid is fully occupied
    o, d = torch.tensor([[-0.5, 0.5, 0.5]]), torch.tensor([[1.0, 0.0, 0.0]])
    t_near, t_far = ray_box_intersect(o, d, *_box())
    assert (t_near.item(), t_far.item()) == (0.5, 1.5)
    min_step, max_step = step_bounds(1024, 1, 16)
    s = march_rays(o, d, t_near, t_far, grid, min_step, max_step, 0.0, 1024, backend=backend)
    assert s.n_samples == 592
    assert s.offsets.tolist() == [0, 592]
    assert (s.ray_idx == 0).all()
    step32 = np.float32(min_step)
    t = s.t.numpy()
    assert t[0] == np.float32(0.5)
    assert t[-1] == pytest.approx(1.4996532, abs=1e-6)
    # exactly the float32 recurrence t <- t + float32(min_step) (spacings differ from
    # min_step by the rounding of t only: at most one ulp of t = 1.2e-7)
    assert np.array_equal(t[1:], (t[:-1] + step32).astype(np.float32))
    assert np.abs(np.diff(t) - step32).max() <= np.spacing(np.float32(1.0))
    assert (s.dt.numpy() == step32).all()
    # A fully empty grid gives no samples (and consistent, all-zero offsets).
    grid.occupied = torch.zeros_like(grid.occupied)
    s = march_rays(o.expand(3, 3), d.expand(3, 3), t_near.expand(3), t_far.expand(3), grid,
                   min_step, max_step, 0.0, 1024, backend=backend)
    assert s.n_samples == 0 and s.offsets.tolist() == [0, 0, 0, 0]


def test_march_occupied_slab_hand_worked():
    # Only cells with ix = 5 occupied (x in [5/8, 6/8) = [0.625, 0.75)), R = 8, one cascade.
    # Along +x from x = 0 (t_near = 0): kept samples are the t = i * min_step in [0.625, 0.75):
    # i = ceil(0.625 / 0.0016914559) = ceil(369.5) = 370 .. floor(443.4) = 443 -> 74 samples.
    r = 8
    grid = _grid(r, 1)
    grid.occupied = torch.zeros(1, r ** 3, dtype=torch.bool)
    grid.occupied[0, 5 * r * r:6 * r * r] = True
    o, d = torch.tensor([[0.0, 0.3, 0.6]]), torch.tensor([[1.0, 0.0, 0.0]])
    t_near, t_far = ray_box_intersect(o, d, *_box())
    min_step, max_step = step_bounds(1024, 1, r)
    for backend in ("cpu", "torch"):
        s = march_rays(o, d, t_near, t_far, grid, min_step, max_step, 0.0, 1024, backend=backend)
        assert s.n_samples == 74
        assert 0.625 <= s.t.min().item() < 0.625 + min_step
        assert 0.75 - min_step <= s.t.max().item() < 0.75


# =====================================================================================
# 6. render_rays on an analytic sphere
# =====================================================================================
class SphereField:
    """Density `sigma` inside a sphere (hard edge, or a steep sigmoid of the signed distance
    when `softness` is given), constant colour everywhere. No parameters."""

    def __init__(self, centre=(0.5, 0.5, 0.5), radius=0.25, sigma=1e4, rgb=(0.2, 0.6, 0.9),
                 softness: float | None = None):
        self.centre = torch.tensor(centre)
        self.radius = radius
        self.sigma = sigma
        self.rgb = torch.tensor(rgb)
        self.softness = softness

    def density(self, x: torch.Tensor) -> torch.Tensor:
        dist = (x - self.centre).norm(dim=-1)
        if self.softness is None:
            return self.sigma * (dist < self.radius).float()
        return self.sigma * torch.sigmoid((self.radius - dist) / self.softness)

    def __call__(self, x: torch.Tensor, d: torch.Tensor, ray_idx: torch.Tensor):
        return self.density(x), self.rgb.expand(x.shape[0], 3)

    def parameters(self):
        return []


class EncodedSphereField(SphereField):
    """SphereField with the hand-off interface: encode(x) -> [S, 5] features (the position,
    its distance to the centre and a ramp), density_of(features) -> density."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        dist = (x - self.centre).norm(dim=-1, keepdim=True)
        return torch.cat([x, dist, x[:, :1] * 7.0 + dist], dim=1)

    def density_of(self, features: torch.Tensor) -> torch.Tensor:
        return self.sigma * torch.sigmoid((self.radius - features[:, 3]) / self.softness)


def _settings(early_stop: float = 0.0, backend: str = "cpu") -> MarchSettings:
    min_step, max_step = step_bounds(1024, 1, 16)
    return MarchSettings(box_min=(0.0, 0.0, 0.0), box_max=(1.0, 1.0, 1.0), min_step=min_step,
                         max_step=max_step, cone_angle=0.0, max_samples=1024,
                         early_stop=early_stop, backend=backend)


# Rays along +z from z = -1 at lateral offset (bx, by) from the sphere's axis. Entry point on
# the sphere (centre 0.5, r = 0.25): z = 0.5 - sqrt(r^2 - b^2), at t = 1 + that z:
#   b = 0      -> t = 1.25
#   b = 0.1    -> sqrt(0.0625 - 0.01)   = 0.2291288 -> t = 1.2708712
#   b = 0.15   -> sqrt(0.0625 - 0.0225) = 0.2       -> t = 1.3
#   b = 0.1414 (0.1, 0.1) -> sqrt(0.0425) = 0.2061553 -> t = 1.2938447
# The last two rays miss: b = 0.45 sqrt2 = 0.636 (inside the box), and one outside the box.
OFFSETS = [(0.0, 0.0), (0.1, 0.0), (0.0, -0.15), (0.1, 0.1), (-0.45, -0.45), (1.5, 0.0)]
ENTRY_T = [1.25, 1.2708712, 1.3, 1.2938447]


def _sphere_rays():
    o = torch.tensor([[0.5 + bx, 0.5 + by, -1.0] for bx, by in OFFSETS])
    d = torch.tensor([[0.0, 0.0, 1.0]] * len(OFFSETS))
    return o, d


def test_render_sphere_opacity_depth_colour():
    field = SphereField()
    grid = _grid(16, 1)                                   # fully occupied
    o, d = _sphere_rays()
    bg = torch.tensor([1.0, 1.0, 1.0])
    out = render_rays(field, grid, o, d, _settings(), background=bg)
    hit = slice(0, 4)
    # Entering sample: sigma dt = 1e4 * 0.00169 = 16.9, alpha = 1 - 4.6e-8: opaque.
    assert (out.opacity[hit] > 1 - 1e-6).all()
    assert out.opacity[4].item() == 0.0 and out.opacity[5].item() == 0.0
    torch.testing.assert_close(out.rgb[hit], field.rgb.expand(4, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.rgb[4:], bg.expand(2, 3), atol=0, rtol=0)   # background
    # depth / opacity = t of the first sample inside: within one min_step after the entry.
    expected = (out.depth / out.opacity.clamp_min(1e-12))[hit]
    err = expected - torch.tensor(ENTRY_T)
    assert (err > -1e-5).all() and (err < MIN_STEP + 1e-5).all(), err
    assert out.n_marched == out.n_samples                # early_stop = 0 keeps everything
    # The ray outside the box has no samples; the one inside misses the sphere: 592 samples.
    assert out.n_marched == 5 * 592


def test_render_no_samples_at_all():
    field = SphereField()
    grid = _grid(16, 1)
    o = torch.tensor([[3.0, 3.0, 3.0], [-2.0, 0.5, 0.5]])
    d = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])                 # both miss the box
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.7, 0.8, 0.9]])
    out = render_rays(field, grid, o, d, _settings(early_stop=1e-4), background=bg, want_normals=True)
    assert out.n_marched == out.n_samples == 0
    assert torch.equal(out.opacity, torch.zeros(2))
    assert torch.equal(out.rgb, bg)
    assert torch.equal(out.depth, torch.zeros(2))
    assert torch.equal(out.normals, torch.zeros(2, 3))


def test_render_early_termination_drops_hidden_samples():
    field = SphereField()
    grid = _grid(16, 1)
    o, d = _sphere_rays()
    full = render_rays(field, grid, o, d, _settings(0.0), background=torch.ones(3))
    cut = render_rays(field, grid, o, d, _settings(1e-4), background=torch.ones(3))
    # Behind the first sample inside the sphere T = e^-16.9 < 1e-4: every later sample of the
    # four hit rays (hundreds of them) goes, and marching in windows never evaluated most.
    assert cut.n_samples < full.n_marched - 4 * 100
    assert cut.n_samples <= cut.n_marched < full.n_marched - 4 * 100
    assert (cut.rgb - full.rgb).abs().max() < 1e-3
    assert (cut.opacity - full.opacity).abs().max() < 1e-3
    torch.testing.assert_close(cut.depth, full.depth, atol=1e-3, rtol=0)
    # torch marcher and sums: the same samples, the same result up to the sums' rounding
    cut_t = render_rays(field, grid, o, d, _settings(1e-4, backend="torch"), background=torch.ones(3))
    assert cut_t.n_samples == cut.n_samples and cut_t.n_marched == cut.n_marched
    torch.testing.assert_close(cut_t.rgb, cut.rgb, rtol=0, atol=1e-6)


def _search_case(backend: str, max_samples: int):
    """A soft sphere (handing its encodings on), 200 random rays with jittered starts, the
    search's settings, every sample marched, and the reference's kept samples: marching
    every ray to its end, evaluating every density, keeping those with transmittance in
    front above early_stop (the training renderer's former two passes)."""
    from ngp_engine.render.volume_rendering import transmittance

    field = EncodedSphereField(sigma=300.0, softness=0.02)
    grid = _grid(16, 1)
    gen = torch.Generator().manual_seed(5)
    o, d = _random_rays(200, 1.0, gen)
    t_near, t_far = ray_box_intersect(o, d, *_box())
    jitter = torch.rand(200, generator=gen)
    st = replace(_settings(1e-4, backend), max_samples=max_samples)
    every = march_rays(o, d, t_near, t_far, grid, st.min_step, st.max_step, 0.0, max_samples,
                       jitter, backend="cpu")
    sd = field.density(o[every.ray_idx] + every.t[:, None] * d[every.ray_idx]) * every.dt
    ref = every.select(transmittance(sd, every.ray_idx, every.offsets) > st.early_stop)
    return field, grid, o, d, t_near, t_far, jitter, st, every, ref


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("max_samples", [1024, 20])
def test_visible_samples_are_those_of_marching_everything_then_cutting(max_samples, backend):
    # The reference: march every ray to its end, evaluate every sample's density, keep those
    # with transmittance in front above early_stop (the training renderer's former two
    # passes). Soft sphere, jittered starts, windows of 2 doubling to 8: many windows per ray.
    # "cpu": the numba kernels keep and pack the samples (`_cpu_windows`); "torch": the
    # torch code (and marcher). The field hands its encodings on: they come back packed
    # like the samples.
    from ngp_engine.render.renderer import visible_samples

    field, grid, o, d, t_near, t_far, jitter, st, every, ref = _search_case(backend, max_samples)
    assert compositor_for(CPU, backend) == backend      # "cpu": the kernels do run
    got, n_evaluated, encoded = visible_samples(field, grid, o, d, t_near, t_far, st, jitter,
                                                first_window=2, max_window=8)
    assert torch.equal(got.offsets, ref.offsets) and torch.equal(got.ray_idx, ref.ray_idx)
    assert torch.equal(got.t, ref.t) and torch.equal(got.dt, ref.dt)
    assert torch.equal(encoded, field.encode(o[ref.ray_idx] + ref.t[:, None] * d[ref.ray_idx]))
    # Without the hand-off interface: the same samples, no encodings.
    plain, _, none = visible_samples(SphereField(sigma=300.0, softness=0.02), grid, o, d,
                                     t_near, t_far, st, jitter, first_window=2, max_window=8)
    assert none is None and torch.equal(plain.t, got.t) and torch.equal(plain.offsets, got.offsets)
    assert ref.n_samples > 1000
    if max_samples == 20:       # 20 steps of 1.7e-3 stop before any ray turns opaque
        assert int(got.offsets.diff().max()) == 20 and n_evaluated == ref.n_samples
    else:
        hidden = every.n_samples - ref.n_samples
        assert hidden > 5000, hidden
        # Most hidden samples were never evaluated (a window's overshoot at most).
        assert ref.n_samples <= n_evaluated < ref.n_samples + hidden / 4, (n_evaluated, hidden)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("cut", ["exact", "ample", "marched", "kept"])
def test_visible_samples_within_fixed_buffers(cut, backend):
    # The GPU's search (no host read): every ray marched at once into `marched` entries,
    # the kept ones packed into `kept` entries. Where everything fits: the reference's
    # samples (marching everything, then cutting), then padding with t = dt = 0. Where a
    # buffer is too small: whole rays in order while they fit (a prefix), none after.
    from ngp_engine.render.renderer import Capacity, visible_samples_within

    field, grid, o, d, t_near, t_far, jitter, st, every, ref = _search_case(backend, 1024)
    capacity = {"exact": Capacity(), "ample": Capacity(every.n_samples + 100, ref.n_samples + 50),
                "marched": Capacity(every.n_samples // 2, ref.n_samples),
                "kept": Capacity(every.n_samples, ref.n_samples // 3)}[cut]
    got, n_marched, encoded, fits, demand = visible_samples_within(field, grid, o, d, t_near,
                                                                   t_far, st, capacity, jitter)
    size = every.n_samples if cut == "exact" else capacity.kept     # exact: kept <= marched
    assert got.n_samples == size == encoded.shape[0]
    assert demand.tolist()[0] == every.n_samples
    k = int(fits.sum())                                  # rays that fit: the first k
    assert torch.equal(fits, torch.arange(200) < k)
    if cut in ("exact", "ample"):
        assert k == 200 and demand.tolist() == [every.n_samples, ref.n_samples]
        assert int(n_marched) == every.n_samples
    else:
        assert 20 < k < 190, k
    n = int(ref.offsets[k])
    assert int(got.count) == n and torch.equal(got.offsets[:k + 1], ref.offsets[:k + 1])
    assert (got.offsets[k:] == n).all()                  # the rest own nothing
    assert torch.equal(got.t[:n], ref.t[:n]) and torch.equal(got.dt[:n], ref.dt[:n])
    assert torch.equal(got.ray_idx[:n], ref.ray_idx[:n])
    assert (got.t[n:] == 0).all() and (got.dt[n:] == 0).all() and (got.ray_idx[n:] == 199).all()
    pos = o[ref.ray_idx[:n]] + ref.t[:n, None] * d[ref.ray_idx[:n]]
    assert torch.equal(encoded[:n], field.encode(pos))
    if cut == "marched":                                 # the march kept whole rays only
        assert int(n_marched) == int(every.offsets[k]) <= capacity.marched < every.n_samples


def test_fit_capacity_at_its_edges():
    # Whole rays while offsets[r + 1] <= capacity: exactly the total keeps all, one less
    # drops the last ray with samples, a capacity on a ray boundary keeps the rays before
    # it, one below the first ray's count keeps none; padding t = dt = 0 on the last ray.
    from ngp_engine.render.ray_marching import fit_capacity

    counts = [3, 0, 4, 2, 0]
    offsets = _offsets(counts)
    full = RaySamples(_ray_idx(counts), torch.arange(1.0, 10.0), torch.full((9,), 0.5), offsets)
    for capacity, rays in ((9, 5), (12, 5), (8, 3), (7, 3), (6, 2), (3, 2), (2, 0), (0, 0)):
        s = fit_capacity(full, capacity)
        n = int(offsets[rays]) if rays < 5 else 9
        want_fits = [True] * rays + [False] * (5 - rays)
        assert s.fits.tolist() == want_fits, capacity
        assert s.n_samples == capacity and int(s.count) == n and int(s.demand) == 9
        assert s.offsets.tolist() == [min(int(o), n) for o in offsets], capacity
        assert torch.equal(s.t[:n], full.t[:n]) and torch.equal(s.ray_idx[:n], full.ray_idx[:n])
        assert (s.t[n:] == 0).all() and (s.dt[n:] == 0).all() and (s.ray_idx[n:] == 4).all()


class _ParamSphereField(EncodedSphereField):
    """EncodedSphereField whose density and colour scale with one parameter (gradients),
    taking its encodings back in the call (`renderer.RadianceField`)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.k = torch.nn.Parameter(torch.tensor(1.3))

    def density_of(self, features: torch.Tensor) -> torch.Tensor:
        return super().density_of(features) * self.k

    def __call__(self, x, d, ray_idx, encoded=None):
        enc = self.encode(x) if encoded is None else encoded
        return self.density_of(enc), self.rgb.expand(x.shape[0], 3) * self.k

    def parameters(self):
        return [self.k]


def test_render_rays_with_a_capacity():
    # Fixed buffers render what the windowed search renders, gradients included (the
    # padding adds nothing); rays that did not fit come back empty and flagged. (The
    # compositing kernels walk rays by their offsets: the padding is never read.)
    from ngp_engine.render.renderer import Capacity

    gen = torch.Generator().manual_seed(11)
    o, d = _random_rays(120, 1.0, gen)
    jitter = torch.rand(120, generator=gen)
    st = _settings(1e-4, "cpu")
    field = _ParamSphereField(sigma=300.0, softness=0.02)
    ref = render_rays(field, _grid(16, 1), o, d, st, jitter=jitter)
    (g_ref,) = torch.autograd.grad(ref.rgb.sum() + ref.depth.sum(), field.k)
    big = Capacity(ref.n_marched * 3, ref.n_samples + 999)
    got = render_rays(field, _grid(16, 1), o, d, st, jitter=jitter, capacity=big)
    (g_got,) = torch.autograd.grad(got.rgb.sum() + got.depth.sum(), field.k)
    assert got.fits.all() and int(got.n_samples) == ref.n_samples
    torch.testing.assert_close(got.rgb, ref.rgb, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.depth, ref.depth, rtol=0, atol=1e-6)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-5, atol=0)
    small = render_rays(field, _grid(16, 1), o, d, st, jitter=jitter,
                        capacity=Capacity(ref.n_marched * 3, ref.n_samples // 2))
    k = int(small.fits.sum())
    assert 10 < k < 110 and small.fits[:k].all()
    torch.testing.assert_close(small.rgb[:k], ref.rgb[:k], rtol=0, atol=1e-6)
    assert (small.opacity[k:] == 0).all() and (ref.opacity[k:] > 0.5).any()


def _expected_depth(field: SphereField, o: torch.Tensor, d: torch.Tensor) -> float:
    """sum w t / sum w along o + t d, t in [1, 2], in float64 with steps of 1e-5."""
    h = 1e-5
    t = torch.arange(1.0, 2.0, h, dtype=torch.float64)
    x = o.double() + t[:, None] * d.double()
    dist = (x - field.centre.double()).norm(dim=-1)
    sigma = field.sigma * torch.sigmoid((field.radius - dist) / field.softness)
    tau = torch.cumsum(sigma * h, 0)
    w = torch.exp(-(tau - sigma * h)) * (1 - torch.exp(-sigma * h))
    return float((w * t).sum() / w.sum())


def test_render_normals_point_outward():
    # Smooth sphere: sigma = 1000 sigmoid((r - |x - c|) / 0.005). Optical depth from outside
    # down to distance s from the surface ~ 1000 * 0.005 * ln(1 + e^(-s/0.005)), which reaches 1
    # at s = 0.0075 (4.4 steps) outside: the rays stop near the surface and see its normal.
    field = SphereField(sigma=1000.0, softness=0.005)
    grid = _grid(16, 1)
    o, d = _sphere_rays()
    out = render_rays(field, grid, o, d, _settings(1e-4), want_normals=True)
    assert (out.opacity[:4] > 0.999).all()
    assert (out.opacity[4:] < 1e-6).all()
    for i, (t_entry, (bx, by)) in enumerate(zip(ENTRY_T, OFFSETS)):
        hit = torch.tensor([0.5 + bx, 0.5 + by, -1.0 + t_entry])
        normal = (hit - field.centre) / 0.25                   # outward unit normal
        n = out.normals[i] / out.normals[i].norm()
        assert torch.dot(n, normal).item() > 0.99
        # The soft edge stops the ray a little in front of the hard entry (more so for oblique
        # rays); a float64 quadrature of the same density (step 1e-5) gives the expected depth.
        depth = (out.depth[i] / out.opacity[i]).item()
        assert t_entry - 12 * MIN_STEP < depth < t_entry
        assert depth == pytest.approx(_expected_depth(field, o[i], d[i]), abs=0.5 * MIN_STEP)
    assert torch.equal(out.normals[5], torch.zeros(3))
    # Normals are weighted by the (detached) weights: their length is about the opacity.
    torch.testing.assert_close(out.normals[:4].norm(dim=-1), out.opacity[:4], atol=1e-2, rtol=0)
