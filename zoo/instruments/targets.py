"""What the loss read: the range of the targets on a probe step's batch, for the ill-posed rule
(zoo.records.posedness: is the loss well posed on its targets?). GradientMonitor adds it in
``fit`` for Keras' own step, one output and a loss the rule knows; it is not a gradient, and
applies to no model by itself."""
from __future__ import annotations

from zoo.instruments.base import Instrument

TARGET_SUMMARY = ("low", "high", "integral", "finite", "zeros", "row_low", "row_high")


class TargetRange(Instrument):
    """The least and greatest target, whether all are whole numbers and finite, how many are
    0, and the least and greatest sum of a target row (NaN for one target per example)."""

    key = "targets"
    axes = ("Y",)
    dims = {"Y": f"target summary ({', '.join(TARGET_SUMMARY)})"}
    sizes = {"Y": len(TARGET_SUMMARY)}
    doc = "what the loss read on each probe step's batch (GradientMonitor in fit: the ill-posed rule)"

    def __init__(self):
        super().__init__(TARGET_SUMMARY, (len(TARGET_SUMMARY),))

    def compute(self, probe):
        import tensorflow as tf

        y = tf.cast(probe.y, tf.float64)
        finite = tf.reduce_all(tf.math.is_finite(y))
        seen = tf.boolean_mask(y, tf.math.is_finite(y))
        rows = y.shape.rank is not None and y.shape.rank >= 2 and y.shape[-1] not in (None, 1)
        row_sums = tf.reduce_sum(y, axis=-1) if rows else tf.fill([1], tf.constant(float("nan"), tf.float64))
        return {"targets": tf.stack([
            tf.reduce_min(seen), tf.reduce_max(seen),
            tf.cast(tf.reduce_all(tf.equal(seen, tf.round(seen))), tf.float64), tf.cast(finite, tf.float64),
            tf.cast(tf.math.count_nonzero(tf.equal(seen, 0.0)), tf.float64),
            tf.reduce_min(row_sums), tf.reduce_max(row_sums)])}
