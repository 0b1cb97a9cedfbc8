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
import hashlib
import inspect
import io
import math
import textwrap
import tokenize
import typing
from dataclasses import dataclass
from typing import Any

from zoo.errors import InputError
from zoo.config.registry import Registry


class SpecError(InputError):
    """A config value that cannot run. ``key`` is relative to its section until prefixed. The
    bad-input type of the config: a zoo.errors.InputError (a ValueError)."""

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

    def check_data(self, data) -> None:
        """What only the loaded data can tell (a zoo.data.Dataset: its arrays), checked before
        the model is built; raises SpecError naming this section's key. Nothing by default."""

    def fingerprint(self) -> str | None:
        """A digest of what the section names outside the config (a user's builder source, a
        data file), or None: the same config over changed content is another config (resume
        must not skip it; zoo.tracking.runs.config_hash)."""
        return None


@dataclass
class OpenSection(Section):
    """Base of a schema whose builder takes keyword arguments the zoo cannot list: the user's own
    builder (``model=custom``). Its declared fields are typed and checked as in any schema; every
    other key of the section is one of the builder's knobs, by the same name: ``model.width=16``
    is ``width=16``. :meth:`collect` gathers those keys into ``knobs`` before the structured merge
    (which would refuse them), :meth:`kwargs` hands them back flat, so a config key still maps to
    exactly one builder argument, and MLflow's params (the resolved config) read ``model.width``.
    Its group file extends ``OPEN_NODE`` (zoo.training.spec), which lets Hydra take ``model.width=16``
    without a ``+``. Knob values are YAML scalars or lists."""

    knobs: dict[str, Any] = dataclasses.field(default_factory=dict, metadata={"open": True})  # any other key: the builder's keyword argument of that name

    def __post_init__(self):
        for key, value in self.knobs.items():
            if _holds_mapping(value):
                raise SpecError(key, f"must be a scalar or a list, got {value!r}")

    @classmethod
    def collect(cls, values: Any) -> Any:
        """``{declared fields, knobs: {every other key}}`` from a section's keys."""
        if not isinstance(values, dict):
            return values
        declared = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("open")}
        return {**{k: v for k, v in values.items() if k in declared},
                "knobs": {k: v for k, v in values.items() if k not in declared}}

    def kwargs(self) -> dict[str, Any]:
        kwargs = super().kwargs()
        knobs = kwargs.pop("knobs")
        return {**kwargs, **knobs}


def _holds_mapping(value) -> bool:
    if isinstance(value, dict):
        return True
    return isinstance(value, (list, tuple)) and any(_holds_mapping(v) for v in value)


def is_open(schema: type | None) -> bool:
    """A schema whose extra keys are its builder's knobs (:class:`OpenSection`)."""
    return isinstance(schema, type) and issubclass(schema, OpenSection)


def file_digest(path) -> str:
    """sha256 of a file's bytes (hex, 16 characters: enough to tell versions apart)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


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
    """``{field: default}`` of a schema, ``name`` and an open section's ``knobs`` left out."""
    out = {}
    for f in dataclasses.fields(schema):
        if f.name == "name" or f.metadata.get("open"):  # an open section's knobs are not a key
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


FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max
FLOAT32_TINY = 1.401298464324817e-45  # the smallest positive float32 (a denormal)


def check_finite(config: Any) -> None:
    """Every float knob of a built schema is finite (strings such as "inf" convert late), and
    stays what it says in float32, the precision TensorFlow trains in: a value that rounds to 0
    there (``optimizer.lr=1e-320``: nothing would train, and nothing would say so) or overflows
    to infinity is refused."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if not isinstance(value, float):
            continue
        if not math.isfinite(value):
            raise SpecError(f.name, f"must be a finite number, got {value}")
        if abs(value) > FLOAT32_MAX:
            raise SpecError(f.name, f"must be at most {FLOAT32_MAX:.4g} in size (float32's largest), got {value!r}")
        if value != 0 and abs(value) < FLOAT32_TINY / 2:  # rounds to 0 in float32
            raise SpecError(f.name, f"is 0 in float32, the precision training runs in; the smallest "
                                    f"positive float32 is {FLOAT32_TINY:.3g}, got {value!r}")
