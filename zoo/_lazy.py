"""Deferred imports, so registries and config validation never pay for TensorFlow.

Model and block modules are imported to *register* their builders (for listing and validation);
they touch Keras only when a builder runs. ``keras.layers.Dense`` below triggers the import on
first attribute access, with the backend pinned to TensorFlow first.
"""
from __future__ import annotations

import importlib
import os
import types


def pin_backend() -> None:
    """Keras 3 reads KERAS_BACKEND once, at import; gradzoo is a TensorFlow project."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class LazyModule(types.ModuleType):
    def __init__(self, name: str):
        super().__init__(name)
        self._module = None

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        if self._module is None:
            pin_backend()
            self._module = importlib.import_module(self.__name__)
        return getattr(self._module, attr)


keras = LazyModule("keras")
