"""``zoo.GradientMonitor`` on the JAX and PyTorch backends of Keras 3
(``KERAS_BACKEND=jax`` or ``torch``); TensorFlow's is zoo.gradient_monitor.callback.

    monitor.py   the monitor there: TensorFlow's recording, verdict and records, fed per step
    measure.py   what a step reports, in backend-neutral keras.ops, and its host row
    exact.py     exact norms over float32's range in keras.ops (float64 sums, denormals from bits)
    on_jax.py    the seams of Keras' jitted, stateless JAX step
    on_torch.py  the seams of Keras' eager PyTorch step

The methods are wrapped on the user's objects by zoo.gradient_monitor.patches, as on TensorFlow.
Only the backend in use has its framework imported.
"""
from __future__ import annotations

import keras

BACKENDS = ("tensorflow", "jax", "torch")


def monitor_class():
    """The GradientMonitor class for the Keras backend in use (JAX, PyTorch).

    Raises:
        NotImplementedError: a backend that cannot train (numpy, openvino).
    """
    backend = keras.backend.backend()
    if backend not in BACKENDS:
        raise NotImplementedError(f"GradientMonitor: the Keras backend {backend!r} cannot train; "
                                  f"use one of {', '.join(BACKENDS)}")
    from zoo.gradient_monitor.backends.monitor import PortableMonitor  # imports callback.py, which imports this package

    return PortableMonitor
