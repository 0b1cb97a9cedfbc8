"""The train step's extra instruments: what it measures on histogram steps besides the gradient
norms it measures every step.

Each instrument declares the tensors of the forward pass it reads (``taps``), the tensors whose
gradient it needs (``wrt``), the fields it returns (``fields``, see zoo.monitor.layout) and how
to compute them inside the compiled step (``compute``). The step wires them in without knowing
what they are; adding an instrument is one class here and one line in :func:`instruments_for`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import keras
import tensorflow as tf

from zoo.models import blocks
from zoo.monitor import graph_stats
from zoo.monitor.layout import Field
from zoo.monitor.stats import ACT_STATS, HIST_BINS


@dataclass
class Probe:
    """What an instrument gets on a histogram step: the batch's inputs, the tapped tensors of
    the forward pass by name, the gradient of the data objective w.r.t. its ``wrt`` tensors,
    and the per-kernel gradients of the data objective."""
    x: tf.Tensor
    taps: dict
    wrt_grads: list
    kernel_grads: list = field(default_factory=list)
    y: tf.Tensor | None = None  # the batch's targets (GradientMonitor's probe steps in fit)


class Instrument:
    fields: tuple[Field, ...] = ()

    def taps(self) -> dict:
        return {}

    def wrt(self, x, taps) -> list:
        return []

    def compute(self, probe: Probe) -> dict:
        raise NotImplementedError


class GradientHistograms(Instrument):
    """log10|g| of each monitored kernel's data-loss gradient, HIST_BINS bins plus exact zeros."""

    def __init__(self, kernels: tuple[str, ...]):
        self.fields = (Field("hist", (len(kernels), HIST_BINS + 1), kernels),)

    def compute(self, probe):
        return {"hist": graph_stats.log_histograms(probe.kernel_grads)}


class ActivationStats(Instrument):
    """Mean, std, saturated and dead fractions of each activation layer's output; which
    fractions apply comes from the activation registry's tags (zoo.models.blocks)."""

    def __init__(self, layers: list[tuple[keras.Layer, str]]):
        self.layers = layers
        self.kinds = tuple(kind for _, kind in layers)
        names = tuple(layer.name for layer, _ in layers)
        self.fields = (Field("act_stats", (len(layers), len(ACT_STATS)), names),)

    def taps(self):
        return {f"act:{layer.name}": layer.output for layer, _ in self.layers}

    def compute(self, probe):
        tags = [blocks.ACTIVATIONS.get(kind).tags for _, kind in self.layers]
        return {"act_stats": graph_stats.activation_stats_many(
            [probe.taps[f"act:{layer.name}"] for layer, _ in self.layers],
            [t.get("saturation") for t in tags], [bool(t.get("dies")) for t in tags])}


class GradientThroughTime(Instrument):
    """The gradient reaching each position t of a sequence, ||dL/dh_t|| (norm over batch and
    features): for a recurrent layer, each step of its *input* (dL/dx_t for the first layer,
    the total dL/dh_t of the layer below for the others), not its output sequence: the
    recurrence runs inside the layer, so steps the head does not read get no gradient through
    the output tensor. For a Transformer block, each position of the residual stream entering
    it. ``sequences``: (label, symbolic (batch, T, features) tensor), all of the same T."""

    def __init__(self, sequences: list[tuple[str, object]], model_input):
        self.sequences, self.model_input = sequences, model_input
        steps = int(sequences[0][1].shape[1])
        self.fields = (Field("time_grad", (len(sequences), steps), tuple(label for label, _ in sequences)),)

    def taps(self):
        return {f"seq_in:{label}": t for label, t in self.sequences if t is not self.model_input}

    def wrt(self, x, taps):
        return [x if t is self.model_input else taps[f"seq_in:{label}"] for label, t in self.sequences]

    def compute(self, probe):
        return {"time_grad": tf.stack([graph_stats.norm(g, axis=[0, 2]) for g in probe.wrt_grads])}


TARGET_SUMMARY = ("low", "high", "integral", "finite", "zeros", "row_low", "row_high")


class TargetRange(Instrument):
    """What the loss read on a probe step's batch, for zoo.monitor.posedness (is the loss well
    posed on its targets?): the least and greatest target, whether all are whole numbers and
    finite, how many are 0, and the least and greatest sum of a target row (NaN for one target
    per example)."""

    fields = (Field("targets", (len(TARGET_SUMMARY),), TARGET_SUMMARY),)

    def compute(self, probe):
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


class ForgetGates(Instrument):
    """Each LSTM layer's mean forget gate, recomputed from its input and output sequences."""

    def __init__(self, layers: list, model_input):
        self.layers, self.model_input = layers, model_input
        self.fields = (Field("forget_gate", (len(layers),), tuple(l.name for l in layers)),)

    def taps(self):
        taps = {f"gate_out:{l.name}": l.output for l in self.layers}
        taps.update({f"gate_in:{l.name}": l.input for l in self.layers
                     if l.input is not self.model_input})
        return taps

    def compute(self, probe):
        return {"forget_gate": tf.stack([
            forget_gate_mean(l, probe.x if l.input is self.model_input else probe.taps[f"gate_in:{l.name}"],
                             probe.taps[f"gate_out:{l.name}"]) for l in self.layers])}


def _time_steps(tensor) -> int | None:
    shape = tensor.shape
    return int(shape[1]) if len(shape) == 3 and shape[1] is not None else None


def sequences_of(main: keras.Model, declared: tuple[tuple[str, str], ...] = ()) -> list[tuple[str, object]]:
    """(label, symbolic tensor) of the sequences whose gradient is measured per position: those
    the builder declared (zoo.models.roles ``sequences``: label, layer whose output it is) that
    are on ``main``'s path; without a declaration, the input of every recurrent (or
    ``Bidirectional``) layer, labelled by that layer."""
    if declared:
        layers = {l.name: l for l in main.layers}
        return [(label, main.inputs[0] if source == "inputs" else layers[source].output)
                for label, source in declared if source == "inputs" or source in layers]
    return [(l.name, l.input) for l in main.layers if isinstance(l, (keras.layers.RNN, keras.layers.Bidirectional))]


def instruments_for(main: keras.Model, activations: list[tuple[keras.Layer, str]],
                    kernels: tuple[str, ...], skipped: dict[str, str] | None = None,
                    sequences: tuple[tuple[str, str], ...] = ()) -> list[Instrument]:
    """The instruments that apply to a model's main path (its activation layers as the builder
    named them, the sequences it declared (or its recurrent and ``Bidirectional`` layers' inputs,
    :func:`sequences_of`), its LSTM layers, its monitored kernels). What one cannot measure on a
    layer is left out and named in ``skipped`` (layer -> why)."""
    skipped = {} if skipped is None else skipped
    found: list[Instrument] = [GradientHistograms(kernels)]
    if activations:
        found.append(ActivationStats(activations))
    candidates = sequences_of(main, sequences)
    steps = [_time_steps(t) for _, t in candidates]
    first = next(filter(None, steps), None)
    timed = [(label, t) for (label, t), n in zip(candidates, steps) if n is not None and n == first]
    for (label, _), n in zip(candidates, steps):
        if n is None or n != first:
            skipped[f"gradient through time: {label}"] = (
                "its input has no fixed number of time steps" if n is None
                else "its input has another number of time steps than the first sequence's")
    if timed:
        found.append(GradientThroughTime(timed, main.inputs[0]))
    timed_labels = {label for label, _ in timed}
    recurrent = [l for l in main.layers if l.name in timed_labels
                 and isinstance(l, (keras.layers.RNN, keras.layers.Bidirectional))]
    lstms = [l for l in recurrent if isinstance(l, keras.layers.LSTM)]
    for layer in lstms:
        if not layer.return_sequences:
            skipped[f"forget gate: {layer.name}"] = "return_sequences=False: its hidden states are not outputs"
    for layer in recurrent:
        if isinstance(layer, keras.layers.Bidirectional) and isinstance(layer.forward_layer, keras.layers.LSTM):
            skipped[f"forget gate: {layer.name}"] = "a Bidirectional LSTM's gates are not read"
    lstms = [l for l in lstms if l.return_sequences]
    if lstms:
        found.append(ForgetGates(lstms, main.inputs[0]))
    return found
