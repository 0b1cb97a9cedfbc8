"""Statistics computed inside the compiled train step, so Python only sees small summaries.

Conventions (also in the README):
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


def pack(layout: Layout, values: dict) -> tf.Tensor:
    """The named tensors as one float32 vector, in the layout's order (see zoo.monitor.layout)."""
    return tf.concat([tf.reshape(tf.cast(values[f.name], tf.float32), [f.size]) for f in layout.fields], 0)


def norms(tensors) -> tf.Tensor:
    """L2 norm of each tensor, as one vector."""
    return tf.sqrt(tf.stack([tf.reduce_sum(tf.square(t)) for t in tensors]))


def log_histogram(g: tf.Tensor) -> tf.Tensor:
    """Counts of log10|g| in HIST_BINS fixed bins, then the count of exact zeros (HIST_BINS + 1)."""
    lo, hi = HIST_RANGE
    flat = tf.reshape(tf.abs(g), [-1])
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
