"""instant-ngp's occupancy (density) grid with cascades: which cells of the scene box may hold
matter, so that ray marching skips empty space.

Layout: `n_cascades` grids of `resolution`^3 cells. Cascade k covers the cube centred on 0.5 with
edge 2^k (unit-cube coordinates), so cascade 0 is the unit cube and the last one the scene box.
A point belongs to the finest cascade containing it. Cells are stored x-major:
index = (ix * R + iy) * R + iz.

Values are optical thicknesses (density x the cascade's minimum step, as instant-ngp stores them);
-1 marks a cell no training camera sees, which stays empty for ever (instant-ngp's
`mark_untrained_density_grid`). Update rule (instant-ngp `update_density_grid_nerf`):
value = max(decay * value, new sample), occupied = value > min(threshold, mean of cascade 0).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..config import OccupancyGridConfig


MAX_CASCADES = 8
BLOCK = 8          # cells per edge of the blocks `block_occupancy` summarises


def n_cascades_for(aabb_scale: float) -> int:
    """Cascades covering a scene box of edge `aabb_scale`: cascade k spans 2**k unit cubes."""
    if aabb_scale <= 1:
        return 1
    return min(MAX_CASCADES, 1 + math.ceil(math.log2(aabb_scale)))


def cascade_of(points: torch.Tensor, n_cascades: int) -> torch.Tensor:
    """Finest cascade containing each point: [N, 3] float32 -> [N] int64.

    k = exponent of frexp(max |p - 0.5|) + 1, clamped to [0, n_cascades - 1]; i.e. k = 0 for
    max |p - 0.5| < 0.5, k = 1 below 1, k = 2 below 2, ...
    """
    m = (points - 0.5).abs().amax(dim=-1)
    _, e = torch.frexp(m)
    return (e.to(torch.int64) + 1).clamp(0, n_cascades - 1)


def cell_of(points: torch.Tensor, cascade: torch.Tensor, resolution: int) -> torch.Tensor:
    """Flat cell index within the cascade: [N, 3], [N] -> [N] int64 (clamped to the grid)."""
    scale = torch.ldexp(torch.ones_like(points[:, 0]), cascade.to(torch.int32))     # 2^k, [N]
    rel = (points - 0.5) / scale[:, None] + 0.5                                      # [N, 3] in [0, 1)
    ijk = (rel * resolution).floor().to(torch.int64).clamp(0, resolution - 1)
    return (ijk[:, 0] * resolution + ijk[:, 1]) * resolution + ijk[:, 2]


class OccupancyGrid:
    """The grid's state (values, occupancy bits) and its update rule."""

    def __init__(self, cfg: OccupancyGridConfig, n_cascades: int, min_step: float,
                 device: torch.device) -> None:
        self.cfg = cfg
        self.n_cascades = n_cascades
        self.resolution = cfg.resolution
        self.min_step = min_step
        self.device = device
        n = self.n_cells
        self.values = torch.zeros(n_cascades, n, device=device)                    # [C, R^3]
        self.occupied = torch.ones(n_cascades, n, dtype=torch.bool, device=device)  # [C, R^3]
        self.updates = 0
        self._blocks: tuple[torch.Tensor, int, torch.Tensor] | None = None

    @property
    def n_cells(self) -> int:
        return self.resolution ** 3

    # ---------------------------------------------------------------- geometry
    def cell_centres(self, cascade: int, index: torch.Tensor | None = None,
                     jitter: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-cube positions of cells [N, 3] (all cells when `index` is None); `jitter` [N, 3]
        in [0, 1) moves each point inside its cell instead of the centre."""
        r = self.resolution
        if index is None:
            index = torch.arange(self.n_cells, device=self.device)
        ijk = torch.stack([index // (r * r), (index // r) % r, index % r], dim=-1).to(torch.float32)
        ijk = ijk + (0.5 if jitter is None else jitter)
        return (ijk / r - 0.5) * (2.0 ** cascade) + 0.5

    def lookup(self, points: torch.Tensor) -> torch.Tensor:
        """Occupancy at points: [N, 3] unit-cube -> [N] bool (False outside the scene box)."""
        k = cascade_of(points, self.n_cascades)
        cell = cell_of(points, k, self.resolution)
        half = 2.0 ** (self.n_cascades - 2)          # the last cascade's half-edge
        inside = ((points - 0.5).abs() <= half).all(dim=-1)
        return self.occupied[k, cell] & inside

    # ---------------------------------------------------------------- updates
    @torch.no_grad()
    def mark_unseen(self, c2w: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, cx: torch.Tensor,
                    cy: torch.Tensor, width: int, height: int, chunk: int = 1 << 18) -> None:
        """Set cells no camera sees to -1 (never occupied).

        c2w [M, 4, 4] in unit-cube coordinates, intrinsics [M]. A cell counts as seen when its
        centre projects in front of a camera and within the image grown by the cell's projected
        half-diagonal (so cells straddling the border are kept, as instant-ngp's corner test).
        """
        w2c = torch.linalg.inv(c2w.double()).float()                      # [M, 4, 4]
        for k in range(self.n_cascades):
            half_diag = 0.5 * math.sqrt(3.0) * (2.0 ** k) / self.resolution
            seen = torch.zeros(self.n_cells, dtype=torch.bool, device=self.device)
            for start in range(0, self.n_cells, chunk):
                idx = torch.arange(start, min(start + chunk, self.n_cells), device=self.device)
                p = self.cell_centres(k, idx)                                              # [N, 3]
                pc = torch.einsum("mij,nj->mni", w2c[:, :3, :3], p) + w2c[:, None, :3, 3]  # [M, N, 3]
                depth = -pc[..., 2]
                z = depth.clamp_min(1e-6)
                u = cx[:, None] + fx[:, None] * pc[..., 0] / z
                v = cy[:, None] - fy[:, None] * pc[..., 1] / z
                mu = fx[:, None] * half_diag / z
                mv = fy[:, None] * half_diag / z
                ok = ((depth > -half_diag) & (u > -mu) & (u < width + mu)
                      & (v > -mv) & (v < height + mv))
                seen[start:start + idx.numel()] = ok.any(dim=0)
            self.values[k][~seen] = -1.0
        self._refresh_bits()

    @torch.no_grad()
    def update(self, density_fn: Callable[[torch.Tensor], torch.Tensor], step: int,
               generator: torch.Generator | None = None, chunk: int = 1 << 18) -> None:
        """One update (call every `update_interval` steps). density_fn: [N, 3] -> [N] density."""
        n = self.n_cells
        for k in range(self.n_cascades):
            idx = self.cells_to_update(k, step, generator)
            jitter = torch.rand(idx.numel(), 3, device=self.device, generator=generator)
            fresh = torch.zeros(n, device=self.device)
            step_k = self.min_step * (2.0 ** k)
            for start in range(0, idx.numel(), chunk):
                sel = idx[start:start + chunk]
                p = self.cell_centres(k, sel, jitter[start:start + chunk])
                thickness = density_fn(p).float() * step_k
                fresh.scatter_reduce_(0, sel, thickness, reduce="amax")
            old = self.values[k]
            self.values[k] = torch.where(old < 0, old, torch.maximum(old * self.cfg.decay, fresh))
        self.updates += 1
        self._refresh_bits()

    def cells_to_update(self, k: int, step: int, generator: torch.Generator | None = None
                        ) -> torch.Tensor:
        """Cells of cascade k that an update evaluates [M] int64: all of them during the
        warm-up, then instant-ngp's n/4 uniform picks and n/4 picks among the occupied cells
        (uniform among them, with replacement; uniform ones again when none is occupied).

        The occupied picks come from the running count of occupied cells and a binary
        search (the r-th occupied cell for r uniform below their number), not from a list
        of them: a list's length is a read back to the host, which on a GPU waits for the
        device.
        """
        n = self.n_cells
        if step < self.cfg.warmup_steps:
            return torch.arange(n, device=self.device)
        uniform = torch.randint(0, n, (n // 4,), device=self.device, generator=generator)
        count = torch.cumsum(self.occupied[k], 0)                               # [n] int64
        total = count[-1]
        u = torch.rand(n // 4, device=self.device, generator=generator)
        r = torch.minimum((u * total).long(), (total - 1).clamp_min(0))        # [n/4] ranks
        pick = torch.searchsorted(count, r + 1).clamp_max(n - 1)                # their cells
        return torch.cat([uniform, torch.where(total > 0, pick, uniform)])

    def _refresh_bits(self) -> None:
        mean = self.values[0].clamp_min(0.0).mean()
        thr = torch.clamp(mean, max=self.cfg.threshold)
        self.occupied = self.values > thr
        # A coarser cascade also counts the finer one it contains as occupied (instant-ngp's
        # bitfield max-pooling), so marching there never skips matter the finer grid holds.
        r = self.resolution
        for k in range(1, self.n_cascades):
            fine = self.occupied[k - 1].view(1, 1, r, r, r).float()
            pooled = torch.nn.functional.max_pool3d(fine, 2).view(r // 2, r // 2, r // 2) > 0
            coarse = self.occupied[k].view(r, r, r)
            q = r // 4
            coarse[q:q + r // 2, q:q + r // 2, q:q + r // 2] |= pooled

    def block_occupancy(self) -> torch.Tensor | None:
        """[C, (R / BLOCK)^3] bool, x-major like the cells: whether any cell of each BLOCK^3
        block of each cascade is occupied (None when R is not a multiple of BLOCK). The CPU
        marcher crosses an empty block in one stretch instead of cell by cell. Computed again
        only when `occupied` changed (replaced, or written in place: its version counter)."""
        r, b = self.resolution, BLOCK
        if r % b:
            return None
        occ, n = self.occupied, r // b
        if torch.is_inference(occ):            # made under inference_mode: no version counter
            return self._pool_blocks(occ, n)
        cached = self._blocks
        if cached is None or cached[0] is not occ or cached[1] != occ._version:
            self._blocks = cached = (occ, occ._version, self._pool_blocks(occ, n))
        return cached[2]

    @staticmethod
    def _pool_blocks(occ: torch.Tensor, n: int) -> torch.Tensor:
        b = BLOCK
        return occ.view(-1, n, b, n, b, n, b).any(dim=6).any(dim=4).any(dim=2).reshape(occ.shape[0], -1)

    @property
    def occupancy_fraction(self) -> float:
        return float(self.occupied.float().mean())

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {"values": self.values.detach().cpu(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        values = state["values"]
        if tuple(values.shape) != tuple(self.values.shape):
            raise ValueError(f"occupancy grid shape {tuple(values.shape)} != {tuple(self.values.shape)}")
        self.values = values.to(self.device, torch.float32)
        self.updates = int(state["updates"])
        self._refresh_bits()
