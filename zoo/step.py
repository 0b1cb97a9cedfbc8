"""The instrumented train step: forward, gradients, clipping, in-graph statistics, update.

Short enough to read in one screen. Every step returns one packed float32 vector
(``StepLayout`` names its slots), so Python converts a single small tensor per step; every
``histogram_every`` steps a second compiled variant also returns gradient histograms and
activation statistics. Per-element gradients never leave the graph.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from zoo.models import blocks
from zoo.monitor import graph_stats

LOSSES = {
    "classification": lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    "regression": lambda: keras.losses.MeanSquaredError(),
}


def kernel_name(variable) -> str | None:
    """Monitored layer name of a weight matrix (``block03_dense/kernel`` -> ``block03_dense``);
    None for biases, norm scales and other non-kernel variables."""
    path = variable.path
    if path.endswith("/kernel"):
        return path[: -len("/kernel")]
    if path.endswith("kernel"):  # recurrent_kernel, depthwise_kernel: keep the qualifier
        return path.replace("/", ".")
    return None


def activation_kind(layer) -> str | None:
    """'sigmoid' | 'tanh' | 'rectifier' | None, from the activation registry's tags."""
    if isinstance(layer, keras.layers.Activation):
        name = getattr(layer.activation, "__name__", "")
    else:
        name = {"LeakyReLU": "leaky_relu", "PReLU": "prelu", "ReLU": "relu", "ELU": "elu"}.get(
            type(layer).__name__, "")
    if name not in blocks.ACTIVATIONS:
        return None
    tags = blocks.ACTIVATIONS.get(name).tags
    return tags.get("saturation") or ("rectifier" if tags.get("rectifier") else None)


@dataclass(frozen=True)
class StepLayout:
    """Slots of the packed per-step vector: loss, metric, finite, then four per-kernel blocks."""

    kernels: tuple[str, ...]
    activations: tuple[str, ...]

    HEAD = ("loss", "metric", "finite")
    BLOCKS = ("grad_norm", "grad_norm_clipped", "weight_norm", "update_norm")

    def unpack(self, packed: np.ndarray) -> dict[str, np.ndarray]:
        """Split [steps, width] (or one [width] vector) into named arrays."""
        packed = np.atleast_2d(packed)
        n, out = len(self.kernels), {}
        for i, name in enumerate(self.HEAD):
            out[name] = packed[:, i]
        for j, name in enumerate(self.BLOCKS):
            start = len(self.HEAD) + j * n
            out[name] = packed[:, start:start + n]
        return out


def batch_spec(x, y) -> tuple[tf.TensorSpec, tf.TensorSpec]:
    """Signature of (inputs, targets) batches with an open batch dimension."""
    return (tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype)),
            tf.TensorSpec((None, *y.shape[1:]), tf.as_dtype(y.dtype)))


class InstrumentedStep:
    def __init__(self, model: keras.Model, task: str, optimizer, clipping: tuple[str, float] | None,
                 input_spec: tuple[tf.TensorSpec, tf.TensorSpec]):
        act_layers = [l for l in model.layers if l.name.endswith("_act")]
        # A twin that shares every layer but also returns the activation outputs.
        self.probe = keras.Model(model.inputs, [model.outputs[0]] + [l.output for l in act_layers])
        self.model, self.optimizer, self.clipping = model, optimizer, clipping
        self.loss_fn = LOSSES[task]()
        self.task = task
        self.variables = list(model.trainable_variables)
        self.kernel_index = [i for i, v in enumerate(self.variables) if kernel_name(v)]
        self.layout = StepLayout(tuple(kernel_name(self.variables[i]) for i in self.kernel_index),
                                 tuple(l.name for l in act_layers))
        self.activation_kinds = tuple(activation_kind(l) for l in act_layers)
        optimizer.build(self.variables)
        # One trace each: the batch dimension is left open so the last, smaller batch reuses it.
        self.train = tf.function(lambda x, y: self._step(x, y, False), input_signature=input_spec)
        self.train_with_histograms = tf.function(lambda x, y: self._step(x, y, True),
                                                 input_signature=input_spec)
        self.evaluate = tf.function(self._evaluate, input_signature=input_spec)

    def _metric(self, y, out):
        if self.task == "classification":
            return tf.reduce_mean(tf.cast(tf.equal(tf.argmax(out, -1, output_type=y.dtype), y), tf.float32))
        return tf.constant(np.nan, tf.float32)

    def _clip(self, grads):
        if self.clipping is None:
            return grads
        kind, c = self.clipping
        if kind == "clipnorm":
            return [tf.clip_by_norm(g, c) for g in grads]
        if kind == "global_clipnorm":
            return tf.clip_by_global_norm(grads, c)[0]
        return [tf.clip_by_value(g, -c, c) for g in grads]

    def _step(self, x, y, with_histograms: bool):
        with tf.GradientTape() as tape:
            outputs = self.probe(x, training=True)
            out, acts = outputs[0], outputs[1:]
            loss = self.loss_fn(y, out) + tf.add_n([0.0] + [tf.cast(l, tf.float32) for l in self.model.losses])
        grads = tape.gradient(loss, self.variables)
        grad_norms = graph_stats.norms(grads)  # every variable: finiteness covers biases too
        clipped = self._clip(grads)
        kernels = [self.variables[i] for i in self.kernel_index]
        before = [tf.identity(k) for k in kernels]
        self.optimizer.apply(clipped, self.variables)
        finite = tf.math.is_finite(loss) & tf.reduce_all(tf.math.is_finite(grad_norms))
        pre = tf.gather(grad_norms, self.kernel_index)
        post = pre if self.clipping is None else graph_stats.norms([clipped[i] for i in self.kernel_index])
        packed = tf.concat([
            tf.stack([tf.cast(loss, tf.float32), self._metric(y, out), tf.cast(finite, tf.float32)]),
            pre, post, graph_stats.norms(before),
            graph_stats.norms([k - b for k, b in zip(kernels, before)]),
        ], axis=0)
        if not with_histograms:
            return packed
        hist = tf.stack([graph_stats.log_histogram(grads[i]) for i in self.kernel_index])
        act = tf.stack([graph_stats.activation_stats(a, k) for a, k in zip(acts, self.activation_kinds)]) \
            if acts else tf.zeros([0, len(graph_stats.ACT_STATS)])
        return packed, hist, act

    def _evaluate(self, x, y):
        out = self.model(x, training=False)
        return tf.cast(self.loss_fn(y, out), tf.float32), self._metric(y, out)
