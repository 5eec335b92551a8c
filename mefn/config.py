"""Frozen-dataclass configuration loaded from YAML.

Every configurable object in mefn is a frozen dataclass. :func:`from_dict` builds one from
plain data (nested dataclasses, tuples, literals, optionals), refusing unknown keys with a
suggestion of the nearest known one; :func:`load_config` reads a YAML file into it and
:func:`to_dict` / :func:`save_config` write the resolved configuration back.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from mefn.errors import ConfigError, MefnError
from mefn.fileutil import atomic_write_text

T = TypeVar("T")

__all__ = ["from_dict", "load_config", "replace_from_overrides", "save_config", "to_dict"]


def _nearest(name: str, options: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else ""


def _convert(value: Any, hint: Any, where: str) -> Any:
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: cannot be {value!r}")
    if origin is typing.Literal:
        allowed = get_args(hint)
        if value not in allowed:
            raise ConfigError(
                f"{where}: expected one of {', '.join(map(repr, allowed))}, found {value!r}"
                f"{_nearest(str(value), map(str, allowed))}"
            )
        return value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return value
        return from_dict(hint, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, found {type(value).__name__} {value!r}")
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, found {len(value)}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, found {type(value).__name__} {value!r}")
        (arg,) = get_args(hint)
        return [_convert(v, arg, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, found {type(value).__name__}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, found {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, found {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, found {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, found {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build the frozen dataclass ``cls`` from a mapping, checking names and types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, found {type(data).__name__} {data!r}")
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        raise TypeError(f"{cls!r} is not a dataclass type")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                f"{where}: unknown key {key!r}{_nearest(str(key), fields)}"
                f" (known keys: {', '.join(sorted(fields))})"
            )
        kwargs[key] = _convert(value, hints[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def read_yaml(
    path: str | os.PathLike[str], what: str = "config file", error: type[MefnError] = ConfigError
) -> Any:
    """The content of the YAML file ``path``; ``error`` (one line, naming ``what``) when it
    is missing or not valid YAML."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist; give the path to a .yaml file")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "parse error"
        raise error(f"{what} {path} is not valid YAML ({first}); fix the syntax") from None


def load_config(cls: type[T], path: str | os.PathLike[str]) -> T:
    """Read a YAML file into the dataclass ``cls``."""
    path = Path(path)
    data = read_yaml(path)
    return from_dict(cls, data, where=path.name)


def to_dict(obj: Any) -> Any:
    """Plain data (dicts, lists, scalars) from a dataclass tree, ready for YAML or JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_config(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write a dataclass (or plain data) as YAML, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(to_dict(obj), sort_keys=False))


def replace_from_overrides(obj: T, overrides: dict[str, Any]) -> T:
    """A copy of ``obj`` with dotted-key overrides applied (``{"optim.lr": 1e-3}``)."""
    data = to_dict(obj)
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"override {dotted!r}: no section {part!r}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(
                f"override {dotted!r}: unknown key {parts[-1]!r}{_nearest(parts[-1], node)}"
            )
        node[parts[-1]] = value
    return from_dict(type(obj), data)
