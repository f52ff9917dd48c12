"""HDR images (OpenEXR) and the float16 export of an image field.

- EXR in and out: RGB, RGBA and grey round-trip exactly; an EXR without colour channels is
  one line naming the file and what it has, and nothing is written.
- An HDR image trains with the relative L2 loss in linear space (values above 1 kept), its
  relative error falls, the reconstruction and `image render` come back as EXR.
- `--export-fp16`: about 2 bytes per parameter on disk, renders like the float32
  checkpoint, and refuses to resume training.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from ngp_engine.data.exr import read_exr, write_exr
from ngp_engine.errors import UserError

from conftest import run_cli


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_exr_round_trip(tmp_path, channels):
    img = (np.random.default_rng(channels).random((17, 23, channels)) * 20.0).astype(np.float32)
    path = write_exr(tmp_path / "x.exr", img)
    np.testing.assert_array_equal(read_exr(path), img)


@pytest.fixture(scope="module")
def hdr_exr(tmp_path_factory):
    """The astronaut at 128 px, linear, its right half 8x brighter (values up to 8)."""
    from skimage import data

    img = (data.astronaut()[::4, ::4].astype(np.float32) / 255.0) ** 2.2
    img[:, 64:] *= 8.0
    return write_exr(tmp_path_factory.mktemp("hdr") / "bright.exr", img), img


def test_an_exr_without_colour_is_one_line_and_writes_nothing(tmp_path):
    import OpenEXR

    path = tmp_path / "depth.exr"
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"Z": np.ones((8, 8), np.float32)}) as f:
        f.write(str(path))
    with pytest.raises(UserError, match="no R, G, B"):
        read_exr(path)
    proc = run_cli("image", str(path), "--steps", "2", "--out", str(tmp_path / "run"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == \
        f"error: {path}: no R, G, B (or Y) channels to fit (it has: Z)"
    assert not (tmp_path / "run").exists()


def test_an_hdr_image_fits_in_linear_space_and_renders_back_to_exr(hdr_exr, tmp_path):
    path, truth = hdr_exr
    errors = {}
    for steps in (5, 300):
        out = tmp_path / f"s{steps}"
        proc = run_cli("image", str(path), "--steps", str(steps), "--out", str(out), "--quiet")
        assert proc.returncode == 0, proc.stderr[-2000:]
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["loss"] == "RelativeL2"
        errors[steps] = metrics["relative_l2"]
    assert errors[300] < 0.5 * errors[5], errors
    rec = read_exr(tmp_path / "s300" / "reconstruction.exr")
    assert rec.shape == truth.shape
    assert rec[:, 64:].mean() > 4.0 * rec[:, :64].mean()       # the bright half stays bright (> 1)
    r = run_cli("image", "render", str(tmp_path / "s300" / "checkpoint.pt"), "--region", "0", "0", "64", "64",
                "--size", "32", "32", "--out", str(tmp_path / "render"), "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    assert read_exr(tmp_path / "render" / "render.exr").shape == (32, 32, 3)


def test_fp16_export_halves_the_bytes_and_renders_the_same(photo_256, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("image", str(photo_256), "--steps", "60", "--export-fp16", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    n = metrics["n_params"]
    assert metrics["fp16_parameter_bytes"] == 2 * n
    assert 2 * n < metrics["fp16_bytes"] < 2 * n + 32_000          # the parameters plus a small header
    assert metrics["fp16_bytes"] == (out / "model_fp16.pt").stat().st_size
    renders = {}
    for name in ("checkpoint.pt", "model_fp16.pt"):
        r = run_cli("image", "render", str(out / name), "--out", str(tmp_path / name), "--quiet")
        assert r.returncode == 0, r.stderr[-2000:]
        from PIL import Image

        renders[name] = np.asarray(Image.open(tmp_path / name / "render.png")).astype(np.float64)
    diff = np.abs(renders["checkpoint.pt"] - renders["model_fp16.pt"])
    assert diff.mean() < 0.5 and diff.max() <= 4, (diff.mean(), diff.max())
    again = run_cli("image", "--resume", str(out / "model_fp16.pt"), "--steps", "2", "--out", str(tmp_path / "more"))
    assert again.returncode == 2
    assert "an fp16 export renders only" in again.stderr and not (tmp_path / "more").exists()
