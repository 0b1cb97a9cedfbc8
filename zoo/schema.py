"""Typed config sections with range checks that fail before any training starts.

Each registered builder declares a dataclass schema whose fields are exactly its keyword
arguments (plus ``name``, the registry key). OmegaConf merges the user's YAML into it, which
rejects unknown keys and wrong types; ``__post_init__`` then checks ranges and names.
Errors carry the key, so the message reads ``model.depth must be >= 1, got 0``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from zoo.registry import Registry


class SpecError(ValueError):
    """A config value that cannot run. ``key`` is relative to its section until prefixed."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        joiner = " " if message.split(" ", 1)[0] in ("must", "is") else ": "
        super().__init__(f"{key}{joiner}{message}" if key else message)

    def within(self, section: str) -> "SpecError":
        return SpecError(f"{section}.{self.key}" if self.key else section, self.message)


@dataclass
class Section:
    """Base of every builder schema: ``name`` picks the builder, the other fields are its kwargs."""

    name: str = ""

    def kwargs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"}


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def at_least(minimum, **values) -> None:
    for key, value in values.items():
        if value < minimum:
            raise SpecError(key, f"must be >= {minimum}, got {_show(value)}")


def positive(**values) -> None:
    for key, value in values.items():
        if not value > 0:
            raise SpecError(key, f"must be > 0, got {_show(value)}")


def in_unit_interval(**values) -> None:
    for key, value in values.items():
        if not 0 < value < 1:
            raise SpecError(key, f"must be in (0, 1), got {_show(value)}")


def choice(allowed, **values) -> None:
    """A value from a fixed set of options (a registry's names go through :func:`one_of`)."""
    for key, value in values.items():
        if value not in allowed:
            raise SpecError(key, f"must be one of {', '.join(map(str, allowed))}, got {value!r}")


def one_of(registry: Registry, **values) -> None:
    for key, value in values.items():
        if value not in registry:
            raise SpecError(key, f"unknown {registry.kind} {value!r}; choose one of: "
                                 f"{', '.join(registry.names())}")
