"""Evaluation in inference mode that is right after any number of steps.

Batch normalization evaluates with moving averages of the batch statistics, which Keras updates
with momentum 0.99: after the 70-90 steps of a short study nearly half of each average is still
its initial value (mean 0, variance 1), and a net that trains to 0.94 accuracy evaluates at
chance. Ioffe & Szegedy (2015, Algorithm 2) define the inference network differently: each
batch-norm layer uses the *population* statistics of its input over the training set,
E[x] = E_B[mu_B] and Var[x] = m/(m-1) E_B[sigma_B^2] over training mini-batches B of size m,
computed with the trained weights. :class:`PopulationStatistics` does exactly that before every
evaluation; the moving averages are overwritten, which changes nothing in training (a training
step normalizes by its own batch).
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from zoo.instruments.discover import is_functional


def batch_norm_layers(model: keras.Model) -> list:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


class PopulationStatistics:
    """Recomputes every batch-norm layer's moving mean and variance of ``model`` (the main head's
    path) from the training split, batch by batch as in training."""

    def __init__(self, model: keras.Model, batch_size: int):
        # a subclassed model's layers are not on a graph whose inner tensors can be read: its
        # batch-norm layers keep Keras' moving averages
        self.layers = batch_norm_layers(model) if is_functional(model) else []
        self.batch_size = batch_size
        if self.layers:
            inputs = keras.Model(model.inputs, [l.input for l in self.layers], name="bn_inputs")
            self._moments = tf.function(lambda x: [self._batch_moments(l, t) for l, t in
                                                   zip(self.layers, _as_list(inputs(x, training=True)))],
                                        autograph=False)

    @staticmethod
    def _batch_moments(layer, t):
        axes = [a for a in range(len(t.shape)) if a != layer.axis % len(t.shape)]
        mean, var = tf.nn.moments(tf.cast(t, tf.float32), axes)
        count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(t), axes)), tf.float32)
        return mean, var, count

    def refresh(self, x_train: np.ndarray) -> None:
        if not self.layers:
            return
        n = len(x_train)
        size = min(self.batch_size, n)
        sums = [None] * len(self.layers)
        batches = 0
        for start in range(0, n - size + 1, size):  # full batches only: every one has the same m
            moments = self._moments(x_train[start:start + size])
            for i, (mean, var, m) in enumerate(moments):
                unbiased = var * m / tf.maximum(m - 1.0, 1.0)
                sums[i] = (mean, unbiased) if sums[i] is None else (sums[i][0] + mean, sums[i][1] + unbiased)
            batches += 1
        for layer, (mean, var) in zip(self.layers, sums):
            layer.moving_mean.assign(tf.cast(mean / batches, layer.moving_mean.dtype))
            layer.moving_variance.assign(tf.cast(var / batches, layer.moving_variance.dtype))


def _as_list(outputs):
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def evaluate(step, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> tuple[float, float]:
    """The main head's data loss and metric over a whole split, in inference mode, weighted by
    batch size (the last batch may be smaller)."""
    total, loss_sum, metric_sum = 0, 0.0, 0.0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        loss, metric = step.evaluate(xb, yb)
        total += len(xb)
        loss_sum += float(loss) * len(xb)
        metric_sum += float(metric) * len(xb)
    return loss_sum / total, metric_sum / total
