"""Serializable layers declared beside the builder that uses them, without importing Keras.

A family's custom layers (ResNet's zero-pad shortcut, a recurrent net's last step, a
Transformer's learned positions) must be registered with Keras before a saved model loads in safe
mode: a ``Lambda`` would carry Python bytecode, which safe mode (rightly) refuses to run. But a
family module is imported whenever the registry is listed or a config validated, where
TensorFlow must not load; a ``class X(keras.layers.Layer)`` at module level would load it. So a
family writes its layer inside a function of ``keras``::
    @serializable
    def LastStep(keras):
        class LastStep(keras.layers.Layer):
            ...
        return LastStep

The decorator returns a stand-in that builds, registers (``zoo>LastStep``) and instantiates
the class on its first call, and :func:`register_all` (what ``import zoo.models._layers`` runs)
registers every family's layers before a load. Adding a family touches no shared file.
"""
from __future__ import annotations

from typing import Callable
from zoo._lazy import pin_backend

PACKAGE = "zoo"  # Keras' registered names read "zoo>ClassName"
_DEFINITIONS: dict[str, Callable] = {}
_CLASSES: dict[str, type] = {}


class LazyLayer:
    """Stands for a layer class until Keras is needed: calling it builds the class (once) and
    returns an instance; ``.cls`` is the class itself."""

    def __init__(self, name: str):
        self.name = name

    @property
    def cls(self) -> type:
        return resolve(self.name)

    def __call__(self, *args, **kwargs):
        return self.cls(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<zoo layer {self.name} (built on first use)>"


def serializable(define: Callable) -> LazyLayer:
    """Declare ``define(keras) -> layer class`` as one of the zoo's serializable layers, named
    by the function (which must match the class's name: that is the name files record).
    Raises ValueError for a name declared twice."""
    name = define.__name__
    if name in _DEFINITIONS:
        raise ValueError(f"zoo layer {name!r} is declared twice")
    _DEFINITIONS[name] = define
    return LazyLayer(name)


def resolve(name: str) -> type:
    """The registered Keras class of layer ``name`` (defined and registered on first use)."""
    if name not in _CLASSES:
        pin_backend()
        import keras

        cls = _DEFINITIONS[name](keras)
        if cls.__name__ != name:
            raise ValueError(f"zoo layer {name!r} defines a class named {cls.__name__!r}")
        _CLASSES[name] = keras.saving.register_keras_serializable(package=PACKAGE)(cls)
    return _CLASSES[name]


def register_all() -> tuple[str, ...]:
    """Register every family's layers with Keras (imports every family module first); returns
    their names. Call before ``keras.saving.load_model`` on a zoo model's file."""
    import zoo.models  # noqa: F401  every family module, so every declaration is known

    return tuple(resolve(name).__name__ for name in sorted(_DEFINITIONS))
