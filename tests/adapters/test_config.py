"""AdapterConfig from YAML: the bundled files load, and bad values are refused clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from mefn.adapters import AdapterConfig, QuantConfig, load_adapter_config
from mefn.adapters.config import CONFIG_DIR
from mefn.errors import ConfigError


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_bundled_configs_load(path: Path) -> None:
    cfg = load_adapter_config(path)
    assert cfg == load_adapter_config(path.stem)


def test_values_come_from_the_yaml() -> None:
    cfg = load_adapter_config("compacter")
    assert (cfg.type, cfg.phm_n, cfg.rank, cfg.share.rules) == ("compacter", 2, 1, True)
    assert load_adapter_config("lowbit").quant.bits == 1
    assert load_adapter_config("mosa").mosa.parts == 4


def test_unknown_key_suggests_the_nearest(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("type: lora\nrnak: 4\n")
    with pytest.raises(ConfigError, match="unknown key 'rnak'; did you mean 'rank'"):
        load_adapter_config(path)


def test_unknown_name_lists_the_bundled_ones() -> None:
    with pytest.raises(ConfigError, match="no adapter config named 'lorra'.*lora"):
        load_adapter_config("lorra")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": "prompt"}, "adapter type must be one of"),
        ({"rank": 0}, "rank must be at least 1, found 0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"quant": QuantConfig(bits=3)}, "quant.bits must be 0 \\(off\\), 1, 2, 4 or 8, found 3"),
        ({"type": "ia3", "quant": QuantConfig(bits=1)}, "quant.bits applies to lora"),
        ({"lr_scale": 0.0}, "lr_scale must be a positive number, found 0.0"),
        ({"lr_scale": float("nan")}, "lr_scale must be a positive number, found nan"),
        ({"type": "ia3", "backend": "own"}, "IA3 input scaling .* comes from peft"),
    ],
)
def test_invalid_values_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AdapterConfig(**kwargs)
