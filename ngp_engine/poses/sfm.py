"""Structure from motion with pycolmap: SIFT features, matching, incremental mapping.

pycolmap releases the GIL in its long calls, so a watcher thread can cancel them through a
`pycolmap.CancellationToken` (see `Canceller`); progress comes from batched feature
extraction and from the mapper's `next_image_callback` (once per registered image).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .spec import EXHAUSTIVE_LIMIT, PosesCancelled

if TYPE_CHECKING:
    import pycolmap

FEATURE_BATCH = 4        # images per extract_features call: progress vs. ~0.5 s set-up per call
SEQUENTIAL_OVERLAP = 8   # video frames: each frame is matched with the next 8 (plus quadratic)


def import_pycolmap():
    """pycolmap with glog quiet: only errors reach stderr (it logs every image at INFO)."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    import pycolmap  # noqa: PLC0415

    pycolmap.logging.minloglevel = 2          # 0 INFO, 1 WARNING, 2 ERROR
    pycolmap.logging.stderrthreshold = 2
    pycolmap.logging.verbose_level = 0
    return pycolmap


class Canceller:
    """Polls `should_stop` on a thread and cancels `token` when it says so; `check()`
    raises PosesCancelled after a cancelled call returned."""

    def __init__(self, should_stop: Callable[[], bool] | None) -> None:
        pycolmap = import_pycolmap()
        self.token = pycolmap.CancellationToken()
        self._should_stop = should_stop
        self._done = threading.Event()
        self._thread = None
        if should_stop is not None:
            self._thread = threading.Thread(target=self._watch, daemon=True, name="poses-cancel")
            self._thread.start()

    def _watch(self) -> None:
        while not self._done.wait(0.1):
            if self._should_stop():
                self.token.cancel()
                return

    def check(self) -> None:
        if self.token.is_cancelled or (self._should_stop is not None and self._should_stop()):
            self.token.cancel()
            raise PosesCancelled()

    def close(self) -> None:
        self._done.set()


@dataclass(frozen=True)
class SfmOptions:
    camera_model: str = "SIMPLE_RADIAL"
    per_image_cameras: bool = False
    matching: str = "exhaustive"      # resolved: exhaustive or sequential


def resolve_matching(matching: str, n_images: int, is_video: bool) -> str:
    """auto -> sequential for a video or more than EXHAUSTIVE_LIMIT images, else exhaustive."""
    if matching != "auto":
        return matching
    return "sequential" if is_video or n_images > EXHAUSTIVE_LIMIT else "exhaustive"


def extract_features(database: Path, image_dir: Path, names: list[str], options: SfmOptions,
                     canceller: Canceller, progress: Callable[[int], None]) -> None:
    """SIFT on every image, written to `database`, FEATURE_BATCH images per call so that
    progress(done) can follow. One shared camera unless per-image cameras are asked for:
    the first batch creates it, later batches reuse it (existing_camera_id)."""
    pycolmap = import_pycolmap()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = options.camera_model
    mode = pycolmap.CameraMode.PER_IMAGE if options.per_image_cameras else pycolmap.CameraMode.SINGLE
    extraction = pycolmap.FeatureExtractionOptions()
    for start in range(0, len(names), FEATURE_BATCH):
        canceller.check()
        batch = names[start:start + FEATURE_BATCH]
        pycolmap.extract_features(database, image_dir, image_names=batch, camera_mode=mode,
                                  reader_options=reader, extraction_options=extraction,
                                  device=pycolmap.Device.auto, cancellation_token=canceller.token)
        if start == 0 and not options.per_image_cameras:
            reader.existing_camera_id = _only_camera_id(database)
        for k in range(len(batch)):
            progress(start + k + 1)
    canceller.check()


def _only_camera_id(database: Path) -> int:
    pycolmap = import_pycolmap()
    db = pycolmap.Database.open(database)
    try:
        ids = [c.camera_id for c in db.read_all_cameras()]
    finally:
        db.close()
    if len(ids) != 1:
        raise RuntimeError(f"expected one shared camera after the first batch, found {len(ids)}")
    return ids[0]


def match(database: Path, options: SfmOptions, canceller: Canceller) -> None:
    """Match features of image pairs and verify them geometrically."""
    pycolmap = import_pycolmap()
    if options.matching == "sequential":
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = SEQUENTIAL_OVERLAP
        pycolmap.match_sequential(database, pairing_options=pairing, device=pycolmap.Device.auto,
                                  cancellation_token=canceller.token)
    else:
        pycolmap.match_exhaustive(database, device=pycolmap.Device.auto,
                                  cancellation_token=canceller.token)
    canceller.check()


def map_images(database: Path, image_dir: Path, model_dir: Path, canceller: Canceller,
               on_registered: Callable[[int], None]) -> "pycolmap.Reconstruction | None":
    """Incremental mapping; the model with the most registered images. `on_registered(k)`
    runs when k more images are registered (2 for an initial pair, then 1 per image; on
    pycolmap's thread). None when no model could be started."""
    pycolmap = import_pycolmap()
    options = pycolmap.IncrementalPipelineOptions()
    options.min_model_size = 3           # keep small models so the error can say how small
    options.extract_colors = True
    # Reproducible: the same photos give the same poses (RANSAC's sampling is seeded; with
    # the default -1, COLMAP seeds from the clock and now and then registers one image fewer).
    options.random_seed = 0
    model_dir.mkdir(parents=True, exist_ok=True)
    models = pycolmap.incremental_mapping(database, image_dir, model_dir, options,
                                          initial_image_pair_callback=lambda: on_registered(2),
                                          next_image_callback=lambda: on_registered(1),
                                          cancellation_token=canceller.token)
    canceller.check()
    if not models:
        return None
    return max(models.values(), key=lambda r: r.num_reg_images())
