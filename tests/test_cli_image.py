"""`python -m ngp_engine image`: outputs, resume, and one-line errors for bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli


def _assert_user_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for n in needles:
        assert n in lines[0]


def test_fit_writes_outputs_and_resumes(photo_256, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("image", str(photo_256), "--steps", "60", "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 60 and metrics["backend"] == "cpu"
    assert metrics["psnr"] > 18.0 and metrics["n_params"] == 93392
    assert Image.open(out / "reconstruction.png").size == (256, 256)
    assert Image.open(out / "comparison.png").size == (512, 256)
    assert (out / "checkpoint.pt").stat().st_size > 4 * 93392
    assert not list(out.glob(".tmp-*"))

    out2 = tmp_path / "resumed"
    proc = run_cli("image", "--resume", str(out / "checkpoint.pt"), "--steps", "40",
                   "--out", str(out2), "--quiet")
    assert proc.returncode == 0, proc.stderr
    resumed = json.loads((out2 / "metrics.json").read_text())
    assert resumed["steps"] == 100 and resumed["psnr"] > metrics["psnr"]


def test_resume_rejects_a_new_configuration(photo_256, tmp_path):
    proc = run_cli("image", "--resume", str(tmp_path / "missing.pt"), "--preset", "cpu-fast",
                   "--out", str(tmp_path / "o"))
    _assert_user_error(proc, "--preset", "checkpoint's configuration")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    _assert_user_error(run_cli("image", "--resume", str(bad), "--out", str(tmp_path / "o")),
                       "bad.pt", "not a readable checkpoint")


def test_progress_bar_and_seconds_budget(photo_256, tmp_path):
    proc = run_cli("image", str(photo_256), "--seconds", "1", "--out", str(tmp_path / "o"))
    assert proc.returncode == 0, proc.stderr
    assert "it/s" in proc.stderr or "s/s" in proc.stderr or "%|" in proc.stderr
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    # The budget ends training soon after 1 s. The first step of a fresh checkout also pays
    # numba's one-time kernel compilation (several seconds on 2 cores), hence the slack.
    assert 1.0 <= metrics["seconds"] < 30.0 and metrics["steps"] >= 2


def test_missing_file(tmp_path):
    _assert_user_error(run_cli("image", str(tmp_path / "nope.png"), "--out", str(tmp_path / "o")),
                       "nope.png", "no such file")
    assert not (tmp_path / "o").exists()


def test_not_an_image(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("this is text")
    _assert_user_error(run_cli("image", str(bad), "--out", str(tmp_path / "o")), "notes.png",
                       "not an image")


def test_one_pixel_image(tmp_path):
    p = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (255, 0, 0)).save(p)
    _assert_user_error(run_cli("image", str(p), "--out", str(tmp_path / "o")), "dot.png", "1x1")


def test_bad_config_key(tmp_path, photo_256):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"batch_size": 64, "learning_rate": 1.0}))
    _assert_user_error(run_cli("image", str(photo_256), "--config", str(cfg), "--out",
                               str(tmp_path / "o")), "cfg.json", "learning_rate", "unknown key")


@pytest.mark.parametrize("kind", ["gray16", "gray8", "rgba"])
def test_other_pixel_formats_are_handled(tmp_path, kind):
    yy, xx = np.mgrid[0:32, 0:48]
    if kind == "gray16":
        img = Image.fromarray((xx * 1300 + yy * 40).astype(np.uint16))       # mode I;16
        channels = 1
    elif kind == "gray8":
        img = Image.fromarray((xx * 5).astype(np.uint8), mode="L")
        channels = 1
    else:
        rgba = np.stack([xx * 5, yy * 7, xx + yy, (xx > 20) * 255], -1).astype(np.uint8)
        img = Image.fromarray(rgba, mode="RGBA")
        channels = 4
    path = tmp_path / f"{kind}.png"
    img.save(path)
    proc = run_cli("image", str(path), "--steps", "100", "--out", str(tmp_path / "o"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["channels"] == channels and metrics["psnr"] > 20
    rec = Image.open(tmp_path / "o" / "reconstruction.png")
    assert rec.size == (48, 32) and len(rec.getbands()) == channels
