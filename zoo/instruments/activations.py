"""Activation statistics: each activation layer's output on the batch, its mean, std, saturated
fraction and dead fraction.

Saturated (sigmoid and tanh): outputs whose local derivative is under 1% of its peak: sigmoid
outside [0.0025, 0.9975] (y(1-y) < 0.0025 = 1% of 0.25), |tanh| > 0.995 (1 - y^2 < ~0.01).
Dead (ReLU only): units, i.e. last-axis channels, whose output is <= 0 on every example and
position of the batch: they pass no gradient. A fraction that does not apply is NaN. Which
apply comes from the activation registry's tags (zoo.models.blocks).
"""
from __future__ import annotations

import numpy as np

from zoo.instruments.base import Array, Instrument
from zoo.models import blocks

ACT_STATS = ("mean", "std", "saturated_fraction", "dead_fraction")
SIGMOID_SATURATED = 0.0025  # y(1-y) < 0.0025 = 1% of sigmoid's peak slope 0.25
TANH_SATURATED = 0.995      # 1 - y^2 < ~0.01


def activation_stats(a, saturation: str | None, dies: bool):
    """[mean, std, saturated_fraction, dead_fraction] of one activation layer's output."""
    return activation_stats_many([a], [saturation], [dies])[0]


def activation_stats_many(outputs: list, saturations: list, dies: list):
    """:func:`activation_stats` of several layers' outputs, [len(outputs), 4]. Outputs of one
    shape (the batch axis may be open) and kind are stacked and reduced together: a deep net's
    activations are a few ops to trace, not a dozen each."""
    import tensorflow as tf

    groups: dict = {}
    for i, (a, sat, dead) in enumerate(zip(outputs, saturations, dies)):
        # an open batch axis is shared by every layer of a step; any other unknown size is not
        known = a.shape.rank is not None and a.shape[1:].is_fully_defined()
        key = (tuple(a.shape), a.dtype, sat, bool(dead)) if known else i
        groups.setdefault(key, []).append(i)
    rows, order = [], []
    for members in groups.values():
        i = members[0]
        stacked = tf.cast(tf.stack([outputs[j] for j in members]), tf.float32)  # [k, ...]
        rows.append(_stats_of_stacked(stacked, saturations[i], bool(dies[i])))
        order += members
    out = tf.concat(rows, 0)
    return out if order == sorted(order) else tf.gather(out, np.argsort(order))


def _stats_of_stacked(a, saturation: str | None, dies: bool):
    """[k, 4] statistics of k same-shape outputs stacked on the first axis."""
    import tensorflow as tf

    k = tf.shape(a)[0]
    flat = tf.reshape(a, [k, -1])
    nan = tf.fill([k], tf.constant(np.nan, tf.float32))
    if saturation == "sigmoid":
        saturated = tf.reduce_mean(tf.cast((flat < SIGMOID_SATURATED) | (flat > 1 - SIGMOID_SATURATED), tf.float32), 1)
    elif saturation == "tanh":
        saturated = tf.reduce_mean(tf.cast(tf.abs(flat) > TANH_SATURATED, tf.float32), 1)
    else:
        saturated = nan
    if dies:  # units are the last axis' channels: dead when <= 0 on every example and position
        units = tf.reshape(a, [k, -1, tf.shape(a)[-1]])
        dead = tf.reduce_mean(tf.cast(tf.reduce_all(units <= 0.0, axis=1), tf.float32), 1)
    else:
        dead = nan
    return tf.stack([tf.reduce_mean(flat, 1), tf.math.reduce_std(flat, 1), saturated, dead], axis=1)


class ActivationStats(Instrument):
    """Mean, std, saturated and dead fractions of each activation layer's output."""

    key = "act_stats"
    axes = ("A", "K")
    dims = {"A": "activation layers", "K": f"activation statistics ({', '.join(ACT_STATS)})"}
    sizes = {"A": "act_layers", "K": len(ACT_STATS)}
    doc = "mean, std, saturated and dead fraction of each activation's output (NaN where a fraction does not apply)"
    labels = ("act_layers", "activation layer names")
    mlflow = ("saturated_fraction/*", "dead_fraction/*")
    kinds: tuple[str, ...] = ()

    def __init__(self, layers: list):
        self.layers = layers
        self.kinds = tuple(kind for _, kind in layers)
        super().__init__(tuple(layer.name for layer, _ in layers), (len(layers), len(ACT_STATS)))

    @classmethod
    def applies(cls, view):
        return cls(view.activations) if view.activations else None

    def taps(self):
        return {f"act:{layer.name}": layer.output for layer, _ in self.layers}

    def compute(self, probe):
        tags = [blocks.ACTIVATIONS.get(kind).tags for _, kind in self.layers]
        return {"act_stats": activation_stats_many(
            [probe.taps[f"act:{layer.name}"] for layer, _ in self.layers],
            [t.get("saturation") for t in tags], [bool(t.get("dies")) for t in tags])}

    @classmethod
    def context_arrays(cls):
        return (Array("act_kinds", ("A",), "text", "their activation (registry name)"),)

    def context(self):
        return {"act_kinds": np.array(self.kinds, dtype=str)}

    def raw(self, values):
        return {**super().raw(values), "act_stats": values.astype(np.float32)}

    def epoch_metrics(self, latest):
        """saturated_fraction/<act>, dead_fraction/<act> where they apply (means and stds stay in
        the raw file)."""
        out = {}
        for layer, values in zip(self.names, latest):
            for name, value in zip(ACT_STATS, values):
                if name in ("saturated_fraction", "dead_fraction") and not np.isnan(value):
                    out[f"{name}/{layer}"] = float(value)
        return out
