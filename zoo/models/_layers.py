"""The zoo's own parameter-free layers, serializable so a saved model loads with
``keras.saving.load_model(path, safe_mode=True)``: a ``Lambda`` would carry Python bytecode,
which safe mode (rightly) refuses to run. Imported by the builders that use them (it imports
Keras, so the registry's import of zoo.models does not load it)."""
from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="zoo")
class ZeroPadShortcut(keras.layers.Layer):
    """ResNet option A (He et al. 2016): keep every ``stride``-th pixel, then zero-pad ``extra``
    channels, split between both sides. No parameters."""

    def __init__(self, stride: int, extra: int, **kwargs):
        super().__init__(**kwargs)
        self.stride, self.extra = int(stride), int(extra)

    def call(self, t):
        t = t[:, ::self.stride, ::self.stride, :]
        before = self.extra // 2
        return keras.ops.pad(t, [[0, 0], [0, 0], [0, 0], [before, self.extra - before]])

    def compute_output_shape(self, shape):
        def down(n):
            return None if n is None else -(-n // self.stride)
        return (shape[0], down(shape[1]), down(shape[2]), shape[3] + self.extra)

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "extra": self.extra}


@keras.saving.register_keras_serializable(package="zoo")
class LastStep(keras.layers.Layer):
    """A sequence's last time step: (batch, time, features) -> (batch, features)."""

    def call(self, t):
        return t[:, -1]

    def compute_output_shape(self, shape):
        return (shape[0], shape[2])
