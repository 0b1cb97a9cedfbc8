"""Deferred imports, so registries and config validation never pay for TensorFlow.

Model and block modules are imported to *register* their builders (for listing and validation);
they touch Keras only when a builder runs. ``keras.layers.Dense`` below triggers the import on
first attribute access, with the backend pinned to TensorFlow first.
"""
from __future__ import annotations

import importlib
import os
import sys
import types


def pin_backend() -> None:
    """Keras 3 reads KERAS_BACKEND once, at import; gradzoo is a TensorFlow project.

    TF_CPP_MIN_LOG_LEVEL=2 (warnings and errors of TensorFlow's C++ log only) must be set before
    TensorFlow is imported; it silences cpu_feature_guard's two lines. Measured with TensorFlow
    2.21 on a CPU-only machine, five lines stay whatever the environment says: twice (once per
    shared library) absl's "All log messages before absl::InitializeLog()" warning, the oneDNN
    notice and cudart_stub's "Could not find cuda drivers", logged by static initializers before
    any log level is read; and cuda_platform's "failed call to cuInit" (level 3 would hide it,
    and every real C++ error with it; CUDA_VISIBLE_DEVICES does not). TF_ENABLE_ONEDNN_OPTS
    would silence the notice by changing the numerics, so it is left alone."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def keras_backend() -> str:
    """The Keras backend of this process: Keras' own answer once it is imported, else the one
    KERAS_BACKEND (pinned to TensorFlow by default) will give it, without importing it."""
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend"):
        return keras.backend.backend()
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def pin_tensorflow(program: str) -> None:
    """A command that loads a ``.keras`` file (backend-independent) runs it on TensorFlow, whatever
    KERAS_BACKEND says: its measuring is TensorFlow's. Call before Keras is imported."""
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend != "tensorflow":
        print(f"{program}: runs on Keras' TensorFlow backend (KERAS_BACKEND={backend} is for your own "
              "process; a .keras file loads on any backend)", file=sys.stderr)
        os.environ["KERAS_BACKEND"] = "tensorflow"
    pin_backend()


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
