"""Typed config sections with range checks that fail before any training starts.

Each registered builder declares a dataclass schema whose fields are exactly its keyword
arguments (plus ``name``, the registry key). OmegaConf merges the user's YAML into it, which
rejects unknown keys and wrong types; ``__post_init__`` then checks ranges and names.
Errors carry the key, so the message reads ``model.depth must be >= 1, got 0``.

A field's one-line description is its trailing comment (``depth: int = 20  # Dense layers``),
as tyro and simple_parsing read them: the schema is the one place that holds a key, its type,
its default and its meaning, and ``zoo-train --help`` is generated from it (:func:`field_docs`).
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import math
import textwrap
import tokenize
import typing
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


@functools.cache
def field_docs(schema: type) -> dict[str, str]:
    """``{field: description}`` from the trailing comments of a dataclass's fields, inherited
    fields included (read from the class that declares them)."""
    docs: dict[str, str] = {}
    for cls in reversed(schema.__mro__):
        if "__dataclass_fields__" not in vars(cls):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(cls))
        except (OSError, TypeError):  # no source shipped: descriptions stay empty
            continue
        comments = {tok.start[0]: tok.string.lstrip("#").strip()
                    for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                    if tok.type == tokenize.COMMENT}
        body = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)).body
        for node in body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                docs[node.target.id] = comments.get(node.end_lineno, "")
    return docs


def show_value(value) -> str:
    """A default as the user would type it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return _show(value)


def defaults(schema: type) -> dict[str, Any]:
    """``{field: default}`` of a schema, ``name`` left out."""
    out = {}
    for f in dataclasses.fields(schema):
        if f.name == "name":
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _base_type(hint) -> type | None:
    """``float`` for ``float`` and ``Optional[float]``; None for anything else composite."""
    if typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else None
    return hint if isinstance(hint, type) else None


def check_raw_types(schema: type, values: Any) -> None:
    """What OmegaConf would quietly convert: a bool field given 2 or "yes" (it would run as true
    and be logged as 2), and a float given inf or nan, which no knob means."""
    if not isinstance(values, dict):
        return
    hints = typing.get_type_hints(schema)
    for key, value in values.items():
        kind = _base_type(hints.get(key))
        if kind is bool and not isinstance(value, bool):
            raise SpecError(key, f"must be true or false, got {value!r}")
        if kind is float and isinstance(value, float) and not math.isfinite(value):
            raise SpecError(key, f"must be a finite number, got {value}")


def check_finite(config: Any) -> None:
    """Every float knob of a built schema is finite (strings such as "inf" convert late)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(f.name, f"must be a finite number, got {value}")
