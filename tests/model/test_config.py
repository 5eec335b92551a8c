"""Model configs: the shipped YAML files load, and bad values are refused with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from mefn.config import from_dict, load_config
from mefn.errors import ConfigError
from mefn.model import ModelConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"
SHIPPED = [
    "mefn_small",
    "mefn_base",
    "dynunet_small",
    "dynunet_mcdropout_small",
    "mefn_hecktor_small",
]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(ModelConfig, CONFIGS / f"{name}.yaml")
    assert cfg.size_divisor == 2 ** (cfg.depth - 1)
    assert len(cfg.level_widths) == cfg.depth


def test_hecktor_config_has_three_classes_and_small_matches_baseline_width() -> None:
    assert load_config(ModelConfig, CONFIGS / "mefn_hecktor_small.yaml").num_classes == 3
    small = load_config(ModelConfig, CONFIGS / "mefn_small.yaml")
    base = load_config(ModelConfig, CONFIGS / "dynunet_small.yaml")
    assert small.level_widths == base.level_widths


def test_widths_derive_from_base_width() -> None:
    cfg = ModelConfig(base_width=12, depth=4, max_width=64)
    assert cfg.level_widths == (12, 24, 48, 64)
    assert cfg.branch_widths == (6, 12, 24, 32)
    assert ModelConfig(widths=(5, 7, 9), depth=3).level_widths == (5, 7, 9)


def test_unknown_key_suggests_nearest() -> None:
    with pytest.raises(ConfigError, match="unknown key 'calibrater'; did you mean 'calibrator'"):
        from_dict(ModelConfig, {"calibrater": True})
    with pytest.raises(ConfigError, match="did you mean 'kl_anneal_epochs'"):
        from_dict(ModelConfig, {"loss": {"kl_aneal_epochs": 3}})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"num_classes": 1}, r"num_classes must be >= 2 .* found 1"),
        ({"depth": 1}, r"depth must be >= 2 resolution levels, found 1"),
        ({"widths": [8, 16]}, r"widths has 2 entries but depth is 4"),
        ({"widths": [8, 0, 16, 32]}, r"widths must be positive"),
        ({"base_width": 0}, r"widths must be positive|base_width must be >= 1"),
        ({"branch_width_ratio": 0.0}, r"branch_width_ratio must be in \(0, 2\]"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), found 1.0"),
        ({"architecture": "dynunet_mcdropout"}, r"needs dropout > 0 \(e.g. 0.1\), found 0.0"),
        ({"mc_samples": 0}, r"mc_samples must be >= 1"),
        ({"attention_levels": 5}, r"attention_levels must be in \[0, depth=4\], found 5"),
        ({"attention_heads": 0}, r"attention_heads must be >= 1"),
        ({"attention_heads": 3}, r"attention_heads=3 must divide the branch width 32"),
        ({"architecture": "unet"}, r"expected one of 'mefn', 'dynunet', 'dynunet_mcdropout'"),
        ({"loss": {"dice_weight": -1}}, r"loss.dice_weight must be >= 0, found -1"),
        ({"loss": {"kl_anneal_epochs": -2}}, r"loss.kl_anneal_epochs must be >= 0 epochs"),
    ],
)
def test_bad_values_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(ModelConfig, values)
