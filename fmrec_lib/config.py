"""Config helpers: dataclasses built from dicts with unknown keys failing loudly, and a stable hash."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, TypeVar

T = TypeVar("T")


def from_dict(cls: type[T], values: dict[str, Any] | None = None, **overrides) -> T:
    """``cls(**values, **overrides)`` that names unknown keys and the known ones."""
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


def to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_hash(*parts: dict[str, Any]) -> str:
    """12 hex digits identifying a configuration (sorted JSON of the parts)."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
