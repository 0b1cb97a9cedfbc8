"""The in-graph math every instrument shares: exact norms, finiteness, packing; so Python only
sees small summaries. (Each instrument's own math is in its file: zoo.instruments.)

Conventions:
- Every norm is exact over float32's whole range (1e-45 ... 3.4e38, denormals included): the
  squares are summed in float64, from a float64 cast where that is exact to float64 precision
  and from the bits (:func:`exact_abs`) where a denormal could matter (:func:`norms`).
  ``sqrt(sum(x**2))`` in float32 loses every element below ~1e-19 (its square is below float32's
  smallest normal number, and TensorFlow flushes denormals to zero on CPU) and overflows to inf
  above ~1.8e19; a float32 cast does not help, because the flush also applies to the cast's
  input. Norms leave the step as float64, so a norm above float32's largest value stays finite.
  A norm is 0 exactly when every element is 0.
- ``grad_norm``: L2 norm of a kernel's gradient, before clipping; ``grad_norm_clipped`` after.
- ``update_ratio``: ||W_after - W_before|| / ||W_before|| for one optimizer step.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from zoo.instruments.layout import Layout

PACKED_DTYPE = tf.float64  # norms may exceed float32's range (see above); counts stay exact
_SMALLEST_NORMAL_BITS = 0x00800000  # float32 bit patterns below this (sign cleared) are denormals
_DENORMAL_UNIT = 2.0 ** -149        # the value of the last bit of a float32 denormal


def pack(layout: Layout, values: dict) -> tf.Tensor:
    """The named tensors as one float64 vector, in the layout's order (see zoo.instruments.layout);
    a value already a float64 vector of its field's size is taken as it is (every op counts on
    an ordinary step)."""
    parts = []
    for f in layout.fields:
        if f.size == 0:
            continue
        v = tf.convert_to_tensor(values[f.name])
        if v.dtype != PACKED_DTYPE:
            v = tf.cast(v, PACKED_DTYPE)
        if v.shape != (f.size,):
            v = tf.reshape(v, [f.size])
        parts.append(v)
    return tf.concat(parts, 0) if parts else tf.zeros([0], PACKED_DTYPE)


def exact_abs(t: tf.Tensor) -> tf.Tensor:
    """|t| (any shape; float16, bfloat16, float32 or float64) as float64, value for value,
    denormals included.

    A float cast would do if TensorFlow did not run CPU kernels with denormals-are-zero: a
    float32 denormal (below 1.18e-38) reads as 0 in every floating-point op, the cast included.
    So a denormal's magnitude is read from its bits (IEEE 754 binary32: exponent field 0, value
    = mantissa * 2**-149, exact in float64), every other value by the cast (exact; inf and NaN
    keep theirs). float16 and bfloat16 are widened to float32 first, which is exact."""
    if t.dtype == tf.float64:
        return tf.abs(t)
    if t.dtype != tf.float32:
        t = tf.cast(t, tf.float32)
    bits = tf.bitwise.bitwise_and(tf.bitcast(t, tf.int32), 0x7FFFFFFF)  # the sign cleared
    denormal = tf.cast(bits, tf.float64) * _DENORMAL_UNIT
    return tf.where(bits < _SMALLEST_NORMAL_BITS, denormal, tf.cast(tf.abs(t), tf.float64))


def dense(t):
    """An embedding's sparse gradient as the dense one (rows with the same index summed)."""
    if isinstance(t, tf.IndexedSlices):
        return tf.math.unsorted_segment_sum(t.values, t.indices, t.dense_shape[0])
    return tf.convert_to_tensor(t)  # a variable is read here


def norm(t, axis=None) -> tf.Tensor:
    """Exact L2 norm of ``t`` over ``axis`` (all axes by default), float64: the sum of squares is
    taken in float64, where no square of a float32 value underflows or overflows. ``t`` may be
    None (a variable the loss does not reach: norm 0) or ``tf.IndexedSlices`` (an embedding's
    sparse gradient, summed per row as the dense gradient would be)."""
    if t is None:
        return tf.constant(0.0, tf.float64)
    return tf.sqrt(tf.reduce_sum(tf.square(exact_abs(dense(t))), axis=axis))


def norms(tensors, minus=None) -> tf.Tensor:
    """Exact L2 norm of each tensor (:func:`norm`), as one float64 vector [len(tensors)]; None
    reads as 0. ``minus``: a list as long, whose tensors are subtracted first (the norm of
    each difference, as ``update_norm`` needs).

    Two ways, one answer. Fast: each tensor cast to float64 and its squares summed there, which
    is exact for every normal float32 value (a float32 square fits a float64 mantissa) and loses
    only the denormals, which DAZ reads as 0. A denormal's square is below 2**-252 ~ 1.4e-76,
    so when every tensor's sum of squares is at least :data:`FAST_PATH_FLOOR` the denormals
    change none of them by more than n * 1.4e-26 relative (n elements): nothing float64 can
    show. Otherwise (a norm below ~1e-25, an all-zero tensor) every tensor is read again bit by
    bit (:func:`exact_abs`), in one concatenated pass. The check is one ``tf.cond``, so a step
    pays the bit-level read only when something is that small.

    The fast path reduces each tensor on its own: a layer's norm can run while the backward
    pass is still on the layers below it. (Stacking same-shape tensors into one reduction has
    fewer ops but waits for all of them: a 20-layer MLP's step was 0.5 ms slower.)"""
    if minus is not None:
        tensors = [None if t is None else dense(t) - dense(m) for t, m in zip(tensors, minus)]
    present = [(i, dense(t)) for i, t in enumerate(tensors) if t is not None]
    if not present:
        return tf.zeros([len(tensors)], tf.float64)
    fast = tf.stack([tf.reduce_sum(tf.square(_as_float64(t))) for _, t in present])

    def bit_exact():
        values, flat = concatenated([t for _, t in present])
        segments = segment_ids(list(range(len(present))), flat)
        return tf.math.unsorted_segment_sum(tf.square(exact_abs(values)), segments, len(present))

    # NaN compares False: a NaN gradient stays on the fast path, where it is NaN as well
    sumsq = tf.cond(tf.reduce_any(fast < FAST_PATH_FLOOR), bit_exact, lambda: fast)
    if len(present) < len(tensors):
        sumsq = tf.scatter_nd([[i] for i, _ in present], sumsq, [len(tensors)])
    return tf.sqrt(sumsq)


FAST_PATH_FLOOR = 1e-50  # sum of squares below which a tensor's norm is read bit by bit


def gradient_sums(tensors) -> tf.Tensor:
    """The sum of squares of each gradient TensorFlow computed, float64 [len(tensors)] (None
    reads 0): one float64 cast and one ``L2Loss`` a tensor, no ``tf.cond``: what an ordinary step
    of zoo.GradientMonitor pays.

    Exact, as :func:`norms` is, for tensors TensorFlow's kernels produced: they run with
    flush-to-zero (tests/test_exact_norms.py: a product, a matmul, a cast of a denormal all read
    0), so a computed gradient holds no float32 denormal, and a float64 cast is exact for every
    other float32 value. A value that enters from outside (a weight assigned from numpy) can
    be denormal: weights are read by :func:`norms`. A sum is not finite exactly when an element
    is not (float64 holds every float32 square and n of them)."""
    present = [(i, t) for i, t in enumerate(tensors) if t is not None]
    if not present:
        return tf.zeros([len(tensors)], tf.float64)
    halves = tf.stack([tf.nn.l2_loss(_as_float64(dense(t))) for _, t in present])
    if len(present) < len(tensors):
        halves = tf.scatter_nd([[i] for i, _ in present], halves, [len(tensors)])
    return 2.0 * halves


def _as_float64(t: tf.Tensor) -> tf.Tensor:
    """float64 by way of float32 (widening float16 and bfloat16 to float32 is exact, denormals
    included; the float32 to float64 cast drops float32 denormals, see :func:`norms`)."""
    if t.dtype in (tf.float16, tf.bfloat16):
        t = tf.cast(t, tf.float32)
    return tf.cast(t, tf.float64)


def all_finite(tensors) -> tf.Tensor:
    """True when no element of ``tensors`` (None and IndexedSlices allowed) is inf or NaN
    (cheaper than a norm each, and no arithmetic that could overflow)."""
    present = [tf.convert_to_tensor(t.values if isinstance(t, tf.IndexedSlices) else t)
               for t in tensors if t is not None]
    if not present:
        return tf.constant(True)
    return tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(t)) for t in present]))


def segment_ids(owners: list[int], flat: list) -> tf.Tensor:
    """Which tensor each element of the concatenation belongs to: one constant when every size
    is known while tracing (variables and their gradients), else built in the graph."""
    sizes = [f.shape[0] for f in flat]
    if all(size is not None for size in sizes):
        return tf.constant(np.repeat(np.asarray(owners, np.int32), sizes))
    return tf.concat([tf.fill(tf.shape(f), i) for i, f in zip(owners, flat)], 0)


def concatenated(tensors) -> tuple[tf.Tensor, list]:
    """(every element of ``tensors`` in one vector, each tensor flattened): float64 if they all
    are, else float32 (exact for float16 and bfloat16)."""
    flat = [tf.reshape(dense(t), [-1]) for t in tensors]
    dtype = tf.float64 if all(f.dtype == tf.float64 for f in flat) else tf.float32
    return tf.concat([f if f.dtype == dtype else tf.cast(f, dtype) for f in flat], 0), flat
