"""Typed configs: strict JSON round trip, clear errors, presets."""
from __future__ import annotations

import json
import math

import pytest

from ngp_engine import config as C


def test_round_trip_every_preset():
    for name, cfg in C.IMAGE_PRESETS.items():
        text = C.to_json(cfg)
        assert json.loads(text)["schema_version"] == C.SCHEMA_VERSION
        assert C.from_json(C.ImageFitConfig, text) == cfg, name


def test_seed_preset_is_the_article_config():
    cfg = C.IMAGE_PRESETS["seed"]
    enc = cfg.encoding
    assert (enc.n_levels, enc.n_features_per_level, enc.log2_hashmap_size) == (16, 2, 12)
    assert (enc.base_resolution, enc.max_resolution) == (16, 256)
    assert (cfg.network.n_neurons, cfg.network.n_hidden_layers, cfg.batch_size) == (64, 2, 1024)
    # b = exp((ln 256 - ln 16) / 15) = 16^(1/15)
    assert enc.resolved_per_level_scale == pytest.approx(16 ** (1 / 15), rel=1e-12)
    opt = cfg.optimizer
    assert (opt.beta1, opt.beta2, opt.epsilon, opt.l2_reg) == (0.9, 0.99, 1e-15, 1e-6)


def test_unknown_key_is_named():
    d = C.to_dict(C.IMAGE_PRESETS["seed"])
    d["encoding"]["n_levelz"] = 3
    with pytest.raises(C.ConfigError, match=r"encoding\.n_levelz: unknown key"):
        C.from_dict(C.ImageFitConfig, d)


def test_wrong_type_and_bad_value_are_named():
    d = C.to_dict(C.IMAGE_PRESETS["seed"])
    d["batch_size"] = "many"
    with pytest.raises(C.ConfigError, match=r"batch_size: expected an integer"):
        C.from_dict(C.ImageFitConfig, d)
    d = C.to_dict(C.IMAGE_PRESETS["seed"])
    d["encoding"]["n_features_per_level"] = 3
    with pytest.raises(C.ConfigError, match=r"n_features_per_level: 3 must be 1, 2, 4 or 8"):
        C.from_dict(C.ImageFitConfig, d)
    with pytest.raises(C.ConfigError, match="otype"):
        C.from_dict(C.ImageFitConfig, {"encoding": {"otype": "Nope"}})
    with pytest.raises(C.ConfigError, match="schema_version"):
        C.from_dict(C.ImageFitConfig, {"schema_version": 99})


def test_exactly_one_of_max_resolution_and_per_level_scale():
    with pytest.raises(C.ConfigError, match="exactly one"):
        C.HashGridConfig(max_resolution=512, per_level_scale=2.0)
    assert C.HashGridConfig(per_level_scale=2.0).resolved_per_level_scale == 2.0
    assert C.HashGridConfig(max_resolution=2048).resolved_per_level_scale == pytest.approx(
        math.exp(math.log(2048 / 16) / 15))


def test_learning_rate_decay():
    opt = C.AdamConfig(learning_rate=1e-2, decay_start=100, decay_interval=50, decay_base=0.5)
    assert opt.learning_rate_at(99) == 1e-2
    assert opt.learning_rate_at(100) == pytest.approx(5e-3)
    assert opt.learning_rate_at(150) == pytest.approx(2.5e-3)


def test_an_unknown_key_with_a_line_break_is_named_on_one_line():
    # Found by tests/test_protocol.py's property test: a client's key holding "\n" split the
    # error over two lines.
    from ngp_engine.schema import clip

    d = C.to_dict(C.IMAGE_PRESETS["seed"])
    d["encoding"]["bad\nkey"] = 3
    with pytest.raises(C.ConfigError) as e:
        C.from_dict(C.ImageFitConfig, d)
    assert "\n" not in str(e.value) and "encoding.bad\\nkey: unknown key" in str(e.value)
    assert clip("a\r\nb") == "a\\r\\nb" and clip("x" * 70) == "x" * 57 + "..."
