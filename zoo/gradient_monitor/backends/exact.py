"""Exact L2 norms in ``keras.ops``, the same on every Keras backend: the rule of
zoo.instruments.graph_stats (TensorFlow's) written once for JAX and PyTorch.

- The squares are summed in float64, where no square of a float32 value underflows or
  overflows and each is exact (a float32 mantissa squared fits float64's): a norm is exact to
  float64 rounding over float32's whole range, 1.4e-45 ... 3.4e38. JAX computes in float32
  unless x64 is on; it is switched on for these reductions only (:func:`wide`, the
  ``jax.enable_x64`` context around them while the step is traced), never for the user's own
  arithmetic, whose dtypes stay as they were.
- Denormals (below 1.18e-38) are read from their bits: XLA's CPU kernels (JAX) treat them as 0,
  the float64 cast included (measured: a 1e-44 casts to 0.0), as TensorFlow's do. The bits of
  a denormal are its value in units of 2**-149, exact in float64. PyTorch keeps denormals; the
  same code is exact there too.

Norms leave the step as float64, so one above float32's largest value stays finite.
"""
from __future__ import annotations

import contextlib

import keras
import numpy as np
from keras import ops

_SMALLEST_NORMAL_BITS = 0x00800000  # float32 bit patterns below this (sign cleared) are denormals
_DENORMAL_UNIT = 2.0 ** -149        # the value of the last bit of a float32 denormal


def wide():
    """A context in which ``keras.ops`` may compute in float64: ``jax.enable_x64`` on JAX
    (scoped to the ops traced inside it), nothing elsewhere (float64 is always there)."""
    if keras.backend.backend() == "jax":
        import jax  # the backend's own framework: imported only when it is the backend

        return jax.enable_x64(True)
    return contextlib.nullcontext()


def exact_abs(t):
    """|t| as float64, value for value, denormals included (float16 and bfloat16 are widened to
    float32 first, which is exact). Call inside :func:`wide`."""
    t = ops.convert_to_tensor(t)
    dtype = keras.backend.standardize_dtype(t.dtype)
    if dtype == "float64":
        return ops.abs(t)
    if dtype != "float32":
        t = ops.cast(t, "float32")
    bits = ops.bitwise_and(ops.view(t, "int32"), 0x7FFFFFFF)  # the sign cleared
    denormal = ops.cast(bits, "float64") * _DENORMAL_UNIT
    return ops.where(bits < _SMALLEST_NORMAL_BITS, denormal, ops.cast(ops.abs(t), "float64"))


def exact_values(t):
    """``t`` flattened, as exact float64 values (the sign from the sign bit). Inside :func:`wide`."""
    flat = ops.reshape(ops.cast(ops.convert_to_tensor(t), "float32"), [-1])
    magnitude = exact_abs(flat)
    return ops.where(ops.view(flat, "int32") < 0, -magnitude, magnitude)


def norm(t):
    """The exact L2 norm of ``t`` (float64 scalar); None reads as 0. Inside :func:`wide`."""
    if t is None:
        return ops.zeros((), "float64")
    return ops.sqrt(ops.sum(ops.square(exact_abs(t))))


def norms(tensors, minus=None):
    """The exact norm of each tensor as one float64 vector [len(tensors)] (None reads as 0);
    ``minus``: tensors subtracted first, in their own dtype (an update's size, as the optimizer
    made it). A norm is finite exactly when every element is (float64 holds any sum of float32
    squares). Inside :func:`wide`.

    The same sums two ways, by what each backend pays for (a 20x64 MLP's step, measured): under
    XLA (JAX) one reduction a tensor, which it fuses (over a concatenation the step was ~0.5 ms
    slower; a segmented sum is a scatter, which XLA's CPU runs element by element, ~1 ms);
    eager PyTorch pays per op call, so one pass over all the tensors concatenated and a sum of
    each one's slice (~3 ms less than a pass a tensor). Reshapes, slices and sums are the
    arrays' own methods, the same on both."""
    if minus is not None:
        tensors = [None if t is None else ops.subtract(t, m) for t, m in zip(tensors, minus)]
    present = [(i, ops.convert_to_tensor(t).reshape(-1)) for i, t in enumerate(tensors) if t is not None]
    if not present:
        return ops.zeros([len(tensors)], "float64")
    zero = ops.zeros([], "float64")
    if keras.backend.backend() == "jax":
        sums = {i: ops.sum(ops.square(exact_abs(f))) for i, f in present}
        return ops.sqrt(ops.stack([sums.get(i, zero) for i in range(len(tensors))]))
    dtypes = {keras.backend.standardize_dtype(f.dtype) for _, f in present}
    wide_dtype = "float64" if "float64" in dtypes else "float32"
    values = ops.concatenate([f if dtypes == {wide_dtype} else ops.cast(f, wide_dtype) for _, f in present], 0)
    squares = ops.square(exact_abs(values))
    bounds = np.cumsum([0] + [int(f.shape[0]) for _, f in present]).tolist()
    sums = {i: squares[a:b].sum() for (i, _), a, b in zip(present, bounds[:-1], bounds[1:])}
    return ops.sqrt(ops.stack([sums.get(i, zero) for i in range(len(tensors))]))


def log_histograms(tensors, bins: int, low: float, high: float):
    """[len(tensors), bins + 1] counts (int32): per tensor, log10|g| in ``bins`` fixed bins over
    [low, high) (values outside in the edge bins), then the exact zeros; every value read
    exactly (:func:`exact_abs`: a denormal in its bin, not a zero), as
    zoo.instruments.histograms.log_histograms does on TensorFlow. Inside :func:`wide`."""
    flat = [ops.reshape(ops.convert_to_tensor(t), [-1]) for t in tensors]
    values = exact_abs(ops.concatenate([ops.cast(f, "float32") for f in flat], 0))
    owner = np.repeat(np.arange(len(flat), dtype="int32"), [int(f.shape[0]) for f in flat])
    is_zero = ops.equal(values, 0.0)
    logs = ops.log(ops.where(is_zero, ops.ones_like(values), values)) / np.log(10.0)
    index = ops.cast(ops.floor((logs - low) / ((high - low) / bins)), "int32")
    index = ops.where(is_zero, bins, ops.clip(index, 0, bins - 1))
    counts = ops.segment_sum(ops.ones_like(index), ops.convert_to_tensor(owner) * (bins + 1) + index,
                             num_segments=len(flat) * (bins + 1))
    return ops.reshape(counts, [len(flat), bins + 1])
