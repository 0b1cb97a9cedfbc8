"""One registry type for models, datasets, activations, initializers and optimizers.

A registry maps a name to a builder plus the metadata that lets us validate a config and list
choices *without* building anything (and so without importing TensorFlow): a one-line
description, the dataclass schema of the builder's keyword arguments, and free-form tags
(e.g. which kind of input a model expects). Pattern after timm's ``_registry.py``.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator


class UnknownNameError(ValueError):
    """A name that is not in a registry; the message lists the valid choices."""


@dataclass(frozen=True)
class Entry:
    name: str
    builder: Callable[..., Any]
    description: str = ""
    schema: type | None = None  # dataclass whose fields are the builder's config keys
    tags: dict[str, Any] = field(default_factory=dict)


class Registry:
    """Name -> :class:`Entry`. ``kind`` names what is registered, for error messages."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, description: str = "", schema: type | None = None, **tags):
        """Decorator: ``@MODELS.register("mlp", schema=MLPConfig, input_kind="flat")``."""

        def decorate(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            doc = description or (builder.__doc__ or "").strip().split("\n")[0]
            self._entries[name] = Entry(name, builder, doc, schema, dict(tags))
            return builder

        return decorate

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def build(self, name: str, *args, **kwargs):
        return self.get(name).builder(*args, **kwargs)

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return (self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)
