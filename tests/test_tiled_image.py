"""Images larger than memory (ngp_engine/data/tiled_image.py): TIFFs read chunk by chunk.

- Chunks, regions and sampled pixels equal what tifffile reads whole: tiled (deflate) and
  striped files, 8- and 16-bit, grey, RGB and RGBA, float (HDR).
- Training draws every pixel equally often and keeps at most the cache's chunks in memory;
  the field trains on a tiled image without it ever being loaded whole.
- `image big.tif` writes a tiled BigTIFF reconstruction; its PSNR on random pixels is the
  whole image's; `image render` renders any region at any size; bad regions, sizes and a
  truncated TIFF are one line each and leave nothing behind.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import torch

from ngp_engine.config import IMAGE_PRESETS
from ngp_engine.data.tiled_image import TiledImage, is_tiled_tiff
from ngp_engine.errors import UserError
from ngp_engine.tasks.image import ImageTask

from conftest import run_cli


def photo(h: int, w: int) -> np.ndarray:
    """scikit-image's astronaut tiled to h x w (uint8 RGB)."""
    from skimage import data

    img = data.astronaut()
    return np.tile(img, (-(-h // 512), -(-w // 512), 1))[:h, :w]


@pytest.fixture(scope="module")
def big_tiff(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiled") / "big.tif"
    tifffile.imwrite(path, photo(700, 900), tile=(128, 128), compression="zlib")
    return path


CASES = {
    "tiled-rgb8": dict(dtype=np.uint8, channels=3, tile=(64, 48), compression="zlib"),
    "striped-grey16": dict(dtype=np.uint16, channels=1, rowsperstrip=23),
    "tiled-rgba8": dict(dtype=np.uint8, channels=4, tile=(32, 32)),
    "tiled-float": dict(dtype=np.float32, channels=3, tile=(48, 64), compression="zlib"),
}


@pytest.mark.parametrize("case", CASES)
def test_chunks_regions_and_pixels_equal_the_whole_file(tmp_path, case):
    opts = dict(CASES[case])
    dtype, channels = opts.pop("dtype"), opts.pop("channels")
    rng = np.random.default_rng(0)
    h, w = 150, 201                                        # not multiples of any chunk
    if dtype == np.float32:
        truth = (rng.random((h, w, channels)) * 4.0).astype(np.float32)        # HDR: above 1
        scaled = truth
    else:
        top = np.iinfo(dtype).max
        truth = rng.integers(0, top + 1, (h, w, channels), dtype=np.int64).astype(dtype)
        scaled = truth.astype(np.float32) / np.float32(top)
    path = tmp_path / f"{case}.tif"
    extra = {"extrasamples": ["unassalpha"]} if channels == 4 else {}
    tifffile.imwrite(path, truth[..., 0] if channels == 1 else truth,
                     photometric="minisblack" if channels == 1 else "rgb", **opts, **extra)
    img = TiledImage(path)
    assert img.shape == (h, w, channels) and img.hdr == (dtype == np.float32)
    np.testing.assert_array_equal(img.region(0, 0, w, h), scaled)
    np.testing.assert_array_equal(img.region(17, 5, 133, 149), scaled[5:149, 17:133])
    xy, values = img.pixels(500, seed=3)
    cols, rows = (xy[:, 0] * w).astype(int), (xy[:, 1] * h).astype(int)
    np.testing.assert_array_equal(values, scaled[rows, cols])
    # Training samples: each value is the pixel its continuous position falls in.
    pos, val = img.sample(400, torch.Generator().manual_seed(1), torch.device("cpu"), chunks_per_step=7)
    cols = np.floor(pos[:, 0].double().numpy() * w).astype(int)
    rows = np.floor(pos[:, 1].double().numpy() * h).astype(int)
    np.testing.assert_array_equal(val.numpy(), scaled[rows, cols])


def test_every_pixel_is_equally_likely(tmp_path):
    path = tmp_path / "u.tif"
    tifffile.imwrite(path, np.zeros((100, 130, 3), np.uint8), tile=(32, 48))   # edge chunks cut
    img = TiledImage(path)
    gen = torch.Generator().manual_seed(0)
    counts = np.zeros((100, 130))
    for _ in range(200):
        pos, _ = img.sample(1000, gen, torch.device("cpu"), chunks_per_step=16)
        np.add.at(counts, ((pos[:, 1] * 100).long().numpy(), (pos[:, 0] * 130).long().numpy()), 1)
    # 200k draws over 13k pixels: an edge chunk's pixels as often as an inner chunk's.
    inner, corner = counts[:32, :48].mean(), counts[96:, 96:].mean()
    assert abs(inner / corner - 1.0) < 0.1, (inner, corner)
    rows, cols = counts.sum(1), counts.sum(0)
    assert rows.std() / rows.mean() < 0.1 and cols.std() / cols.mean() < 0.1


def test_training_reads_by_chunks_within_the_cache(big_tiff):
    img = TiledImage(big_tiff, cache_bytes=6 * 128 * 128 * 3)           # six chunks of 8-bit RGB
    assert img.cache_chunks == 6 and is_tiled_tiff(big_tiff)
    cfg = IMAGE_PRESETS["cpu-fast"]
    task = ImageTask((img, str(big_tiff)), cfg, torch.device("cpu"))
    assert task.image is None and task.tiled is img          # never loaded whole
    before = task.sampled_psnr(20_000)
    sizes = []
    for _ in range(60):
        task.step()
        sizes.append(len(img._cache))
    assert max(sizes) <= 6
    assert img.chunks_read > 6                               # chunks came and went
    assert task.sampled_psnr(20_000) > before + 5.0


def test_cli_fits_a_tiled_tiff_and_renders_regions(big_tiff, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("image", str(big_tiff), "--preset", "cpu-fast", "--steps", "80", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["psnr_pixels"] == 1_000_000 and metrics["width"] == 900 and metrics["height"] == 700
    rec = tifffile.imread(out / "reconstruction.tif")
    with tifffile.TiffFile(out / "reconstruction.tif") as tf:
        assert tf.is_bigtiff and tf.pages.first.is_tiled
    truth = photo(700, 900)
    assert rec.shape == truth.shape and rec.dtype == np.uint8
    whole = -10 * np.log10(np.mean((rec / 255.0 - truth / 255.0) ** 2))
    assert whole > 18 and abs(whole - metrics["psnr"]) < 0.3, (whole, metrics["psnr"])
    assert (out / "preview.png").is_file() and not (out / "comparison.png").exists()
    # A region at 2x: the same pixels as the whole reconstruction, upsampled.
    ck = str(out / "checkpoint.pt")
    r = run_cli("image", "render", ck, "--region", "128", "256", "384", "384", "--size", "512", "256",
                "--out", str(tmp_path / "zoom"), "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    from PIL import Image

    zoom = np.asarray(Image.open(tmp_path / "zoom" / "render.png"))
    assert zoom.shape == (256, 512, 3)
    down = zoom.reshape(128, 2, 256, 2, 3).mean((1, 3))
    err = np.abs(down - rec[256:384, 128:384].astype(np.float64)).mean()
    assert err < 6.0, err                         # 0-255 scale: what 8-bit rounding + 2x2 means leave
    info = json.loads((tmp_path / "zoom" / "render.json").read_text())
    assert info["size"] == [512, 256] and info["image_size"] == [900, 700]
    # Training goes on from the checkpoint, reading the same file by chunks.
    more = run_cli("image", "--resume", ck, "--steps", "5", "--out", str(tmp_path / "more"), "--quiet")
    assert more.returncode == 0, more.stderr[-2000:]
    assert json.loads((tmp_path / "more" / "metrics.json").read_text())["steps"] == 85


@pytest.mark.parametrize("args, message", [
    (["--region", "0", "0", "1000", "10"], "--region: 0 0 1000 10 is outside the 900x700 image"),
    (["--region", "5", "5", "5", "9"], "--region: 5 5 5 9 must have X0 < X1 and Y0 < Y1"),
    (["--size", "0", "10"], "--size: 0 10 must be between 1 and"),
])
def test_bad_render_requests_are_one_line_and_write_nothing(big_tiff, tmp_path, args, message):
    run = tmp_path / "run"
    fit = run_cli("image", str(big_tiff), "--preset", "cpu-fast", "--steps", "2", "--out", str(run), "--quiet")
    assert fit.returncode == 0, fit.stderr[-2000:]
    out = tmp_path / "render"
    proc = run_cli("image", "render", str(run / "checkpoint.pt"), *args, "--out", str(out))
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {message}"), proc.stderr[-2000:]
    assert not out.exists()


def test_a_truncated_tiff_is_one_line_before_anything_is_written(big_tiff, tmp_path):
    cut = tmp_path / "cut.tif"
    data = big_tiff.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(UserError, match="cut.tif: "):
        TiledImage(cut)
    out = tmp_path / "run"
    proc = run_cli("image", str(cut), "--steps", "2", "--out", str(out))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {cut}")
    assert not out.exists()
