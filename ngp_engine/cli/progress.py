"""A terminal progress bar (tqdm) that is told absolute progress, not increments."""
from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


class ProgressBar:
    """`with ProgressBar(total=1000, unit="step") as bar: bar.update_to(n, loss=...)`."""

    def __init__(self, total: float, unit: str = "step", disable: bool = False) -> None:
        self._bar = tqdm(total=total, unit=unit, disable=disable, file=sys.stderr,
                         dynamic_ncols=True, mininterval=0.2,
                         bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}<{remaining}{postfix}]")

    def update_to(self, done: float, **postfix: Any) -> None:
        self._bar.n = min(done, self._bar.total)
        if postfix:
            self._bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v
                                   for k, v in postfix.items()}, refresh=False)
        self._bar.refresh() if self._bar.n >= self._bar.total else self._bar.update(0)

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._bar.close()
