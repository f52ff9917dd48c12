"""Image fitting on a real photograph: the hash grid beats a frequency-encoded MLP."""
from __future__ import annotations

import numpy as np
import torch

from ngp_engine.config import IMAGE_PRESETS, replace
from ngp_engine.data.image import load_image
from ngp_engine.tasks.image import ImageTask
from ngp_engine.files import save_torch

CPU = torch.device("cpu")


def test_hash_grid_beats_frequency_encoding_at_equal_budget(photo_256):
    image = load_image(photo_256)
    assert image.shape == (256, 256, 3)
    results = {}
    for name in ("seed", "frequency"):
        fitter = ImageTask((image, ""), IMAGE_PRESETS[name], CPU)
        fitter.train(steps=300)
        results[name] = (fitter.psnr(), fitter.n_params)
    (psnr_hash, n_hash), (psnr_freq, n_freq) = results["seed"], results["frequency"]
    # Same steps and batch, parameter counts within 5 % of each other.
    assert abs(n_hash - n_freq) / n_hash < 0.05
    # The trivial prediction (mean colour) scores about 11 dB on this photo.
    mean_psnr = -10 * np.log10(np.mean((image - image.mean(axis=(0, 1))) ** 2))
    assert psnr_hash > 25.0 > mean_psnr + 10
    assert psnr_hash > psnr_freq + 5.0, results


def test_checkpoint_moves_between_backends(photo_256, tmp_path):
    image = load_image(photo_256)[::4, ::4]            # 64x64 is enough here
    fitter = ImageTask((image, str(photo_256)), replace(IMAGE_PRESETS["seed"], backend="cpu"), CPU)
    fitter.train(steps=30)
    assert fitter.backend == "cpu"
    before = fitter.render_image()
    save_torch(tmp_path / "checkpoint.pt", fitter.state_dict())
    moved = ImageTask.from_checkpoint(tmp_path / "checkpoint.pt", CPU, data=(image, str(photo_256)),
                                      backend="torch")
    assert moved.backend == "torch" and moved.steps_done == 30
    np.testing.assert_allclose(moved.render_image(), before, atol=1e-5)
    # Training continues from the saved optimiser state on the other backend.
    psnr0 = moved.psnr()
    moved.train(steps=30)
    assert moved.steps_done == 60 and moved.psnr() > psnr0


def test_resume_continues_exactly(photo_256, tmp_path):
    """30 steps, checkpoint, reload, 30 more steps == 60 uninterrupted steps (same backend):
    parameters, Adam moments, integer step counts and the sampler all survive the round trip."""
    image = load_image(photo_256)[::4, ::4]
    cfg = IMAGE_PRESETS["seed"]
    straight = ImageTask((image, ""), cfg, CPU)
    straight.train(steps=60)
    first = ImageTask((image, str(photo_256)), cfg, CPU)
    first.train(steps=30)
    save_torch(tmp_path / "checkpoint.pt", first.state_dict())
    resumed = ImageTask.from_checkpoint(tmp_path / "checkpoint.pt", CPU, data=(image, str(photo_256)))
    steps = resumed.optimizer.state[resumed.model.encoding.params]["steps"]
    assert steps.dtype == torch.int32 and int(steps.max()) == 30
    resumed.train(steps=30)
    np.testing.assert_allclose(resumed.render_image(), straight.render_image(), atol=1e-6)
