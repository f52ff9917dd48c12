"""Render rays through a radiance field: box intersection, marching, early termination,
volume rendering. Used by training (with gradients) and by the render/eval outputs."""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Protocol

import torch

from ..encoding.backends import try_import
from .occupancy_grid import OccupancyGrid
from .ray_marching import RaySamples, fit_offsets, march_rays
from .rays import ray_box_intersect
from .volume_rendering import composite, compositor_for, transmittance


class RadianceField(Protocol):
    """density(x [N, 3]) -> [N]; field(x [S, 3], d, ray_idx) -> density [S], rgb [S, 3], where
    d [R, 3] are the unit directions of the rays and ray_idx [S] the ray of each sample
    (a ray's samples share its direction: the field encodes it once per ray).

    A field may also offer encode(x) -> features and density_of(features) -> density, and
    take `encoded=features` in its call: the training renderer then hands the features of
    its density-only search to the shading pass instead of encoding the positions again.
    """

    def density(self, x: torch.Tensor) -> torch.Tensor: ...
    def __call__(self, x: torch.Tensor, d: torch.Tensor, ray_idx: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]: ...


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
    backend: str = "auto"      # kernels: auto, torch, cpu (numba marcher) or triton (marcher
                               # and compositing; ray_marching.marcher_for, compositor_for)


@dataclass
class RenderedRays:
    """Per-ray results of `render_rays` (R rays)."""

    rgb: torch.Tensor          # [R, 3] colour composited on the background
    opacity: torch.Tensor      # [R] sum of weights
    depth: torch.Tensor        # [R] sum of w_i t_i (unit-cube distance; divide by opacity for
                               #     the expected depth of the surface)
    normals: torch.Tensor | None  # [R, 3] weighted unit normals (not normalised), when asked
    n_marched: int | torch.Tensor  # samples the marcher produced
    n_samples: int | torch.Tensor  # samples after early termination (what the network trained
                                   # on); with a capacity both are [] int64 device tensors
    fits: torch.Tensor | None = None  # [R] bool, with a capacity: the rays rendered with all
                                      # their samples (the others got none); None: all were
    demand: torch.Tensor | None = None  # [2] int64, with a capacity: samples marched and kept
                                        # before the buffers cut any (sizes the next ones)


def render_rays(field: RadianceField, grid: OccupancyGrid, origins: torch.Tensor, dirs: torch.Tensor,
                settings: MarchSettings, background: torch.Tensor | None = None,
                jitter: torch.Tensor | None = None, want_normals: bool = False,
                capacity: Capacity | None = None) -> RenderedRays:
    """Render R rays: unit-cube origins [R, 3], unit directions [R, 3], background [R, 3] or
    [3] (None: black). Differentiable in the field's parameters when grad is enabled.

    With early termination (settings.early_stop > 0), `visible_samples` first finds, with
    density only and without gradients, the samples in front of each ray's first opaque
    point; only those are shaded with gradients (instant-ngp's and nerfacc's two passes).
    `n_marched` then counts the density evaluations of that search.

    With a `capacity` (a GPU training step; early termination on, offsets-walking
    compositing: the "cpu" or "triton" kernels) the search is `visible_samples_within`:
    fixed-size buffers and no host read; `fits` says which rays were rendered.
    """
    n_rays = origins.shape[0]
    dev = origins.device
    with torch.no_grad():
        t_near, t_far = ray_box_intersect(origins, dirs, *box_tensors(settings, dev))
        encoded = fits = demand = None
        if capacity is not None and n_rays:
            if compositor_for(dev, settings.backend) not in ("cpu", "triton"):
                raise ValueError("render_rays: a capacity needs the compositing kernels (cpu or "
                                 "triton), which read each ray's samples by its offsets")
            samples, n_marched, encoded, fits, demand = visible_samples_within(
                field, grid, origins, dirs, t_near, t_far, settings, capacity, jitter)
        elif settings.early_stop > 0:
            samples, n_marched, encoded = visible_samples(field, grid, origins, dirs, t_near,
                                                          t_far, settings, jitter)
        else:
            samples = _to(march_rays(origins, dirs, t_near, t_far, grid, settings.min_step,
                                     settings.max_step, settings.cone_angle, settings.max_samples,
                                     jitter=jitter, backend=settings.backend), dev)
            n_marched = samples.n_samples
    pos = _positions(origins, dirs, samples)
    sigma, rgb, nrm = shade(field, pos, dirs, samples.ray_idx, want_normals and samples.n_samples > 0,
                            encoded)
    c = composite(sigma, rgb, samples.t, samples.dt, samples.ray_idx, samples.offsets, n_rays,
                  normals=nrm, backend=settings.backend)
    color = c.rgb if background is None else c.rgb + (1.0 - c.opacity)[:, None] * background
    normals = (c.normals if c.normals is not None else origins.new_zeros(n_rays, 3)) if want_normals else None
    n_samples = samples.count if fits is not None else samples.n_samples
    return RenderedRays(color, c.opacity, c.depth, normals, n_marched, n_samples, fits, demand)


@functools.lru_cache(maxsize=16)
def box_tensors(settings: MarchSettings, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """settings' box_min and box_max [3] float32 on `device`, made once: on a GPU a tensor
    made from host values is a blocking copy, which waits for the device's queue."""
    return (torch.tensor(settings.box_min, device=device, dtype=torch.float32),
            torch.tensor(settings.box_max, device=device, dtype=torch.float32))


@dataclass(frozen=True)
class Capacity:
    """Buffer sizes of a search without host reads (`visible_samples_within`): `marched`
    samples (density only) and `kept` samples (shaded with gradients). None: the marched
    buffer sized to fit exactly, by reading the count back, and the kept one as large (for
    the first steps, while nothing has been measured yet)."""

    marched: int | None = None
    kept: int | None = None

    MARGIN = 1.25       # buffers hold this times the samples per ray last measured ...
    GRAIN = 1024        # ... plus up to two grains (sizes in whole grains)

    @classmethod
    def after(cls, rays_then: int, marched: int, kept: int, rays_now: int) -> "Capacity":
        """Buffers for `rays_now` rays after `rays_then` rays asked for `marched` and `kept`
        samples (their demand, before any cut)."""
        def size(n: int) -> int:
            want = cls.MARGIN * n * rays_now / max(rays_then, 1) + cls.GRAIN
            return cls.GRAIN * (int(want) // cls.GRAIN + 1)
        return cls(size(marched), size(kept))


@torch.no_grad()
def visible_samples_within(field: RadianceField, grid: OccupancyGrid, origins: torch.Tensor,
                           dirs: torch.Tensor, t_near: torch.Tensor, t_far: torch.Tensor,
                           settings: MarchSettings, capacity: Capacity,
                           jitter: torch.Tensor | None = None
                           ) -> tuple[RaySamples, torch.Tensor, torch.Tensor | None, torch.Tensor,
                                      torch.Tensor]:
    """`visible_samples` in fixed-size buffers, for GPUs: nothing is read back to the host.

    Every ray is marched to its end in one go into `capacity.marched` entries (the rays that
    do not fit get no samples: `ray_marching.fit_capacity`), the density of every entry is
    evaluated, and each ray keeps the samples with transmittance in front above
    settings.early_stop (a prefix of the ray: optical depths summed in float64, so that
    the sums only grow), packed into `capacity.kept` entries the same way (padding: t = dt
    = 0 on the last ray). No windows: whether any ray goes on is a host read; the hidden
    samples cost a density evaluation each instead (instant-ngp evaluates them too).

    Returns the kept samples (capacity.kept entries), how many were marched and evaluated
    ([] int64), their encodings [kept, L * F] when the field offers `encode` (else None; the
    padding's rows are copies of real ones), which rays fit both buffers [R] bool, and the
    demand [2] int64: the samples marched before the marched buffer cut any, and the kept
    ones before the kept buffer cut any (for rays the marched buffer cut, estimated at the
    rate of the others).
    """
    n_rays, dev = origins.shape[0], origins.device
    s = _to(march_rays(origins, dirs, t_near, t_far, grid, settings.min_step, settings.max_step,
                       settings.cone_angle, settings.max_samples, jitter=jitter,
                       backend=settings.backend, capacity=capacity.marched), dev)
    size = s.n_samples                          # capacity.marched, or exactly the samples
    sd, enc = _optical_thickness(field, _positions(origins, dirs, s), s.dt)
    slot = torch.arange(size, device=dev)
    live = slot < s.count
    # Optical depth in front of each sample within its ray: an inclusive float64 sum shifted
    # by one (so it never decreases along a ray) minus the sum in front of the ray's first.
    # (A NaN density counts as none: a NaN in a batch-wide sum would empty every later ray.)
    total = torch.cumsum(torch.where(live & ~sd.isnan(), sd, 0.0).double(), 0)
    front = torch.cat([total.new_zeros(1), total[:-1]])                 # [M] before each entry
    first = front[s.offsets[:-1].clamp_max(max(size - 1, 0))] if size else front.new_zeros(n_rays)
    keep = live & (torch.exp(-(front - first[s.ray_idx])) > settings.early_stop)
    kept = torch.zeros(n_rays, dtype=torch.int64, device=dev).index_add_(0, s.ray_idx, keep.long())
    offsets = torch.zeros(n_rays + 1, dtype=torch.int64, device=dev)
    torch.cumsum(kept, 0, out=offsets[1:])
    # Kept samples of the rays the marched buffer cut: estimated at the rate of those marched.
    marched = s.count if s.demand is None else s.demand
    kept_all = (offsets[-1].double() * marched.double() / s.count.clamp_min(1).double()).round()
    demand = torch.stack([marched, kept_all.long()])
    room = size if capacity.kept is None else capacity.kept
    fits, offsets = fit_offsets(offsets, room)                          # [R], a prefix
    n_kept = offsets[-1]
    keep = keep & fits[s.ray_idx]
    # Entry i of ray r goes to offsets[r] + (i - the ray's first entry); the rest to a
    # spare slot past the end.
    dest = torch.where(keep, offsets[s.ray_idx] + slot - s.offsets[s.ray_idx], room)
    src = torch.zeros(room + 1, dtype=torch.int64, device=dev).scatter_(0, dest, slot)[:room]
    real = torch.arange(room, device=dev) < n_kept
    last = max(n_rays - 1, 0)
    samples = RaySamples(torch.where(real, s.ray_idx[src], last), torch.where(real, s.t[src], 0.0),
                         torch.where(real, s.dt[src], 0.0), offsets)
    fitted = fits if s.fits is None else fits & s.fits
    encoded = None if enc is None else enc.index_select(0, src)
    return samples, s.count, encoded, fitted, demand


class RayWindows:
    """Marches rays a window of W samples at a time, so that rays which turn opaque stop
    being marched (and their hidden samples are never evaluated).

    `next()` gives the alive rays [A] (indices into the R rays), their next window of
    samples and the transmittance in front of it [A]; the caller evaluates the window and
    calls `advance(trans)` with the transmittance behind it [A]. Rays go on while their
    window was full (the marcher stopped at W, not at the box), they are not opaque
    (trans > early_stop) and they have fewer than max_samples samples (the last window is
    cut to exactly max_samples). The marcher's sequence is deterministic (t <- t + step(t)),
    so resuming at t_last + dt_last continues it exactly; only the first window is jittered.
    W starts at `first_window` and doubles each round up to `max_window`.
    """

    def __init__(self, grid: OccupancyGrid, origins: torch.Tensor, dirs: torch.Tensor,
                 t_near: torch.Tensor, t_far: torch.Tensor, settings: MarchSettings,
                 jitter: torch.Tensor | None, first_window: int, max_window: int) -> None:
        self.grid, self.origins, self.dirs, self.t_far, self.settings = grid, origins, dirs, t_far, settings
        dev = origins.device
        self.alive = torch.nonzero(t_near < t_far).squeeze(1)                 # [A]
        self.t_start = t_near[self.alive]
        self.jitter = None if jitter is None else jitter[self.alive]
        self.trans = origins.new_ones(self.alive.numel())
        self.used = torch.zeros(self.alive.numel(), dtype=torch.int64, device=dev)
        self.window, self.max_window = first_window, max_window
        self.width = 0             # the samples per ray of the window handed out, at most
        self._cap_bound = 0        # the windows' sizes so far: no ray has more samples than that
        self._s: RaySamples | None = None          # the window handed out, and for each
        self._full: torch.Tensor | None = None     # alive ray: whether it was full [A] and
        self._next_t: torch.Tensor | None = None   # where its next window starts [A]

    def next(self) -> tuple[torch.Tensor, RaySamples, torch.Tensor] | None:
        """(alive rays [A], their window's samples, transmittance in front [A]); None when done."""
        if not self.alive.numel():
            return None
        st = self.settings
        w_cap = self.width = min(self.window, st.max_samples)
        s = _to(march_rays(self.origins[self.alive], self.dirs[self.alive], self.t_start,
                           self.t_far[self.alive], self.grid, st.min_step, st.max_step,
                           st.cone_angle, w_cap, jitter=self.jitter, backend=st.backend),
                self.origins.device)
        if s.n_samples == 0:
            return None
        counts = s.offsets[1:] - s.offsets[:-1]                                 # [A]
        last = (s.offsets[1:] - 1).clamp_min(0)
        self._full = counts == w_cap
        self._next_t = s.t[last] + s.dt[last]
        if self._cap_bound + w_cap > st.max_samples:     # some ray may pass the cap: cut it
            within = torch.arange(s.n_samples, device=s.t.device) - s.offsets[s.ray_idx]
            over = self.used[s.ray_idx] + within >= st.max_samples
            if bool(over.any()):
                s = s.select(~over)
        self._cap_bound += w_cap
        self._s = s
        return self.alive, s, self.trans

    def advance(self, trans: torch.Tensor) -> None:
        """The transmittance behind each alive ray's window [A]: drop the finished rays."""
        s = self._s
        assert s is not None and self._full is not None and self._next_t is not None
        self.used = self.used + (s.offsets[1:] - s.offsets[:-1])
        go_on = self._full & (trans > self.settings.early_stop) & (self.used < self.settings.max_samples)
        self.alive, self.t_start = self.alive[go_on], self._next_t[go_on]
        self.trans, self.used = trans[go_on], self.used[go_on]
        self.jitter = None
        self.window = min(2 * self.window, self.max_window)


@torch.no_grad()
def visible_samples(field: RadianceField, grid: OccupancyGrid, origins: torch.Tensor,
                    dirs: torch.Tensor, t_near: torch.Tensor, t_far: torch.Tensor,
                    settings: MarchSettings, jitter: torch.Tensor | None = None,
                    first_window: int = 16, max_window: int = 128
                    ) -> tuple[RaySamples, int, torch.Tensor | None]:
    """The samples of R rays with transmittance in front of them above settings.early_stop
    (packed, sorted by ray then t), how many samples had their density evaluated, and the
    kept samples' encodings [S, L * F] when the field offers `encode` (else None).

    The same samples as marching every ray to its end and cutting where the transmittance
    falls below early_stop (up to float rounding of the transmittance), but marched in
    windows (`RayWindows`): behind an opaque surface nothing is evaluated. Late in
    training, when surfaces are opaque, that halves the density evaluations of a step
    (`scripts/bench_nerf_step.py --long` prints the evaluations per kept sample).
    """
    windows = RayWindows(grid, origins, dirs, t_near, t_far, settings, jitter, first_window, max_window)
    reuse = hasattr(field, "encode") and hasattr(field, "density_of")
    rays, ts, dts, feats = [], [], [], []
    n_evaluated = 0
    # On the CPU, numba kernels keep and pack the samples (`_cpu_windows`); the torch code
    # below is the reference (and what GPUs run).
    runs = None
    if compositor_for(origins.device, settings.backend) == "cpu":
        from . import _cpu_windows  # noqa: PLC0415 - numba compiles on first use

        runs = _cpu_windows.Runs(origins.shape[0])
    while (got := windows.next()) is not None:
        alive, s, prefix = got
        n_evaluated += s.n_samples
        sd, enc = _optical_thickness(field, _positions(origins[alive], dirs[alive], s), s.dt)
        if runs is not None:
            kept, behind = _cpu_windows.window_keep(sd, s.offsets, prefix, settings.early_stop)
            runs.add(alive, s, kept, enc)
            windows.advance(behind)
            continue
        # [S] in front; no ray has more samples than its window (no read from the device).
        trans = prefix[s.ray_idx] * transmittance(sd, s.ray_idx, s.offsets, windows.width)
        keep = trans > settings.early_stop
        if reuse:
            feats.append(enc[keep])
        rays.append(alive[s.ray_idx[keep]])
        ts.append(s.t[keep])
        dts.append(s.dt[keep])
        optical = sd.new_zeros(alive.numel()).index_add_(0, s.ray_idx, sd)
        windows.advance(prefix * torch.exp(-optical))
    n_rays = origins.shape[0]
    if runs is not None:
        samples, encoded = runs.packed()
        return samples, n_evaluated, encoded
    if not rays:
        empty = origins.new_zeros(0)
        return RaySamples(torch.zeros(0, dtype=torch.int64, device=origins.device), empty,
                          empty.clone(), torch.zeros(n_rays + 1, dtype=torch.int64,
                                                     device=origins.device)), n_evaluated, None
    ray_idx = torch.cat(rays)
    # Windows come in marching order, so a stable sort by ray keeps each ray's samples in t order.
    ray_idx, order = torch.sort(ray_idx, stable=True)
    counts = torch.bincount(ray_idx, minlength=n_rays)
    offsets = torch.zeros(n_rays + 1, dtype=torch.int64, device=origins.device)
    torch.cumsum(counts, 0, out=offsets[1:])
    encoded = torch.cat(feats)[order] if reuse else None
    return (RaySamples(ray_idx, torch.cat(ts)[order], torch.cat(dts)[order], offsets), n_evaluated,
            encoded)


def _optical_thickness(field: RadianceField, pos: torch.Tensor, dt: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """sigma * dt [S] of samples at pos [S, 3] with intervals dt [S], and their encodings
    [S, L * F] when the field offers `encode` (None otherwise): the search's evaluation."""
    if hasattr(field, "encode") and hasattr(field, "density_of"):
        enc = field.encode(pos)                                         # type: ignore[attr-defined]
        return field.density_of(enc) * dt, enc                          # type: ignore[attr-defined]
    return field.density(pos) * dt, None


def _positions(origins: torch.Tensor, dirs: torch.Tensor, s: RaySamples) -> torch.Tensor:
    """[S, 3] sample positions (the same float32 arithmetic as the marchers; on the CPU one
    numba pass instead of two gathers and two [S, 3] temporaries; not where a gradient must
    flow to the rays)."""
    if (origins.device.type == "cpu" and origins.dtype == dirs.dtype == s.t.dtype == torch.float32
            and not (torch.is_grad_enabled() and (origins.requires_grad or dirs.requires_grad))):
        kernels = try_import("ngp_engine.render._cpu_windows")[0]
        if kernels is not None:
            return kernels.positions(origins, dirs, s.ray_idx, s.t)
    return origins[s.ray_idx] + s.t[:, None] * dirs[s.ray_idx]


def _to(s: RaySamples, dev: torch.device) -> RaySamples:
    if s.t.device == dev:
        return s
    moved = {f.name: getattr(s, f.name) for f in dataclasses.fields(s)}
    return RaySamples(**{k: v if v is None else v.to(dev) for k, v in moved.items()})


def shade(field: RadianceField, pos: torch.Tensor, d: torch.Tensor, ray_idx: torch.Tensor,
          want_normals: bool, encoded: torch.Tensor | None = None
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Density [S], colour [S, 3] and, with `want_normals`, unit normals [S, 3] (minus the
    normalised density gradient) of the field at positions pos [S, 3] on rays ray_idx [S]
    of directions d [R, 3]; `encoded`: the field's encodings of pos, already computed."""
    kw = {} if encoded is None else {"encoded": encoded}
    if not want_normals:
        sigma, rgb = field(pos, d, ray_idx, **kw)
        return sigma, rgb, None
    sigma, rgb, grad = _with_input_gradient(field, pos, d, ray_idx, kw)
    return sigma, rgb, -grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _with_input_gradient(field: RadianceField, pos: torch.Tensor, d: torch.Tensor,
                         ray_idx: torch.Tensor, kw: dict):
    """Density, colour and d density / d position [S, 3] (for normals), without building
    gradients of the field's parameters (the table gradient is the expensive part)."""
    params = [p for p in field.parameters() if p.requires_grad]  # type: ignore[attr-defined]
    for p in params:
        p.requires_grad_(False)
    try:
        with torch.enable_grad():
            x = pos.detach().requires_grad_(True)
            sigma, rgb = field(x, d, ray_idx, **kw)
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

    Rays are marched in windows (`RayWindows`): each window is shaded and composited with
    the transmittance in front of it, and rays that turned opaque or left the box drop out,
    so the field only sees samples in front of the first opaque surface, the ones
    `render_rays` would take; results agree with it up to the early-termination tolerance.
    Same inputs and outputs as `render_rays` without jitter (n_samples = samples evaluated).
    """
    n_rays = origins.shape[0]
    dev = origins.device
    t_near, t_far = ray_box_intersect(origins, dirs, *box_tensors(settings, dev))
    rgb_acc = origins.new_zeros(n_rays, 3)
    opacity = origins.new_zeros(n_rays)
    depth = origins.new_zeros(n_rays)
    normals = origins.new_zeros(n_rays, 3) if want_normals else None
    windows = RayWindows(grid, origins, dirs, t_near, t_far, settings, None, first_window, max_window)
    n_total = 0
    while (got := windows.next()) is not None:
        alive, s, trans = got
        n_total += s.n_samples
        d_alive = dirs[alive]
        sigma, rgb, nrm = shade(field, _positions(origins[alive], d_alive, s), d_alive, s.ray_idx,
                                want_normals)
        c = composite(sigma, rgb, s.t, s.dt, s.ray_idx, s.offsets, alive.numel(),
                      prefix_trans=trans, normals=nrm, want_transmittance=True,
                      backend=settings.backend)
        opacity.index_add_(0, alive, c.opacity)
        rgb_acc.index_add_(0, alive, c.rgb)
        depth.index_add_(0, alive, c.depth)
        if normals is not None:
            normals.index_add_(0, alive, c.normals)
        windows.advance(c.transmittance)
    if background is not None:
        rgb_acc = rgb_acc + (1.0 - opacity)[:, None] * background
    return RenderedRays(rgb_acc, opacity, depth, normals, n_total, n_total)
