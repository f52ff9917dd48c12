"""Strict JSON (de)serialisation of frozen config dataclasses (standard library only).

JSON is the only serialised form of a config (what crosses the service pipe and what is
saved beside a checkpoint): `to_dict` adds a top-level `schema_version`; `from_dict` is
strict: unknown keys, missing required keys and wrong types are `ConfigError`s that name
the offending field (`train.config.encoding.n_levels: ...`). The service protocol parses
its messages with the same code.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any, Literal, Union

SCHEMA_VERSION = 1


class ConfigError(ValueError):
    """A configuration value or document is invalid; the message names the field."""


def check(ok: bool, name: str, value: Any, why: str) -> None:
    """Raise ConfigError("<name>: <value> <why>") unless `ok` (for __post_init__ checks)."""
    if not ok:
        raise ConfigError(f"{name}: {value!r} {why}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-JSON dict of a config dataclass, with `schema_version` at the top."""
    d = dataclasses.asdict(cfg)
    return {"schema_version": SCHEMA_VERSION, **d}


def to_json(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2, sort_keys=False)


def from_dict(cls: type, data: Any, *, where: str = "") -> Any:
    """Build `cls` from a JSON-like dict, rejecting unknown keys and wrong types.

    A top-level document may carry `schema_version`; any other version is an error.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected an object, got {type(data).__name__}")
    data = dict(data)
    if not where:
        version = data.pop("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ConfigError(f"schema_version: {version!r} is not supported "
                              f"(this engine reads {SCHEMA_VERSION})")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{_join(where, clip(unknown[0]))}: unknown key (known: {', '.join(fields)})")
    missing = [name for name, f in fields.items() if name not in data and f.init
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{_join(where, missing[0])}: missing (required)")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(hints[name], value, _join(where, name))
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where + '.' if where else ''}{e}") from None
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def from_json(cls: type, text: str) -> Any:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"config is not valid JSON: {e}") from None
    return from_dict(cls, data)


def replace(cfg: Any, **changes: Any) -> Any:
    """`dataclasses.replace` that re-runs validation (frozen dataclasses)."""
    return dataclasses.replace(cfg, **changes)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def clip(text: str, limit: int = 60) -> str:
    """`text` cut to `limit` characters, line breaks written as escapes, so that error
    messages stay one short line (a key from a client can hold any character)."""
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _short(value: Any) -> str:
    return clip(repr(value))


def _convert(tp: Any, value: Any, where: str) -> Any:
    """`value` checked against type hint `tp` (one branch per kind of hint the configs and
    messages use: unions with otype tags, literals, nested dataclasses, lists, dicts and
    scalars; kept in one function so every path names `where` the same way)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        dataclass_options = [o for o in options if dataclasses.is_dataclass(o)]
        if len(dataclass_options) == 1 and "otype" not in dataclass_options[0].__dataclass_fields__:
            return from_dict(dataclass_options[0], value, where=where)
        if dataclass_options and isinstance(value, dict):
            otype = value.get("otype")
            for o in dataclass_options:
                if "otype" in {f.name for f in dataclasses.fields(o)} and \
                        o.__dataclass_fields__["otype"].default == otype:
                    return from_dict(o, value, where=where)
            names = [o.__dataclass_fields__["otype"].default for o in dataclass_options]
            raise ConfigError(f"{where}.otype: {otype!r} is not one of {names}")
        errors = []
        for o in options:
            if o is type(None):
                continue
            try:
                return _convert(o, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {_short(value)} is not one of {list(allowed)}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where=where)
    if tp is Any:
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {_short(value)}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected an object, got {_short(value)}")
        _, item = typing.get_args(tp) or (str, Any)
        return {k: _convert(item, v, _join(where, k)) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {_short(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {_short(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {_short(value)}")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond float range
            raise ConfigError(f"{where}: {_short(value)} is out of range") from None
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {_short(value)}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp!r}")

