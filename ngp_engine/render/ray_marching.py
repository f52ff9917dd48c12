"""Ray marching through the occupancy grid: which points along each ray the network sees.

All implementations produce the same samples (same float32 arithmetic, same order):
`march_rays_torch` (reference, any device), the numba kernel in `_marching_kernel.py` (CPU)
and the Triton kernel in `_triton_marching.py` (CUDA/ROCm; CPU tensors in Triton's
interpreter). The marching rule, in unit-cube units:
- step(t) = clamp(t * cone_angle, min_step, max_step) (instant-ngp's calc_dt);
- the first sample is at t_near + jitter * step(t_near), then t <- t + step(t) while t < t_far;
- a sample is kept when its cell in the occupancy grid is occupied, at most
  `max_samples` per ray; its interval length is step(t).
Samples come packed and sorted by ray: ray i owns entries offsets[i]:offsets[i + 1].

With a `capacity` C the buffers have exactly C entries and nothing is read back to the host
(what a GPU training step needs: every host read waits for the device's queue to drain):
the rays whose samples all fit, in ray order, keep them; the first ray that does not fit
and every ray after it get none (a suffix of the rays, as instant-ngp drops the rays that
overflow its sample buffer; `RaySamples.fits` says which). Entries past offsets[R] are padding:
t = dt = 0 (a zero interval: no weight, no gradient) on the last ray.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..encoding.backends import try_import
from .occupancy_grid import BLOCK, OccupancyGrid


@dataclass
class RaySamples:
    """Packed samples of R rays (S samples in all)."""

    ray_idx: torch.Tensor   # [S] int64, ray of each sample, non-decreasing
    t: torch.Tensor         # [S] float32, distance along the (unit) ray direction
    dt: torch.Tensor        # [S] float32, interval length of the sample
    offsets: torch.Tensor   # [R + 1] int64, ray i owns [offsets[i], offsets[i + 1])
    fits: torch.Tensor | None = None   # [R] bool, with a capacity: the rays that kept all
                                       # their samples (a prefix of the rays); None: all did
    demand: torch.Tensor | None = None  # [] int64, with a capacity: the samples the rays had
                                        # before the cut (sizes the next buffers)

    @property
    def n_samples(self) -> int:
        """Entries of the buffers (with a capacity: the capacity; see `count`)."""
        return int(self.t.shape[0])

    @property
    def count(self) -> torch.Tensor:
        """[] int64 on the device: the samples the rays own (offsets[R]), without a host read."""
        return self.offsets[-1]

    def select(self, keep: torch.Tensor) -> "RaySamples":
        """Samples where keep [S] bool is true (still sorted by ray)."""
        ray_idx = self.ray_idx[keep]
        counts = torch.bincount(ray_idx, minlength=self.offsets.numel() - 1)
        return RaySamples(ray_idx, self.t[keep], self.dt[keep], _offsets(counts))


def step_bounds(steps_per_diagonal: int, n_cascades: int, grid_resolution: int) -> tuple[float, float]:
    """instant-ngp's MIN_CONE_STEPSIZE and MAX_CONE_STEPSIZE for the grid."""
    min_step = math.sqrt(3.0) / steps_per_diagonal
    max_step = math.sqrt(3.0) * (1 << (n_cascades - 1)) / grid_resolution
    return min_step, max(max_step, min_step)


def march_rays(origins: torch.Tensor, dirs: torch.Tensor, t_near: torch.Tensor, t_far: torch.Tensor,
               grid: OccupancyGrid, min_step: float, max_step: float, cone_angle: float,
               max_samples: int, jitter: torch.Tensor | None = None,
               backend: str = "auto", capacity: int | None = None) -> RaySamples:
    """March R rays (unit-cube origins [R, 3], unit dirs [R, 3], t_near/t_far [R]).

    jitter [R] in [0, 1) offsets each ray's first sample (training); None puts it at t_near.
    backend: "torch", "cpu" (numba kernel; CPU tensors only), "triton" (GPU tensors, or CPU
    tensors under TRITON_INTERPRET=1) or "auto" (cpu on the CPU, triton on CUDA/ROCm when
    importable, else torch).
    capacity: buffers of exactly that many entries (see the module's docstring); the Triton
    marcher then reads nothing back to the host.
    """
    if jitter is None:
        jitter = torch.zeros_like(t_near)
    # Past t = min_step * 2^24 a float32 t no longer moves by a step of min_step (half an
    # ulp is larger) and every marcher would loop for ever: rays end at a quarter of that
    # (some 7,000 unit-cube units with the default steps, for cameras that far from a box
    # of edge ~1), the same in every implementation.
    t_far = t_far.clamp(max=max_t(min_step))
    backend = marcher_for(origins.device, backend)
    if backend == "triton":
        from . import _triton_marching as K  # noqa: PLC0415 - triton loads on first GPU use

        ray_idx, t, dt, offsets, fits, demand = K.march(
            origins, dirs, t_near, t_far, jitter, grid.occupied, grid.n_cascades, grid.resolution,
            min_step, max_step, cone_angle, max_samples, capacity)
        return RaySamples(ray_idx, t, dt, offsets, fits, demand)
    if backend == "cpu":
        s = _march_rays_kernel(origins, dirs, t_near, t_far, grid, min_step, max_step,
                               cone_angle, max_samples, jitter)
    else:
        s = march_rays_torch(origins, dirs, t_near, t_far, grid, min_step, max_step, cone_angle,
                             max_samples, jitter)
    return s if capacity is None else fit_capacity(s, capacity)


def fit_offsets(offsets: torch.Tensor, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which of the rays owning offsets [R + 1] (packed in order) fit in `capacity` entries
    [R] bool (a prefix of the rays), and their offsets with the rest owning nothing
    [R + 1]. Device ops only."""
    # Rays are packed in order: the ones that fit own the first `kept` entries.
    kept = torch.where(offsets <= capacity, offsets, 0).amax()
    return offsets[1:] <= capacity, torch.minimum(offsets, kept)


def fit_capacity(s: RaySamples, capacity: int) -> RaySamples:
    """Packed samples `s` of R rays in buffers of exactly `capacity` entries (the module's
    docstring: whole rays, in order, while they fit; padding t = dt = 0 on the last ray).
    Device ops only: no host read."""
    n_rays = s.offsets.numel() - 1
    fits, offsets = fit_offsets(s.offsets, capacity)
    kept = offsets[-1]
    m = min(capacity, s.n_samples)
    live = torch.arange(capacity, device=s.t.device) < kept
    t, dt = s.t.new_zeros(capacity), s.dt.new_zeros(capacity)
    ray_idx = torch.full((capacity,), max(n_rays - 1, 0), dtype=torch.int64, device=s.t.device)
    t[:m], dt[:m], ray_idx[:m] = s.t[:m], s.dt[:m], s.ray_idx[:m]
    return RaySamples(torch.where(live, ray_idx, max(n_rays - 1, 0)),
                      torch.where(live, t, 0.0), torch.where(live, dt, 0.0), offsets, fits,
                      s.offsets[-1])


MARCHERS = ("auto", "torch", "cpu", "triton")
# The numba marcher marches once into a padded [R, max_samples] buffer (then packs it) when
# it has at most this many slots (float32 t and dt: 8 MiB; the search's windows have at
# most 128 samples per ray), else counts then fills (`scripts/bench_marching.py`: with the
# first window one march took 24 ms against 31-33 for two; whole rays, 1,024 per ray
# in a 32 MiB buffer, were no faster, 35-44 against 40 ms).
PADDED_MARCH_SLOTS = 1 << 20


def max_t(min_step: float) -> float:
    """How far along a ray the marchers go at most: min_step * 2^22 (see `march_rays`)."""
    return min_step * float(1 << 22)


def marcher_for(device: torch.device, requested: str = "auto") -> str:
    """The marching implementation for tensors on `device` (see `march_rays`)."""
    if requested not in MARCHERS:
        raise ValueError(f"marching backend: {requested!r} is not one of {', '.join(MARCHERS)}")
    if requested != "auto":
        return requested
    if device.type == "cpu":
        return "cpu"
    if device.type == "cuda" and try_import("ngp_engine.render._triton_marching")[0] is not None:
        return "triton"
    return "torch"


def march_rays_torch(origins: torch.Tensor, dirs: torch.Tensor, t_near: torch.Tensor,
                     t_far: torch.Tensor, grid: OccupancyGrid, min_step: float, max_step: float,
                     cone_angle: float, max_samples: int, jitter: torch.Tensor) -> RaySamples:
    """Reference marcher: all rays advance together, one step per loop iteration."""
    dev = origins.device
    n = origins.shape[0]
    f32 = torch.float32
    cone = torch.tensor(cone_angle, dtype=f32, device=dev)

    def step(t: torch.Tensor) -> torch.Tensor:
        return (t * cone).clamp(min_step, max_step)

    active = t_near < t_far
    t = t_near + jitter * step(t_near)
    count = torch.zeros(n, dtype=torch.int64, device=dev)
    ts, dts, keeps = [], [], []
    while True:
        active = active & (t < t_far) & (count < max_samples)
        if not bool(active.any()):
            break
        dt = step(t)
        p = origins + t[:, None] * dirs
        keep = active & grid.lookup(p)
        ts.append(t)
        dts.append(dt)
        keeps.append(keep)
        count += keep
        t = t + dt
    if not ts:
        empty = torch.zeros(0, device=dev)
        return RaySamples(torch.zeros(0, dtype=torch.int64, device=dev), empty, empty.clone(),
                          torch.zeros(n + 1, dtype=torch.int64, device=dev))
    # [R, K] in ray-major order, so nonzero() comes out sorted by ray then by step.
    keep = torch.stack(keeps, dim=1)
    ray_idx, k = torch.nonzero(keep, as_tuple=True)
    t_all = torch.stack(ts, dim=1)
    dt_all = torch.stack(dts, dim=1)
    return RaySamples(ray_idx, t_all[ray_idx, k], dt_all[ray_idx, k], _offsets(count))


def _march_rays_kernel(origins, dirs, t_near, t_far, grid, min_step, max_step, cone_angle,
                       max_samples, jitter) -> RaySamples:
    from . import _marching_kernel as K  # noqa: PLC0415 - numba loads on first use

    def np32(x: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(x.detach().to(torch.float32).numpy())

    o, d, tn, tf, jt = np32(origins), np32(dirs), np32(t_near), np32(t_far), np32(jitter)
    bits = np.ascontiguousarray(grid.occupied.numpy().view(np.uint8))
    blocks = grid.block_occupancy()
    block_res = 0 if blocks is None else grid.resolution // BLOCK
    blocks = np.zeros((1, 1), np.uint8) if blocks is None else blocks.numpy().view(np.uint8)
    args = (o, d, tn, tf, jt, bits, blocks, block_res, grid.n_cascades, grid.resolution,
            np.float32(min_step), np.float32(max_step), np.float32(cone_angle), max_samples)
    counts = np.empty(o.shape[0], dtype=np.int64)
    padded = o.shape[0] * max_samples <= PADDED_MARCH_SLOTS
    t_pad = np.empty((o.shape[0], max_samples if padded else 0), np.float32)
    dt_pad = np.empty_like(t_pad)
    K.march_padded(*args, t_pad, dt_pad, counts)            # [R, 0]: counting only
    offsets = np.zeros(o.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    t_out = np.empty(total, np.float32)
    dt_out = np.empty(total, np.float32)
    ray_out = np.empty(total, np.int64)
    if padded:
        K.pack_samples(t_pad, dt_pad, offsets, t_out, dt_out, ray_out)
    else:
        K.fill_samples(*args, offsets, t_out, dt_out, ray_out)
    return RaySamples(torch.from_numpy(ray_out), torch.from_numpy(t_out), torch.from_numpy(dt_out),
                      torch.from_numpy(offsets))


def _offsets(counts: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(counts.numel() + 1, dtype=torch.int64, device=counts.device)
    torch.cumsum(counts, 0, out=out[1:])
    return out
