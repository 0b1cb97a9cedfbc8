"""Statistics computed inside the compiled train step, so Python only sees small summaries.

Conventions (also in the README):
- Every norm is exact over float32's whole range (1e-45 ... 3.4e38, denormals included): the
  elements are read into float64 bit by bit (:func:`exact_float64`) and squared and summed there.
  ``sqrt(sum(x**2))`` in float32 loses every element below ~1e-19 (its square is below float32's
  smallest normal number, and TensorFlow flushes denormals to zero on CPU) and overflows to inf
  above ~1.8e19; a float32 cast does not help, because the flush also applies to the cast's
  input. Norms leave the step as float64, so a norm above float32's largest value stays finite.
  A norm is 0 exactly when every element is 0.
- ``grad_norm``: L2 norm of a kernel's gradient, before clipping; ``grad_norm_clipped`` after.
- ``update_ratio``: ||W_after - W_before|| / ||W_before|| for one optimizer step.
- Gradient histograms bin log10|g| over HIST_RANGE in equal bins; values outside are counted in
  the edge bins and exact zeros in a separate count (they have no logarithm).
- Activation statistics over a batch, per activation layer: mean, std, the saturated fraction
  (sigmoid / tanh outputs whose local derivative is under 1% of its peak: sigmoid output outside
  [0.0025, 0.9975], |tanh| > 0.995) and, for ReLU only, the dead fraction (units, i.e. last-axis
  channels, whose output is <= 0 on every example and position of the batch).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from zoo.monitor.layout import Layout
from zoo.monitor.stats import ACT_STATS, HIST_BINS, HIST_RANGE  # noqa: F401 (re-exported)

SIGMOID_SATURATED = 0.0025  # y(1-y) < 0.0025 = 1% of sigmoid's peak slope 0.25
TANH_SATURATED = 0.995      # 1 - y^2 < ~0.01


PACKED_DTYPE = tf.float64  # norms may exceed float32's range (see above); counts stay exact
_FLOAT32_BIAS, _FLOAT32_MANTISSA = 127, 23
_FLOAT64_BIAS, _FLOAT64_MANTISSA = 1023, 52


def pack(layout: Layout, values: dict) -> tf.Tensor:
    """The named tensors as one float64 vector, in the layout's order (see zoo.monitor.layout)."""
    return tf.concat([tf.reshape(tf.cast(values[f.name], PACKED_DTYPE), [f.size]) for f in layout.fields], 0)


def exact_float64(t: tf.Tensor) -> tf.Tensor:
    """``t`` (any shape; float16, bfloat16, float32 or float64) as float64, value for value,
    denormals included.

    A float cast would do if TensorFlow did not run CPU kernels with denormals-are-zero: a
    float32 denormal (below 1.18e-38) reads as 0 in every floating-point op, the cast included.
    So a float32 value is rebuilt from its bits (IEEE 754 binary32: 8 exponent bits with bias
    127, 23 mantissa bits): value = significand * 2**(exponent - 150), where the significand
    has the implicit leading 1 for normal numbers and the denormals' exponent is that of 1;
    2**e is itself assembled as a float64 from its bits. inf and NaN keep their value (their
    cast is exact). float16 and bfloat16 are widened to float32 first, which is exact."""
    if t.dtype == tf.float64:
        return t
    if t.dtype != tf.float32:
        t = tf.cast(t, tf.float32)
    bits = tf.bitcast(t, tf.int32)
    exponent = tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, _FLOAT32_MANTISSA), 0xFF)
    mantissa = tf.bitwise.bitwise_and(bits, (1 << _FLOAT32_MANTISSA) - 1)
    normal = exponent > 0
    significand = tf.where(normal, tf.bitwise.bitwise_or(mantissa, 1 << _FLOAT32_MANTISSA), mantissa)
    power = tf.maximum(exponent, 1) - (_FLOAT32_BIAS + _FLOAT32_MANTISSA)  # -149 ... 104
    scale = tf.bitcast(tf.bitwise.left_shift(tf.cast(power + _FLOAT64_BIAS, tf.int64), _FLOAT64_MANTISSA),
                       tf.float64)
    magnitude = tf.cast(significand, tf.float64) * scale  # exact: 24 bits times a power of 2
    value = tf.where(bits < 0, -magnitude, magnitude)
    return tf.where(exponent == 0xFF, tf.cast(t, tf.float64), value)


def norm(t: tf.Tensor, axis=None) -> tf.Tensor:
    """Exact L2 norm of ``t`` over ``axis`` (all axes by default), float64: the sum of squares is
    taken in float64, where no square of a float32 value underflows or overflows."""
    x = exact_float64(t)
    return tf.sqrt(tf.reduce_sum(tf.square(x), axis=axis))


def norms(tensors) -> tf.Tensor:
    """Exact L2 norm of each tensor (:func:`norm`), as one float64 vector [len(tensors)]."""
    return tf.stack([norm(t) for t in tensors])


def log_histogram(g: tf.Tensor) -> tf.Tensor:
    """Counts of log10|g| in HIST_BINS fixed bins, then the count of exact zeros (HIST_BINS + 1).
    The values are read exactly (:func:`exact_float64`), so a denormal is counted in its bin,
    not as a zero."""
    lo, hi = HIST_RANGE
    flat = tf.reshape(tf.abs(exact_float64(g)), [-1])
    is_zero = tf.equal(flat, 0.0)
    logs = tf.math.log(tf.where(is_zero, tf.ones_like(flat), flat)) / np.log(10.0)
    index = tf.cast(tf.floor((logs - lo) / ((hi - lo) / HIST_BINS)), tf.int32)
    index = tf.where(is_zero, HIST_BINS, tf.clip_by_value(index, 0, HIST_BINS - 1))
    return tf.math.unsorted_segment_sum(tf.ones_like(index), index, HIST_BINS + 1)


def activation_stats(a: tf.Tensor, saturation: str | None, dies: bool) -> tf.Tensor:
    """[mean, std, saturated_fraction, dead_fraction] of one activation layer's output;
    a fraction that does not apply (``saturation`` "sigmoid" | "tanh" | None; ``dies``: a unit
    negative everywhere passes no gradient, i.e. ReLU) is NaN."""
    a = tf.cast(a, tf.float32)
    nan = tf.constant(np.nan, tf.float32)
    if saturation == "sigmoid":
        saturated = tf.reduce_mean(tf.cast((a < SIGMOID_SATURATED) | (a > 1 - SIGMOID_SATURATED), tf.float32))
    elif saturation == "tanh":
        saturated = tf.reduce_mean(tf.cast(tf.abs(a) > TANH_SATURATED, tf.float32))
    else:
        saturated = nan
    if dies:
        units = tf.reshape(a, [-1, tf.shape(a)[-1]])
        dead = tf.reduce_mean(tf.cast(tf.reduce_all(units <= 0.0, axis=0), tf.float32))
    else:
        dead = nan
    return tf.stack([tf.reduce_mean(a), tf.math.reduce_std(a), saturated, dead])
