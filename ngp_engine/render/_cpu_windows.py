"""numba kernels for the CPU side of the windowed search (`renderer.visible_samples`) and
for sample positions: what the torch code there does in a dozen gathers, masks, copies and
a sort per window, done in one pass each.

A window's samples of one ray have transmittance in front of them that never increases
(sigma * dt >= 0), so the samples the search keeps (transmittance above early_stop) are the
first k of the ray's window: `window_keep` counts them and, in the same walk, gives the
transmittance behind the window; `Runs` collects the windows and writes the kept runs of
each ray, window after window (so in t order), at the ray's place in the packed result:
no concatenation, no sort, no gather. The torch path in `renderer.py` is the reference
(`tests/test_render.py` compares the two).
"""
from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from .ray_marching import RaySamples

_JIT = dict(parallel=True, cache=True, boundscheck=False)


@njit(**_JIT)
def _positions(o, d, ray_idx, t, out):
    """out[i] = o[ray_idx[i]] + t[i] * d[ray_idx[i]] in float32 (the marchers' arithmetic)."""
    for i in prange(t.shape[0]):
        r = ray_idx[i]
        ti = t[i]
        out[i, 0] = o[r, 0] + ti * d[r, 0]
        out[i, 1] = o[r, 1] + ti * d[r, 1]
        out[i, 2] = o[r, 2] + ti * d[r, 2]


@njit(**_JIT)
def _window_keep(sd, offsets, prefix, early_stop, kept, behind):
    """Per ray a of a window: kept[a] = how many of its first samples have transmittance in
    front (prefix[a] exp(-sum of sd before), float32) above early_stop; behind[a] = the
    transmittance behind its last sample."""
    for a in prange(offsets.shape[0] - 1):
        p = prefix[a]
        optical = np.float32(0.0)
        k = 0
        going = True
        for i in range(offsets[a], offsets[a + 1]):
            going = going and p * np.exp(-optical) > early_stop
            if going:
                k += 1
            optical += sd[i]
        kept[a] = k
        behind[a] = p * np.exp(-optical)


@njit(**_JIT)
def _copy_runs(alive, src_offsets, kept, cursor, t_src, dt_src, feat_src, t_dst, dt_dst,
               feat_dst, ray_dst):
    """The first kept[a] samples of each ray alive[a] of a window, to the ray's cursor in
    the packed output (cursor advanced); each ray is alive at most once per window."""
    for a in prange(alive.shape[0]):
        r = alive[a]
        src, dst, k = src_offsets[a], cursor[r], kept[a]
        for j in range(k):
            t_dst[dst + j] = t_src[src + j]
            dt_dst[dst + j] = dt_src[src + j]
            ray_dst[dst + j] = r
            for c in range(feat_src.shape[1]):
                feat_dst[dst + j, c] = feat_src[src + j, c]
        cursor[r] = dst + k


def positions(origins: torch.Tensor, dirs: torch.Tensor, ray_idx: torch.Tensor,
              t: torch.Tensor) -> torch.Tensor:
    """[S, 3] float32 sample positions of CPU tensors: origins, dirs [R, 3], ray_idx [S], t [S]."""
    out = torch.empty(t.shape[0], 3, dtype=torch.float32)
    _positions(_np(origins), _np(dirs), _np(ray_idx), _np(t), out.numpy())
    return out


def window_keep(sd: torch.Tensor, offsets: torch.Tensor, prefix: torch.Tensor,
                early_stop: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Kept samples per ray [A] int64 (a prefix of each ray's window) and the transmittance
    behind the window [A], from sigma * dt [S] and the transmittance in front, prefix [A]."""
    n = offsets.numel() - 1
    kept = torch.empty(n, dtype=torch.int64)
    behind = torch.empty(n, dtype=torch.float32)
    _window_keep(_np(sd), _np(offsets), _np(prefix), np.float32(early_stop), kept.numpy(),
                 behind.numpy())
    return kept, behind


class Runs:
    """The kept samples of the windows of R rays, packed by ray in t order at the end."""

    def __init__(self, n_rays: int) -> None:
        self.n_rays = n_rays
        self.counts = torch.zeros(n_rays, dtype=torch.int64)
        self.windows: list[tuple[torch.Tensor, RaySamples, torch.Tensor, torch.Tensor | None]] = []

    def add(self, alive: torch.Tensor, s: RaySamples, kept: torch.Tensor,
            features: torch.Tensor | None) -> None:
        """A window: its alive rays [A], samples (offsets [A + 1]), kept counts [A] and the
        samples' features [S, C] (None: no features)."""
        self.counts.index_add_(0, alive, kept)
        self.windows.append((alive, s, kept, features))

    def packed(self) -> tuple[RaySamples, torch.Tensor | None]:
        """The kept samples (ray_idx, t, dt, offsets [R + 1]) and their features [S, C]."""
        offsets = torch.zeros(self.n_rays + 1, dtype=torch.int64)
        torch.cumsum(self.counts, 0, out=offsets[1:])
        total = int(offsets[-1])
        first = self.windows[0][3] if self.windows else None
        t = torch.empty(total, dtype=torch.float32)           # the marchers' dtype
        dt = torch.empty(total, dtype=torch.float32)
        ray_idx = torch.empty(total, dtype=torch.int64)
        # Without features, [0, 0] arrays: the copy's column loop does nothing.
        features = (torch.empty(total, first.shape[1], dtype=first.dtype) if first is not None
                    else torch.empty(0, 0))
        cursor = offsets[:-1].clone()
        for alive, s, kept, feat in self.windows:
            _copy_runs(_np(alive), _np(s.offsets), _np(kept), cursor.numpy(), _np(s.t),
                       _np(s.dt), _np(features if feat is None else feat), t.numpy(),
                       dt.numpy(), features.numpy(), ray_idx.numpy())
        return RaySamples(ray_idx, t, dt, offsets), None if first is None else features


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()
