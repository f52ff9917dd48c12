"""Shared test helpers."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def photo_256(tmp_path_factory) -> Path:
    """scikit-image's bundled astronaut photograph, resized to 256x256, as a PNG."""
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("photo") / "astronaut256.png"
    Image.fromarray(data.astronaut()).resize((256, 256), Image.LANCZOS).save(path)
    return path


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m ngp_engine ...` in a fresh interpreter from the repo root."""
    return subprocess.run([sys.executable, "-m", "ngp_engine", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
