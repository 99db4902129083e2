"""Config helpers: dataclasses built from dicts with unknown keys failing loudly, and a stable hash."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, TypeVar

T = TypeVar("T")


def from_dict(cls: type[T], values: dict[str, Any] | None = None, **overrides) -> T:
    """``cls(**values, **overrides)`` that names unknown keys and the known ones; nested
    configs may be dicts."""
    merged = {**(values or {}), **overrides}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s) {unknown}; known: {sorted(known)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in merged:
            v = merged[f.name]
            kwargs[f.name] = tuple(v) if isinstance(f.default, tuple) and isinstance(v, list) else v
    return cls(**kwargs)


def check_settings(config, *, positive: tuple[str, ...] = (), probabilities: tuple[str, ...] = (),
                   non_negative: tuple[str, ...] = ()) -> None:
    """Refuse impossible values at construction, before any work is spent: integers or
    floats that must be >= 1 (sizes, counts), dropout probabilities in [0, 1), weights >= 0."""
    name = type(config).__name__
    for field_name in positive:
        value = getattr(config, field_name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v < 1 for v in values):
            raise ValueError(f"{name}.{field_name} must be >= 1, got {value!r}")
    for field_name in probabilities:
        value = getattr(config, field_name)
        if not 0 <= value < 1:
            raise ValueError(f"{name}.{field_name} must lie in [0, 1), got {value!r}")
    for field_name in non_negative:
        value = getattr(config, field_name)
        if not value >= 0:  # also refuses NaN
            raise ValueError(f"{name}.{field_name} must be >= 0, got {value!r}")


def to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_hash(*parts: dict[str, Any]) -> str:
    """12 hex digits identifying a configuration (sorted JSON of the parts)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
