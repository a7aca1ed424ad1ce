"""The one config engine of the orpo-* commands: typed dataclasses, read from YAML and ``--set KEY=VALUE`` strings.

Every stage's config is a dataclass whose fields carry their help (``option``). Values from YAML, the command line
or the environment are coerced by the field's annotation the same way everywhere (``coerce``: ``'3e-4'`` and
``'9e-1'``, which YAML 1.1 reads as strings, become floats; ints become floats where a float is asked), unknown keys
are refused naming the nearest one, and nested dataclasses (the pipeline's per-stage budgets) are built recursively.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import field
from pathlib import Path
from typing import Any

import yaml

from orpo_deploy.core.errors import ConfigError
from orpo_deploy.core.resources import config_path


def option(text: str, **kwargs: Any) -> Any:
    """A dataclass field with its help text (shown by ``--help`` and ``--print-config``)."""
    return field(metadata={"help": text}, **kwargs)


def parse_value(text: str) -> Any:
    """A command-line or environment string as YAML (so '1e-4', 'true', '[q_proj, v_proj]' and '' work)."""
    if text.strip() == "":
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_set(items: list[str]) -> dict[str, Any]:
    """``["train.max_steps=5", "name=x"]`` -> ``{"train.max_steps": 5, "name": "x"}`` (values read as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE (e.g. train.max_steps=5), got {item!r}")
        out[key.strip()] = parse_value(raw)
    return out


def check_keys(values: Mapping[str, Any], source: str, names: list[str]) -> None:
    """Refuse keys that are not config fields, suggesting the closest one."""
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{source}: unknown config key {key!r}{hint}")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path`` (or the packaged configs/ file of that name); one-line errors."""
    path = config_path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data


def merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    """Deep-merge ``new`` into ``into``: nested mappings merge, everything else replaces."""
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), Mapping):
            merged = dict(into[key])
            merge(merged, value)
            into[key] = merged
        else:
            into[key] = value


def nest(dotted: str, value: Any) -> dict[str, Any]:
    """``("train.max_steps", 5)`` -> ``{"train": {"max_steps": 5}}``."""
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def build(cls: type, values: Mapping[str, Any], prefix: str = "") -> Any:
    """``cls(**values)`` with every value coerced to its field's type, nested dataclasses built recursively and
    unknown keys named with a suggestion."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    check_keys({f"{prefix}{k}": v for k, v in values.items()}, "config", [f"{prefix}{n}" for n in names])
    kwargs = {}
    for key, value in values.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = build(hint, value or {}, f"{prefix}{key}.")
        else:
            kwargs[key] = coerce(f"{prefix}{key}", hint, value)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{prefix or 'config'}: {exc}") from None


def coerce_fields(cfg: Any) -> None:
    """Check each value of a config dataclass against its annotation, converting the lossless cases."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        setattr(cfg, f.name, coerce(f.name, hints[f.name], getattr(cfg, f.name)))


def coerce(name: str, hint: Any, value: Any) -> Any:
    """``value`` as the annotation ``hint`` asks (int -> float, '1e-4' -> float), or a ConfigError naming ``name``."""
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        if value is None and type(None) in args:
            return None
        if value is None:
            raise ConfigError(f"{name} must not be empty")
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(name, arg, value)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[-1]
    if value is None and hint is not Any:
        raise ConfigError(f"{name} must not be empty")
    origin = typing.get_origin(hint)
    if origin is list:
        if isinstance(value, list | tuple):
            return [coerce(name, args[0], v) for v in value] if args else list(value)
        raise ConfigError(f"{name}: expected a list, got {value!r}")
    if origin is dict or hint is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise ConfigError(f"{name}: expected a mapping, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, str):  # YAML 1.1 reads '3e-4' (no dot) as a string
            try:
                value = hint(value)
            except ValueError:
                pass
        ok = isinstance(value, int) if hint is int else isinstance(value, int | float)
        if ok and not isinstance(value, bool):
            return hint(value)
        raise ConfigError(f"{name}: expected {'an integer' if hint is int else 'a number'}, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    return value
