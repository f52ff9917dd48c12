"""Typed, frozen configuration for the engine (standard library only).

The add-on imports this module inside Blender, so it must never import torch or
numpy. Every config is a frozen dataclass with a docstring per field; JSON is the
only serialised form (`to_dict` / `from_dict` of `schema.py`, re-exported here, with
a top-level `schema_version`; strict: unknown keys, missing required keys and wrong
types are errors that name the offending field).

Presets are named instances (`IMAGE_PRESETS`, `NERF_PRESETS`, `SDF_PRESETS`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Union, get_args

from .schema import (SCHEMA_VERSION, ConfigError, check, from_dict, from_json, replace, to_dict,
                     to_json)

__all__ = ["SCHEMA_VERSION", "ConfigError", "check", "from_dict", "from_json", "replace", "to_dict",
           "to_json"]


# ----------------------------------------------------------------------------------
# Encodings
# ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HashGridConfig:
    """Multiresolution hash encoding, as tiny-cuda-nn's `HashGrid`."""

    otype: Literal["HashGrid"] = "HashGrid"
    n_levels: int = 16
    """L: number of resolution levels."""
    n_features_per_level: int = 2
    """F: features stored per table entry (1, 2, 4 or 8)."""
    log2_hashmap_size: int = 19
    """log2 of T, the maximum number of entries per level."""
    base_resolution: int = 16
    """N_min: resolution of the coarsest level."""
    max_resolution: int | None = None
    """N_max: resolution of the finest level; sets `per_level_scale` as instant-ngp does
    (b = exp((ln N_max - ln N_min) / (L - 1))). Give this or `per_level_scale`."""
    per_level_scale: float | None = None
    """b: growth factor between levels (tiny-cuda-nn's default is 2.0)."""
    interpolation: Literal["Linear", "Nearest", "Smoothstep"] = "Linear"
    """How a level's corner features are blended."""

    def __post_init__(self) -> None:
        check(self.n_levels >= 1, "n_levels", self.n_levels, "must be >= 1")
        check(self.n_levels <= 32, "n_levels", self.n_levels, "must be <= 32")
        check(self.n_features_per_level in (1, 2, 4, 8), "n_features_per_level",
               self.n_features_per_level, "must be 1, 2, 4 or 8")
        check(1 <= self.log2_hashmap_size <= 30, "log2_hashmap_size", self.log2_hashmap_size,
               "must be in 1..30")
        check(self.base_resolution >= 1, "base_resolution", self.base_resolution, "must be >= 1")
        check((self.max_resolution is None) != (self.per_level_scale is None), "max_resolution",
               self.max_resolution, "give exactly one of max_resolution and per_level_scale")
        if self.max_resolution is not None:
            check(self.max_resolution >= self.base_resolution, "max_resolution",
                   self.max_resolution, "must be >= base_resolution")
        if self.per_level_scale is not None:
            check(self.per_level_scale >= 1.0, "per_level_scale", self.per_level_scale,
                   "must be >= 1")
        check(self.interpolation in ("Linear", "Nearest", "Smoothstep"), "interpolation",
               self.interpolation, "must be Linear, Nearest or Smoothstep")

    @property
    def resolved_per_level_scale(self) -> float:
        """b, derived from N_max when that is given (instant-ngp's formula)."""
        if self.per_level_scale is not None:
            return float(self.per_level_scale)
        if self.n_levels == 1:
            return 1.0
        assert self.max_resolution is not None
        return math.exp((math.log(self.max_resolution) - math.log(self.base_resolution))
                        / (self.n_levels - 1))


@dataclass(frozen=True)
class FrequencyConfig:
    """NeRF positional encoding, as tiny-cuda-nn's `Frequency`: per input dimension,
    sin and cos of 2^i * pi * x for i in 0..n_frequencies-1."""

    otype: Literal["Frequency"] = "Frequency"
    n_frequencies: int = 12
    """Number of octaves per input dimension."""

    def __post_init__(self) -> None:
        check(1 <= self.n_frequencies <= 32, "n_frequencies", self.n_frequencies, "must be in 1..32")


@dataclass(frozen=True)
class SphericalHarmonicsConfig:
    """Real spherical harmonics of a direction, as tiny-cuda-nn's `SphericalHarmonics`
    (`degree` bands, degree**2 outputs)."""

    otype: Literal["SphericalHarmonics"] = "SphericalHarmonics"
    degree: int = 4
    """Number of bands, 1..4 (outputs: 1, 4, 9 or 16)."""

    def __post_init__(self) -> None:
        check(1 <= self.degree <= 4, "degree", self.degree, "must be in 1..4")


EncodingConfig = Union[HashGridConfig, FrequencyConfig, SphericalHarmonicsConfig]


# ----------------------------------------------------------------------------------
# Network, optimiser
# ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class MLPConfig:
    """A bias-free MLP, as tiny-cuda-nn's `FullyFusedMLP` / `CutlassMLP`."""

    n_neurons: int = 64
    """Width of every hidden layer."""
    n_hidden_layers: int = 2
    """Number of hidden layers (0 gives a single linear map)."""
    activation: Literal["ReLU", "None"] = "ReLU"
    """Activation after each hidden layer."""
    output_activation: Literal["None", "Sigmoid", "Exponential"] = "None"
    """Activation on the output layer."""

    def __post_init__(self) -> None:
        check(self.n_neurons >= 1, "n_neurons", self.n_neurons, "must be >= 1")
        check(self.n_hidden_layers >= 0, "n_hidden_layers", self.n_hidden_layers, "must be >= 0")
        check(self.activation in ("ReLU", "None"), "activation", self.activation,
               "must be ReLU or None")
        check(self.output_activation in ("None", "Sigmoid", "Exponential"), "output_activation",
               self.output_activation, "must be None, Sigmoid or Exponential")


@dataclass(frozen=True)
class AdamConfig:
    """tiny-cuda-nn's Adam: L2 on MLP weights only, encoding entries whose gradient is
    exactly zero are skipped (their moments do not decay), per-parameter step counts."""

    learning_rate: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.99
    epsilon: float = 1e-15
    l2_reg: float = 1e-6
    """L2 regularisation added to the gradient of MLP weights (not encodings)."""
    decay_start: int = 0
    """Step from which the learning rate decays (0: never)."""
    decay_interval: int = 10000
    """Steps between two decays."""
    decay_base: float = 0.33
    """Factor applied at each decay."""

    def __post_init__(self) -> None:
        check(self.learning_rate > 0, "learning_rate", self.learning_rate, "must be > 0")
        check(0 <= self.beta1 < 1, "beta1", self.beta1, "must be in [0, 1)")
        check(0 <= self.beta2 < 1, "beta2", self.beta2, "must be in [0, 1)")
        check(self.epsilon >= 0, "epsilon", self.epsilon, "must be >= 0")
        check(self.l2_reg >= 0, "l2_reg", self.l2_reg, "must be >= 0")
        check(self.decay_interval >= 1, "decay_interval", self.decay_interval, "must be >= 1")

    def learning_rate_at(self, step: int) -> float:
        """Learning rate for 0-based `step` (instant-ngp's ExponentialDecay)."""
        if self.decay_start <= 0 or step < self.decay_start:
            return self.learning_rate
        n = (step - self.decay_start) // self.decay_interval + 1
        return self.learning_rate * self.decay_base ** n


# ----------------------------------------------------------------------------------
# Image fitting
# ----------------------------------------------------------------------------------
Backend = Literal["auto", "torch", "cpu", "triton", "tcnn"]
MlpPrecision = Literal["auto", "float32", "bfloat16"]
MLP_PRECISIONS: tuple[str, ...] = get_args(MlpPrecision)
BACKEND_NAMES = ("auto", "torch", "cpu", "triton", "tcnn")


@dataclass(frozen=True)
class ImageFitConfig:
    """Everything that defines an image-fitting run, (x, y) in [0, 1]^2 -> colour."""

    encoding: EncodingConfig = field(default_factory=lambda: HashGridConfig(
        n_levels=16, n_features_per_level=2, log2_hashmap_size=12, base_resolution=16,
        max_resolution=256))
    """How (x, y) is encoded before the MLP."""
    network: MLPConfig = field(default_factory=MLPConfig)
    """The MLP after the encoding."""
    optimizer: AdamConfig = field(default_factory=AdamConfig)
    batch_size: int = 1024
    """Random positions per training step."""
    loss: Literal["auto", "L2", "RelativeL2", "Huber"] = "auto"
    """Training loss on colours; auto: RelativeL2 for linear HDR images (OpenEXR, float
    TIFF; instant-ngp's choice: errors relative to the brightness), L2 otherwise."""
    backend: Backend = "auto"
    """Hash-grid implementation: torch (reference, any device), cpu (compiled kernel),
    triton (Triton kernels on CUDA/ROCm GPUs), tcnn (tiny-cuda-nn on CUDA) or auto (the
    fastest available)."""
    mlp_precision: MlpPrecision = "float32"
    """Arithmetic of the MLPs' matrix products: float32, or bfloat16 (weights and optimiser
    stay float32, as tiny-cuda-nn's half-precision MLPs; on the CPU a hand-written path,
    elsewhere torch.autocast). Pays on CPUs with AMX or AVX-512 BF16 and on GPUs with
    bfloat16 tensor cores (`scripts/bench_mlp.py`); elsewhere it is emulated and slower.
    auto: bfloat16 on a CPU with bfloat16 units, float32 everywhere else
    (`nn.mlp.resolve_precision`): the NeRF's and SDF's default. The image's is float32: in
    bfloat16 it took as many steps per second and fell 0.3-0.7 dB behind (README)."""
    seed: int = 1337
    """Seed for parameter initialisation and sampling."""

    def __post_init__(self) -> None:
        check(self.batch_size >= 1, "batch_size", self.batch_size, "must be >= 1")
        check(self.loss in ("auto", "L2", "RelativeL2", "Huber"), "loss", self.loss,
               "must be auto, L2, RelativeL2 or Huber")
        check(self.backend in BACKEND_NAMES, "backend", self.backend,
               "must be " + ", ".join(BACKEND_NAMES[:-1]) + " or " + BACKEND_NAMES[-1])
        check(not isinstance(self.encoding, SphericalHarmonicsConfig), "encoding",
               "SphericalHarmonics", "encodes directions, not image positions")


IMAGE_PRESETS: dict[str, ImageFitConfig] = {
    # The seed article: L=16, N_min=16, N_max=256, T=2^12, F=2, 2 x 64 MLP, batch 1024.
    "seed": ImageFitConfig(),
    # instant-ngp's configs/image/base.json (per_level_scale 2, T=2^24, batch 2^16):
    # sized for a GPU; on a CPU it is slow and needs several GB.
    "instant-ngp": ImageFitConfig(
        encoding=HashGridConfig(log2_hashmap_size=24, base_resolution=16, per_level_scale=2.0),
        optimizer=AdamConfig(decay_start=20000, decay_interval=10000, decay_base=0.33),
        batch_size=1 << 16),
    # A CPU-friendly middle ground: larger tables than the seed, bigger batches.
    "cpu-fast": ImageFitConfig(
        encoding=HashGridConfig(log2_hashmap_size=15, base_resolution=16, max_resolution=512),
        batch_size=1 << 13),
    # The baseline the hash grid is compared against: NeRF's frequency encoding with a
    # wider MLP of about the seed preset's parameter count.
    "frequency": ImageFitConfig(
        encoding=FrequencyConfig(n_frequencies=10),
        network=MLPConfig(n_neurons=204, n_hidden_layers=3),
        optimizer=AdamConfig(learning_rate=1e-3)),
}


# ----------------------------------------------------------------------------------
# NeRF
# ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class OccupancyGridConfig:
    """instant-ngp's density (occupancy) grid: one `resolution`^3 grid per cascade, cascade
    k covering [0.5 - 2^(k-1), 0.5 + 2^(k-1)]^3 of the unit cube."""

    resolution: int = 128
    """Cells per side of each cascade."""
    decay: float = 0.95
    """Each update: cell = max(decay * cell, new sample)."""
    threshold: float = 0.01
    """A cell is occupied when its optical thickness (density x the cascade's minimum step)
    exceeds min(threshold, mean over the grid) (instant-ngp's NERF_MIN_OPTICAL_THICKNESS)."""
    update_interval: int = 16
    """Steps between two updates."""
    warmup_steps: int = 256
    """Until this step every cell is re-sampled at each update; afterwards a quarter of the
    cells at random plus a quarter of the occupied ones."""

    def __post_init__(self) -> None:
        check(4 <= self.resolution <= 512 and self.resolution % 4 == 0, "resolution",
               self.resolution, "must be a multiple of 4 in 4..512")
        check(0.0 < self.decay <= 1.0, "decay", self.decay, "must be in (0, 1]")
        check(self.threshold > 0, "threshold", self.threshold, "must be > 0")
        check(self.update_interval >= 1, "update_interval", self.update_interval, "must be >= 1")
        check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "must be >= 0")


@dataclass(frozen=True)
class MarchingConfig:
    """Ray marching through the occupancy grid (unit-cube units)."""

    steps_per_diagonal: int = 1024
    """Minimum step = sqrt(3) / steps_per_diagonal (instant-ngp's NERF_STEPS)."""
    cone_angle: float | None = None
    """Step grows as t * cone_angle (clamped); None: 1/256 when aabb_scale > 1, else 0."""
    max_samples_per_ray: int = 1024
    """Hard cap on samples per ray."""
    early_stop_transmittance: float = 1e-4
    """Samples behind a transmittance below this are dropped (early ray termination)."""

    def __post_init__(self) -> None:
        check(16 <= self.steps_per_diagonal <= 8192, "steps_per_diagonal",
               self.steps_per_diagonal, "must be in 16..8192")
        if self.cone_angle is not None:
            check(0.0 <= self.cone_angle < 1.0, "cone_angle", self.cone_angle, "must be in [0, 1)")
        check(self.max_samples_per_ray >= 1, "max_samples_per_ray", self.max_samples_per_ray,
               "must be >= 1")
        check(0.0 <= self.early_stop_transmittance < 1.0, "early_stop_transmittance",
               self.early_stop_transmittance, "must be in [0, 1)")


@dataclass(frozen=True)
class NerfConfig:
    """Everything that defines a NeRF training run (instant-ngp's configs/nerf/base.json)."""

    encoding: HashGridConfig = field(default_factory=lambda: HashGridConfig(
        n_levels=16, n_features_per_level=2, log2_hashmap_size=19, base_resolution=16,
        max_resolution=2048))
    """Position encoding over the scene box; `max_resolution` is per unit of the box and is
    multiplied by aabb_scale (instant-ngp: N_max = 2048 * aabb_scale)."""
    density_network: MLPConfig = field(default_factory=lambda: MLPConfig(
        n_neurons=64, n_hidden_layers=1))
    """Encoding -> 16 values; the first is log density (exp activation)."""
    direction_encoding: SphericalHarmonicsConfig = field(default_factory=SphericalHarmonicsConfig)
    """Encoding of the view direction for the colour network."""
    rgb_network: MLPConfig = field(default_factory=lambda: MLPConfig(
        n_neurons=64, n_hidden_layers=2, output_activation="Sigmoid"))
    """(16 density features, direction encoding) -> RGB."""
    optimizer: AdamConfig = field(default_factory=lambda: AdamConfig(
        learning_rate=1e-2, beta1=0.9, beta2=0.99, epsilon=1e-15, l2_reg=1e-6,
        decay_start=20000, decay_interval=10000, decay_base=0.33))
    occupancy: OccupancyGridConfig = field(default_factory=OccupancyGridConfig)
    marching: MarchingConfig = field(default_factory=MarchingConfig)
    target_batch_samples: int = 1 << 18
    """Network samples per step; the ray count adapts to hit it."""
    initial_rays: int = 1 << 12
    """Rays in the first step, before the sample count is known."""
    loss: Literal["L2", "Huber"] = "Huber"
    """Loss on composited colours (Huber with delta 0.1)."""
    random_background: bool = True
    """For RGBA data, composite targets and predictions on a random colour per ray."""
    backend: Backend = "auto"
    """Hash-grid implementation (see ImageFitConfig.backend)."""
    mlp_precision: MlpPrecision = "auto"
    """Arithmetic of the MLPs' matrix products (see ImageFitConfig.mlp_precision). auto:
    bfloat16 on CPUs with bfloat16 units, where a step takes less time and training does as
    well or better per minute (README "bfloat16 MLPs by default"), float32 elsewhere."""
    seed: int = 1337
    appearance: Literal["auto", "on", "off"] = "auto"
    """Per-image colour correction learned with the field (nn/appearance.py): photos differ
    in exposure and white balance. auto = on for photos (images without alpha), off for
    RGBA renders (synthetic data, one exposure). Previews, meshes and the evaluation of
    held-out photos use the neutral appearance."""
    appearance_penalty: float = 1e-2
    """Weight of the pull of every correction towards identity (keeps the average photo as
    the neutral look)."""
    max_image_size: int | None = None
    """Longest image side in pixels when loading the dataset: larger photos are downscaled
    (cameras resized to match); None keeps every image at its own size."""
    holdout_every: int | None = None
    """Every n-th frame of the training file, starting with the first (frames 0, n, 2n, ...
    of its list, frames whose image is missing counted too), is held out of training and
    makes the "holdout" split that is evaluated after it: the LLFF / mip-NeRF convention
    (n = 8) for captures that come as one transforms.json. None trains on every frame."""

    def __post_init__(self) -> None:
        check(self.max_image_size is None or self.max_image_size >= 8, "max_image_size",
              self.max_image_size, "must be >= 8 pixels (or null for the images' own size)")
        check(self.holdout_every is None or self.holdout_every >= 2, "holdout_every",
              self.holdout_every, "must be >= 2 (or null to train on every frame)")
        check(self.target_batch_samples >= 256, "target_batch_samples", self.target_batch_samples,
               "must be >= 256")
        check(self.appearance in ("auto", "on", "off"), "appearance", self.appearance,
              "must be auto, on or off")
        check(self.appearance_penalty >= 0, "appearance_penalty", self.appearance_penalty, "must be >= 0")
        check(self.initial_rays >= 1, "initial_rays", self.initial_rays, "must be >= 1")
        check(self.loss in ("L2", "Huber"), "loss", self.loss, "must be L2 or Huber")
        check(self.backend in BACKEND_NAMES, "backend", self.backend,
               "must be " + ", ".join(BACKEND_NAMES[:-1]) + " or " + BACKEND_NAMES[-1])
        check(self.encoding.max_resolution is not None, "encoding.max_resolution", None,
               "must be given for NeRF (it scales with aabb_scale)")


NERF_PRESETS: dict[str, NerfConfig] = {
    # instant-ngp's configs/nerf/base.json and testbed defaults.
    "instant-ngp": NerfConfig(),
    # Sized for a laptop CPU and images of a few hundred pixels: smaller tables (fewer cache
    # misses, cheaper sparse Adam), N_max 512 per box unit, a 64^3 occupancy grid (cheap
    # updates) and 2^16 samples per step. Measured in scripts/bench_nerf.py.
    "cpu-fast": NerfConfig(
        encoding=HashGridConfig(n_levels=16, n_features_per_level=2, log2_hashmap_size=16,
                                base_resolution=16, max_resolution=512),
        occupancy=OccupancyGridConfig(resolution=64),
        target_batch_samples=1 << 16, initial_rays=1 << 10),
}


# ----------------------------------------------------------------------------------
# SDF
# ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SdfConfig:
    """Everything that defines a signed-distance training run (instant-ngp's
    configs/sdf/base.json and its sample generator)."""

    encoding: HashGridConfig = field(default_factory=lambda: HashGridConfig(
        n_levels=16, n_features_per_level=2, log2_hashmap_size=19, base_resolution=16,
        per_level_scale=2.0))
    """Position encoding over the unit cube the mesh is normalised into."""
    network: MLPConfig = field(default_factory=lambda: MLPConfig(n_neurons=64, n_hidden_layers=2))
    """Encoding -> signed distance (linear output, unit-cube units)."""
    optimizer: AdamConfig = field(default_factory=lambda: AdamConfig(
        learning_rate=1e-4, beta1=0.9, beta2=0.99, epsilon=1e-15, l2_reg=1e-6,
        decay_start=10000, decay_interval=5000, decay_base=0.33))
    batch_size: int = 1 << 18
    """Samples per step: 4/8 on the surface, 3/8 near it, 1/8 uniform in the mesh's box."""
    surface_offset_scale: float = 1.0
    """Near-surface samples move by logistic noise whose standard deviation is bounding radius
    / 1024 times this (per axis, unit-cube units)."""
    ground_truth_pool: int = 1 << 22
    """Near and uniform samples whose true signed distance is computed up front (libigl on
    the CPU); each step draws from this pool. instant-ngp recomputes them every step on the
    GPU; on a CPU one libigl query per step would cost more than the step itself."""
    loss: Literal["MAPE", "L1", "L2"] = "MAPE"
    """MAPE: |pred - d| / (|d| + 0.01), tiny-cuda-nn's; it weights the surface most."""
    backend: Backend = "auto"
    """Hash-grid implementation (see ImageFitConfig.backend)."""
    mlp_precision: MlpPrecision = "auto"
    """Arithmetic of the MLPs' matrix products (see ImageFitConfig.mlp_precision); auto as
    the NeRF's (bfloat16 trained as well or better per minute on two meshes, README
    "bfloat16 MLPs by default")."""
    seed: int = 1337

    def __post_init__(self) -> None:
        check(self.batch_size >= 8, "batch_size", self.batch_size, "must be >= 8")
        check(self.surface_offset_scale > 0, "surface_offset_scale", self.surface_offset_scale,
               "must be > 0")
        check(self.ground_truth_pool >= 1024, "ground_truth_pool", self.ground_truth_pool,
               "must be >= 1024")
        check(self.loss in ("MAPE", "L1", "L2"), "loss", self.loss, "must be MAPE, L1 or L2")
        check(self.backend in BACKEND_NAMES, "backend", self.backend,
               "must be " + ", ".join(BACKEND_NAMES[:-1]) + " or " + BACKEND_NAMES[-1])


SDF_PRESETS: dict[str, SdfConfig] = {
    # instant-ngp's configs/sdf/base.json (without its Ema wrapper around Adam).
    "instant-ngp": SdfConfig(),
    # Sized for a 2-core CPU and a two-minute budget: smaller tables, 2^14 samples per step,
    # a higher learning rate for the few thousand steps a CPU gets through. Measured in
    # scripts/bench_sdf.py.
    "cpu-fast": SdfConfig(
        encoding=HashGridConfig(n_levels=16, n_features_per_level=2, log2_hashmap_size=17,
                                base_resolution=16, max_resolution=1024),
        optimizer=AdamConfig(learning_rate=1e-2, decay_start=2000, decay_interval=1000,
                             decay_base=0.5),
        batch_size=1 << 14, ground_truth_pool=1 << 20),
}
