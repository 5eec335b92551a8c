from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from mefn.config import from_dict, load_config, replace_from_overrides, save_config, to_dict
from mefn.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    lr: float = 1e-3
    steps: int = 10


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    kind: Literal["a", "b"] = "a"
    size: tuple[int, int, int] = (1, 2, 3)
    inner: Inner = field(default_factory=Inner)
    maybe: float | None = None


def test_round_trip(tmp_path):
    cfg = from_dict(Outer, {"name": "y", "size": [4, 5, 6], "inner": {"lr": 2}, "maybe": 0.5})
    assert cfg == Outer(name="y", size=(4, 5, 6), inner=Inner(lr=2.0), maybe=0.5)
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(Outer, tmp_path / "c.yaml") == cfg
    assert to_dict(cfg)["size"] == [4, 5, 6]


def test_unknown_key_suggests_nearest():
    with pytest.raises(ConfigError, match=r"unknown key 'stpes'; did you mean 'steps'\?"):
        from_dict(Outer, {"inner": {"stpes": 3}})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"kind": "c"}, r"expected one of 'a', 'b', found 'c'"),
        ({"size": [1, 2]}, "expected 3 values, found 2"),
        ({"inner": {"steps": 1.5}}, "expected an integer, found 1.5"),
        ({"inner": {"lr": "fast"}}, "expected a number"),
        ({"inner": 3}, "expected a mapping"),
    ],
)
def test_type_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


def test_missing_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, bad)


def test_overrides():
    cfg = replace_from_overrides(Outer(), {"inner.lr": 0.5, "name": "z"})
    assert cfg.inner.lr == 0.5 and cfg.name == "z"
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        replace_from_overrides(Outer(), {"inner.lrr": 1})
