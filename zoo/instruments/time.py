"""The gradient reaching each position of a sequence: ||dL/dh_t|| (norm over batch and
features), what vanishes or explodes through time.

For a recurrent layer, each step of its *input* (dL/dx_t for the first layer, the total dL/dh_t
of the layer below for the others), not its output sequence: the recurrence runs inside the
layer, so steps the head does not read get no gradient through the output tensor. For a
Transformer block, each position of the residual stream entering it. The sequences are those
the builder declared (zoo.models.roles), else the input of every recurrent or
``Bidirectional`` layer; all of the same length.
"""
from __future__ import annotations

import numpy as np

from zoo.instruments.base import Instrument
from zoo.instruments.layout import flow_ratio


def _time_steps(tensor) -> int | None:
    shape = tensor.shape
    return int(shape[1]) if len(shape) == 3 and shape[1] is not None else None


def sequences_of(main, declared: tuple[tuple[str, str], ...] = ()) -> list[tuple[str, object]]:
    """(label, symbolic tensor) of the sequences whose gradient is measured per position: those
    the builder declared (label, layer whose output it is) that are on ``main``'s path; without
    a declaration, the input of every recurrent (or ``Bidirectional``) layer, labelled by it."""
    import keras

    if declared:
        layers = {l.name: l for l in main.layers}
        return [(label, main.inputs[0] if source == "inputs" else layers[source].output)
                for label, source in declared if source == "inputs" or source in layers]
    return [(l.name, l.input) for l in main.layers if isinstance(l, (keras.layers.RNN, keras.layers.Bidirectional))]


class GradientThroughTime(Instrument):
    """The gradient reaching each position of the measured sequences."""

    key = "time_grad"
    axes = ("S", "N")
    dims = {"S": "measured sequences (recurrent layers, Transformer blocks)", "N": "time steps"}
    sizes = {"S": "seq_layers", "N": None}
    doc = ("the gradient reaching time step t of each measured sequence: ||dL/dx_t|| for the first recurrent "
           "layer's input, ||dL/dh_t|| of the layer below for the others (norm over batch and features)")
    labels = ("seq_layers", "the measured sequences' names (S = 0 without them)")
    mlflow = ("time_grad_ratio/*",)
    summary_names = ("summary/time_grad_ratio_init", "summary/time_grad_ratio_end")

    def __init__(self, sequences: list, model_input):
        self.sequences, self.model_input = sequences, model_input
        super().__init__(tuple(label for label, _ in sequences), (len(sequences), _time_steps(sequences[0][1])))

    @classmethod
    def applies(cls, view):
        candidates = sequences_of(view.main, view.sequences)
        steps = [_time_steps(t) for _, t in candidates]
        first = next(filter(None, steps), None)
        for (label, _), n in zip(candidates, steps):
            if n is None or n != first:
                view.skipped[f"gradient through time: {label}"] = (
                    "its input has no fixed number of time steps" if n is None
                    else "its input has another number of time steps than the first sequence's")
        timed = [(label, t) for (label, t), n in zip(candidates, steps) if n is not None and n == first]
        return cls(timed, view.main.inputs[0]) if timed else None

    def taps(self):
        return {f"seq_in:{label}": t for label, t in self.sequences if t is not self.model_input}

    def wrt(self, x, taps):
        return [x if t is self.model_input else taps[f"seq_in:{label}"] for label, t in self.sequences]

    def compute(self, probe):
        import tensorflow as tf

        from zoo.instruments import graph_stats

        return {"time_grad": tf.stack([graph_stats.norm(g, axis=[0, 2]) for g in probe.wrt_grads])}

    def epoch_metrics(self, latest):
        """The gradient reaching the first step relative to the last, per sequence."""
        return {f"time_grad_ratio/{label}": flow_ratio(float(norms[0]), float(norms[-1]))
                for label, norms in zip(self.names, latest)}

    @staticmethod
    def summarize(stats):
        """Read at the first (step 1) and last probe step, for the first sequence:
        ||dL/dx_0|| / ||dL/dx_T||, the share of the gradient that reaches its start."""
        out = {}
        if stats.time_grad.size and stats.time_grad.shape[-1] > 1:
            for label, i in (("init", 0), ("end", -1)):
                norms = stats.time_grad[i, 0]
                if np.all(np.isfinite(norms)):
                    out[f"summary/time_grad_ratio_{label}"] = flow_ratio(float(norms[0]), float(norms[-1]))
        return out
