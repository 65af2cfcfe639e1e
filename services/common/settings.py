"""Typed settings read once from the environment.

Each service declares a frozen dataclass with `SERVICE: ClassVar[str] = "sandbox"` and reads it with
`load_settings(SandboxSettings)`: a field `max_workers` comes from `THINKMESH_SANDBOX_MAX_WORKERS`. Values are
parsed by the field's type, and a bad value raises ConfigError naming the variable, so a misconfigured pod fails
at start-up with a message that says why.
Nothing is read at import time.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from services.common.errors import ConfigError

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_name(service: str, field: str) -> str:
    return f"THINKMESH_{service.upper()}_{field.upper()}"


def _parse(raw: str, kind: Any, variable: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        # Optional[X]: an empty value means None.
        members = [m for m in typing.get_args(kind) if m is not type(None)]
        if raw.strip() == "":
            return None
        return _parse(raw, members[0], variable)
    if origin is typing.Literal:
        choices = typing.get_args(kind)
        if raw.strip() not in choices:
            raise ConfigError(f"{variable}={raw!r} must be one of {', '.join(map(str, choices))}")
        return raw.strip()
    if origin is tuple:
        (item,) = typing.get_args(kind)[:1]
        return tuple(_parse(part.strip(), item, variable) for part in raw.split(",") if part.strip())
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError("expected one of true/false/1/0/yes/no")
        if kind is int:
            return int(raw.strip())
        if kind is float:
            return float(raw.strip())
        if kind is Path:
            return Path(raw)
        if kind is str:
            return raw
    except ValueError as exc:
        raise ConfigError(f"{variable}={raw!r} is not a valid {getattr(kind, '__name__', kind)}: {exc}") from exc
    raise ConfigError(f"{variable}: unsupported setting type {kind!r}")


def load_settings(cls: type[T], environ: Mapping[str, str] | None = None, **overrides: Any) -> T:
    """Build `cls` from THINKMESH_<SERVICE>_* variables; `overrides` (e.g. from the CLI) win over both.

    A field whose type is itself a dataclass is a composed group (the search engine's `SearchConfig` inside the
    search tier's settings): its fields are read under the same prefix, as if they were the outer class's own,
    and start from the field's default. After construction `validate()` runs when the class defines it.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    service: str = getattr(cls, "SERVICE")  # noqa: B009 - a ClassVar every settings class declares
    env = os.environ if environ is None else environ
    instance = cls(**_read_fields(cls, service, env, overrides, set()))
    validate = getattr(instance, "validate", None)
    if callable(validate):
        validate()
    return instance


def _read_fields(
    cls: Any, service: str, env: Mapping[str, str], overrides: Mapping[str, Any], seen: set[str]
) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if dataclasses.is_dataclass(kind) and isinstance(kind, type):
            # A whole group may be overridden too; its fields' variables and overrides still apply on top.
            default = overrides.get(field.name) or field.default
            if default is dataclasses.MISSING:
                default = field.default_factory()  # type: ignore[operator]
            inner = _read_fields(kind, service, env, overrides, seen)
            if inner or field.name in overrides:
                values[field.name] = dataclasses.replace(default, **inner)
            continue
        if field.name in seen:
            raise TypeError(f"{cls.__name__}.{field.name}: two composed settings groups declare the same name")
        seen.add(field.name)
        if field.name in overrides and overrides[field.name] is not None:
            values[field.name] = overrides[field.name]
            continue
        variable = env_name(service, field.name)
        if variable in env:
            values[field.name] = _parse(env[variable], kind, variable)
    return values


def require(condition: bool, settings: object, field: str, message: str) -> None:
    """For `validate()` methods: raise ConfigError naming the variable when `condition` is false."""
    if not condition:
        service: str = getattr(settings, "SERVICE")  # noqa: B009
        raise ConfigError(f"{env_name(service, field)}: {message}")
