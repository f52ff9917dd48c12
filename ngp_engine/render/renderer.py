"""Render rays through a radiance field: box intersection, marching, early termination,
volume rendering. Used by training (with gradients) and by the render/eval outputs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from .occupancy_grid import OccupancyGrid
from .ray_marching import RaySamples, march_rays
from .rays import ray_box_intersect
from .volume_rendering import composite, transmittance


class RadianceField(Protocol):
    def density(self, x: torch.Tensor) -> torch.Tensor: ...            # [N, 3] -> [N]
    def __call__(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class MarchSettings:
    """How rays are marched (unit-cube units)."""

    box_min: tuple[float, float, float]
    box_max: tuple[float, float, float]
    min_step: float
    max_step: float
    cone_angle: float
    max_samples: int
    early_stop: float          # transmittance below which samples are dropped (0: keep all)
    backend: str = "auto"      # marching implementation: auto, torch or cpu


@dataclass
class RenderedRays:
    """Per-ray results of `render_rays` (R rays)."""

    rgb: torch.Tensor          # [R, 3] colour composited on the background
    opacity: torch.Tensor      # [R] sum of weights
    depth: torch.Tensor        # [R] sum of w_i t_i (unit-cube distance; divide by opacity for
                               #     the expected depth of the surface)
    normals: torch.Tensor | None  # [R, 3] weighted unit normals (not normalised), when asked
    n_marched: int             # samples the marcher produced
    n_samples: int             # samples after early termination (what the network trained on)


def render_rays(field: RadianceField, grid: OccupancyGrid, origins: torch.Tensor, dirs: torch.Tensor,
                settings: MarchSettings, background: torch.Tensor | None = None,
                jitter: torch.Tensor | None = None, want_normals: bool = False) -> RenderedRays:
    """Render R rays: unit-cube origins [R, 3], unit directions [R, 3], background [R, 3] or
    [3] (None: black). Differentiable in the field's parameters when grad is enabled."""
    n_rays = origins.shape[0]
    dev = origins.device
    box_min = torch.tensor(settings.box_min, device=dev, dtype=torch.float32)
    box_max = torch.tensor(settings.box_max, device=dev, dtype=torch.float32)
    with torch.no_grad():
        t_near, t_far = ray_box_intersect(origins, dirs, box_min, box_max)
        samples = march_rays(origins, dirs, t_near, t_far, grid, settings.min_step, settings.max_step,
                             settings.cone_angle, settings.max_samples, jitter=jitter,
                             backend=settings.backend)
        samples = _to(samples, dev)
        n_marched = samples.n_samples
        if settings.early_stop > 0 and n_marched:
            # Early ray termination (nerfacc's two-pass scheme): a cheap density-only pass finds
            # the samples hidden behind opaque ones, and only the visible ones are evaluated
            # with gradients and colour.
            pos = _positions(origins, dirs, samples)
            sigma = field.density(pos)
            trans = transmittance(sigma * samples.dt, samples.ray_idx, samples.offsets)
            samples = samples.select(trans > settings.early_stop)
    pos = _positions(origins, dirs, samples)
    sigma, rgb, nrm = shade(field, pos, dirs[samples.ray_idx], want_normals and samples.n_samples > 0)
    c = composite(sigma, rgb, samples.t, samples.dt, samples.ray_idx, samples.offsets, n_rays,
                  normals=nrm)
    color = c.rgb if background is None else c.rgb + (1.0 - c.opacity)[:, None] * background
    normals = (c.normals if c.normals is not None else origins.new_zeros(n_rays, 3)) if want_normals else None
    return RenderedRays(color, c.opacity, c.depth, normals, n_marched, samples.n_samples)


def _positions(origins: torch.Tensor, dirs: torch.Tensor, s: RaySamples) -> torch.Tensor:
    """[S, 3] sample positions (the same float32 arithmetic as the marchers)."""
    return origins[s.ray_idx] + s.t[:, None] * dirs[s.ray_idx]


def _to(s: RaySamples, dev: torch.device) -> RaySamples:
    if s.t.device == dev:
        return s
    return RaySamples(s.ray_idx.to(dev), s.t.to(dev), s.dt.to(dev), s.offsets.to(dev))


def shade(field: RadianceField, pos: torch.Tensor, d: torch.Tensor, want_normals: bool
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Density [S], colour [S, 3] and, with `want_normals`, unit normals [S, 3] (minus the
    normalised density gradient) of the field at positions pos [S, 3] seen along d [S, 3]."""
    if not want_normals:
        sigma, rgb = field(pos, d)
        return sigma, rgb, None
    sigma, rgb, grad = _with_input_gradient(field, pos, d)
    return sigma, rgb, -grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _with_input_gradient(field: RadianceField, pos: torch.Tensor, d: torch.Tensor):
    """Density, colour and d density / d position [S, 3] (for normals), without building
    gradients of the field's parameters (the table gradient is the expensive part)."""
    params = [p for p in field.parameters() if p.requires_grad]  # type: ignore[attr-defined]
    for p in params:
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            x = pos.detach().requires_grad_(True)
            sigma, rgb = field(x, d)
            (grad,) = torch.autograd.grad(sigma.sum(), x)
    finally:
        for p in params:
            p.requires_grad_(True)
    return sigma.detach(), rgb.detach(), grad


@torch.no_grad()
def render_rays_windowed(field: RadianceField, grid: OccupancyGrid, origins: torch.Tensor,
                         dirs: torch.Tensor, settings: MarchSettings,
                         background: torch.Tensor | None = None, want_normals: bool = False,
                         first_window: int = 8, max_window: int = 64) -> RenderedRays:
    """Inference rendering (no parameter gradients) that never evaluates hidden samples.

    Rays are marched a window of W samples at a time; after each window the finished rays
    (transmittance below `early_stop`, or past the box) drop out and the others resume where
    the marcher stopped, so the field only sees samples in front of the first opaque surface.
    The marcher's sample sequence is deterministic (t <- t + step(t)), so resuming at
    t_last + dt_last continues it exactly: the samples are the ones `render_rays` would take,
    and results agree with it up to the early-termination tolerance. W starts at
    `first_window` and doubles each round up to `max_window` as rays finish.
    Same inputs and outputs as `render_rays` without jitter (n_samples = samples evaluated).
    """
    n_rays = origins.shape[0]
    dev = origins.device
    box_min = torch.tensor(settings.box_min, device=dev, dtype=torch.float32)
    box_max = torch.tensor(settings.box_max, device=dev, dtype=torch.float32)
    t_near, t_far = ray_box_intersect(origins, dirs, box_min, box_max)
    rgb_acc = origins.new_zeros(n_rays, 3)
    opacity = origins.new_zeros(n_rays)
    depth = origins.new_zeros(n_rays)
    normals = origins.new_zeros(n_rays, 3) if want_normals else None
    alive = torch.nonzero(t_near < t_far).squeeze(1)                  # [A] rays still marching
    t_start = t_near[alive]                                            # [A]
    trans = origins.new_ones(alive.numel())                           # [A] transmittance so far
    used = torch.zeros(alive.numel(), dtype=torch.int64, device=dev)  # [A] samples so far
    window, n_total = first_window, 0
    while alive.numel():
        w_cap = min(window, settings.max_samples)
        s = _to(march_rays(origins[alive], dirs[alive], t_start, t_far[alive], grid, settings.min_step,
                           settings.max_step, settings.cone_angle, w_cap, backend=settings.backend), dev)
        if s.n_samples == 0:
            break
        n_total += s.n_samples
        o, d = origins[alive][s.ray_idx], dirs[alive][s.ray_idx]
        sigma, rgb, nrm = shade(field, o + s.t[:, None] * d, d, want_normals)
        c = composite(sigma, rgb, s.t, s.dt, s.ray_idx, s.offsets, alive.numel(),
                      prefix_trans=trans, normals=nrm, want_transmittance=True)
        opacity.index_add_(0, alive, c.opacity)
        rgb_acc.index_add_(0, alive, c.rgb)
        depth.index_add_(0, alive, c.depth)
        if normals is not None:
            normals.index_add_(0, alive, c.normals)
        trans = c.transmittance
        counts = s.offsets[1:] - s.offsets[:-1]                          # [A]
        used = used + counts
        last = (s.offsets[1:] - 1).clamp_min(0)
        t_next = s.t[last] + s.dt[last]
        go_on = (counts == w_cap) & (trans > settings.early_stop) & (used < settings.max_samples)
        alive, t_start, trans, used = alive[go_on], t_next[go_on], trans[go_on], used[go_on]
        window = min(2 * window, max_window)
    if background is not None:
        rgb_acc = rgb_acc + (1.0 - opacity)[:, None] * background
    return RenderedRays(rgb_acc, opacity, depth, normals, n_total, n_total)
