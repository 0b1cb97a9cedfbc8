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
    """Monitored layer name of a weight matrix: ``block03_dense/kernel`` -> ``block03_dense``,
    ``rnn1/lstm_cell/recurrent_kernel`` -> ``rnn1/recurrent``; None for biases, norm scales and
    other non-kernel variables."""
    *where, leaf = variable.path.split("/")
    if not leaf.endswith("kernel"):
        return None
    layer = "/".join(p for p in where if not p.endswith("_cell"))
    return layer if leaf == "kernel" else f"{layer}/{leaf.removesuffix('_kernel')}"


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


def forget_gate_mean(layer, x, h):
    """Mean forget-gate activation of a Keras LSTM layer over batch, time and units, from its
    input sequence ``x`` and output sequence ``h``: f_t = sigmoid(x_t W_f + h_(t-1) U_f + b_f),
    Keras' gate order being [i, f, c, o] and h_(-1) = 0. A gate near 1 keeps the cell state
    (and the gradient through it); near 0 it forgets."""
    cell, u = layer.cell, layer.cell.units
    h_prev = tf.concat([tf.zeros_like(h[:, :1]), h[:, :-1]], axis=1)
    pre = (tf.einsum("btd,du->btu", x, cell.kernel[:, u:2 * u])
           + tf.einsum("btd,du->btu", h_prev, cell.recurrent_kernel[:, u:2 * u]))
    if cell.use_bias:
        pre = pre + cell.bias[u:2 * u]
    return tf.reduce_mean(tf.sigmoid(pre))


@dataclass(frozen=True)
class StepLayout:
    """Slots of the packed per-step vector: loss, metric, finite, one loss per auxiliary head,
    then four per-kernel blocks."""

    kernels: tuple[str, ...]
    activations: tuple[str, ...]
    aux_heads: tuple[str, ...] = ()

    HEAD = ("loss", "metric", "finite")
    BLOCKS = ("grad_norm", "grad_norm_clipped", "weight_norm", "update_norm")

    @property
    def width(self) -> int:
        return len(self.HEAD) + len(self.aux_heads) + len(self.BLOCKS) * len(self.kernels)

    def unpack(self, packed: np.ndarray) -> dict[str, np.ndarray]:
        """Split [steps, width] (or one [width] vector) into named arrays."""
        packed = np.atleast_2d(packed)
        n, out = len(self.kernels), {}
        for i, name in enumerate(self.HEAD):
            out[name] = packed[:, i]
        first = len(self.HEAD)
        out["aux_loss"] = packed[:, first:first + len(self.aux_heads)]
        first += len(self.aux_heads)
        for j, name in enumerate(self.BLOCKS):
            out[name] = packed[:, first + j * n:first + (j + 1) * n]
        return out


def batch_spec(x, y) -> tuple[tf.TensorSpec, tf.TensorSpec]:
    """Signature of (inputs, targets) batches with an open batch dimension."""
    return (tf.TensorSpec((None, *x.shape[1:]), tf.as_dtype(x.dtype)),
            tf.TensorSpec((None, *y.shape[1:]), tf.as_dtype(y.dtype)))


class InstrumentedStep:
    """Trains ``model`` one batch at a time. A model with several outputs has auxiliary heads
    (outputs 1..): each adds its loss times ``model.aux_weight`` to the objective and is logged
    apart; statistics, evaluation and inference follow the main head's path (output 0)."""

    def __init__(self, model: keras.Model, task: str, optimizer, clipping: tuple[str, float] | None,
                 input_spec: tuple[tf.TensorSpec, tf.TensorSpec]):
        self.main = blocks.main_head(model)
        main_layers = self.main.layers
        act_layers = [l for l in main_layers if l.name.endswith("_act")]
        # Gradient through time: the gradient reaching each recurrent layer's *input* at step t
        # (dL/dx_t for the first layer, the total dL/dh_t of the layer below for the others).
        # Its output sequence would not do: the recurrence runs inside the layer, so steps the
        # head does not read get no gradient through the output tensor.
        self.seq_layers = tuple(l for l in main_layers if isinstance(l, keras.layers.RNN))
        inner = [l.input for l in self.seq_layers if l.input is not model.inputs[0]]
        self.seq_from_model_input = [l.input is model.inputs[0] for l in self.seq_layers]
        # LSTM forget gates, recomputed from each LSTM layer's input and output sequences
        self.gate_layers = tuple(i for i, l in enumerate(self.seq_layers) if isinstance(l, keras.layers.LSTM))
        gate_outputs = [self.seq_layers[i].output for i in self.gate_layers]
        # A twin that shares every layer but also returns activations and sequence inputs.
        self.probe = keras.Model(model.inputs, list(model.outputs) + [l.output for l in act_layers]
                                 + inner + gate_outputs)
        self.n_heads, self.n_acts, self.n_inner = len(model.outputs), len(act_layers), len(inner)
        self.aux_weight = float(getattr(model, "aux_weight", 0.0))
        self.model, self.optimizer, self.clipping = model, optimizer, clipping
        self.loss_fn = LOSSES[task]()
        self.task = task
        self.variables = list(model.trainable_variables)
        on_main_path = {id(v) for v in self.main.trainable_variables}
        self.kernel_index = [i for i, v in enumerate(self.variables)
                             if kernel_name(v) and id(v) in on_main_path]
        heads = [t._keras_history.operation.name for t in model.outputs]
        self.layout = StepLayout(tuple(kernel_name(self.variables[i]) for i in self.kernel_index),
                                 tuple(l.name for l in act_layers), tuple(heads[1:]))
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
            if with_histograms and any(self.seq_from_model_input):
                tape.watch(x)
            outputs = self.probe(x, training=True)
            outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
            heads, rest = outputs[:self.n_heads], outputs[self.n_heads:]
            acts, rest = rest[:self.n_acts], rest[self.n_acts:]
            inner, gate_outputs = list(rest[:self.n_inner]), rest[self.n_inner:]
            out = heads[0]
            seqs = [x if first else inner.pop(0) for first in self.seq_from_model_input] \
                if with_histograms else []
            loss = self.loss_fn(y, out) + tf.add_n([0.0] + [tf.cast(l, tf.float32) for l in self.model.losses])
            aux_losses = [tf.cast(self.loss_fn(y, h), tf.float32) for h in heads[1:]]
            objective = loss + self.aux_weight * tf.add_n([0.0] + aux_losses)
        grads = tape.gradient(objective, self.variables + list(seqs))
        grads, seq_grads = grads[:len(self.variables)], grads[len(self.variables):]
        # a variable the objective does not reach has no gradient: it gets a zero update
        grads = [tf.zeros_like(v) if g is None else g for g, v in zip(grads, self.variables)]
        grad_norms = graph_stats.norms(grads)  # every variable: finiteness covers biases too
        clipped = self._clip(grads)
        kernels = [self.variables[i] for i in self.kernel_index]
        before = [tf.identity(k) for k in kernels]
        self.optimizer.apply(clipped, self.variables)
        finite = tf.math.is_finite(objective) & tf.reduce_all(tf.math.is_finite(grad_norms))
        pre = tf.gather(grad_norms, self.kernel_index)
        post = pre if self.clipping is None else graph_stats.norms([clipped[i] for i in self.kernel_index])
        packed = tf.concat([
            tf.stack([tf.cast(loss, tf.float32), self._metric(y, out), tf.cast(finite, tf.float32),
                      *aux_losses]),
            pre, post, graph_stats.norms(before),
            graph_stats.norms([k - b for k, b in zip(kernels, before)]),
        ], axis=0)
        if not with_histograms:
            return packed
        hist = tf.stack([graph_stats.log_histogram(grads[i]) for i in self.kernel_index])
        act = tf.stack([graph_stats.activation_stats(a, k) for a, k in zip(acts, self.activation_kinds)]) \
            if acts else tf.zeros([0, len(graph_stats.ACT_STATS)])
        # gradient reaching step t of each recurrent layer's input, over batch and features: [layers, T]
        time = tf.stack([tf.sqrt(tf.reduce_sum(tf.square(g), axis=[0, 2])) for g in seq_grads]) \
            if seq_grads else tf.zeros([0, 0])
        gates = tf.stack([forget_gate_mean(self.seq_layers[i], seqs[i], h)
                          for i, h in zip(self.gate_layers, gate_outputs)]) \
            if self.gate_layers else tf.zeros([0])
        return packed, hist, act, time, gates

    def _evaluate(self, x, y):
        out = self.main(x, training=False)
        return tf.cast(self.loss_fn(y, out), tf.float32), self._metric(y, out)
