"""What one optimizer step reports, measured in the graph: the one set of instruments every
client uses (the zoo's own step, :class:`zoo.gradient_monitor.callback.GradientMonitor` in a user's
``fit`` or custom loop, ``zoo.compare``).

A client hands the meter the step's gradients three ways (the data objective's, the total with a
weight penalty's gradient added, and what the optimizer receives after clipping) and the scalars
of its objective; the meter returns the named fields of :func:`step_fields` packed in one
float64 vector (zoo.instruments.layout). The reading happens in two halves around the update:
:meth:`Meter.before_update` reads everything from the pre-update weights (every norm, and on
histogram steps the instruments of zoo.instruments), :meth:`Meter.after_update` only
the update's own size. A client applies its update after ``before_update`` in program order:
inside a ``tf.function`` that is enough, because automatic control dependencies keep reads and
writes of a variable in program order (an explicit dependency of the update on every
measurement cost a 20-layer MLP's step 1.7 ms of lost parallelism).

Each per-step series is declared once, in zoo.instruments.series (its name, axes, meaning, how a
``log_every`` window reaches MLflow, its array in the raw statistics file); an instrument
declares its fields where it computes them (zoo.instruments).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from zoo.instruments import graph_stats
from zoo.instruments import Instrument, Probe
from zoo.instruments.layout import Layout
from zoo.instruments.series import step_fields


@dataclass
class Reading:
    """One step's fields read before the update, and the kernels' values then (for the update's
    size); ``probed``: the instruments' packed fields on a histogram step."""
    values: dict
    before: list
    probed: tf.Tensor | None


class Meter:
    """Measures the steps of one model. ``variables``: every trainable variable, in the order
    the client's gradient lists use; ``kernel_index``: the positions of the monitored kernels
    (input side first), named ``kernels``; ``instruments``: what runs on histogram steps;
    ``others``: (position, name) of other variables whose gradient norm is recorded too
    (biases, norm scales: ``var_grad_norm``); ``elements``: (position, name) of small variables
    whose gradient is recorded element by element (``grad_elements``)."""

    def __init__(self, variables: list, kernel_index: list[int], kernels: tuple[str, ...],
                 aux_heads: tuple[str, ...] = (), penalized: bool = False,
                 instruments: list[Instrument] | None = None,
                 others: tuple[tuple[int, str], ...] = (), elements: tuple[tuple[int, str], ...] = ()):
        self.variables, self.kernel_index, self.kernels = list(variables), list(kernel_index), tuple(kernels)
        self._kernel_set = set(self.kernel_index)
        self.instruments = list(instruments or [])
        self.others, self.elements = tuple(others), tuple(elements)
        element_labels = tuple(f"{name}[{i}]" for at, name in self.elements
                               for i in range(int(np_size(self.variables[at]))))
        self.layout = Layout(step_fields(self.kernels, tuple(aux_heads), penalized,
                                         tuple(name for _, name in self.others), element_labels))
        self.probe_layout = Layout(tuple(f for inst in self.instruments for f in inst.fields))
        self._wrt_sizes = [0] * len(self.instruments)  # set by wrt(), while the step is traced

    def wrt(self, x, taps) -> list:
        """The tensors whose gradient the instruments need, flattened (pass them to the tape;
        :meth:`split_wrt` cuts their gradients back per instrument)."""
        per_instrument = [list(inst.wrt(x, taps)) for inst in self.instruments]
        self._wrt_sizes = [len(ts) for ts in per_instrument]
        return [t for ts in per_instrument for t in ts]

    def split_wrt(self, flat: list) -> list[list]:
        """The gradients of the flattened ``wrt`` tensors, cut back into one list per instrument."""
        out, first = [], 0
        for inst_wrt in self._wrt_sizes:
            out.append(flat[first:first + inst_wrt])
            first += inst_wrt
        return out

    def probe(self, x, taps, wrt_grads: list[list], kernel_grads: list) -> tf.Tensor:
        """The instruments' fields of a histogram step, packed: ``wrt_grads`` one list per
        instrument (:meth:`split_wrt`), ``kernel_grads`` the monitored kernels' data gradients."""
        measured = {}
        for inst, mine in zip(self.instruments, wrt_grads):
            measured.update(inst.compute(Probe(x, taps, mine, kernel_grads)))
        return graph_stats.pack(self.probe_layout, measured)

    def kernels_of(self, gradients: list) -> list:
        return [gradients[i] for i in self.kernel_index]

    def before_update(self, *, loss, grads: list, total: list | None = None, clipped: list | None = None,
                      metric=None, penalty=None, aux=(), objective=None, probe: tuple | None = None,
                      light: bool = False) -> Reading:
        """Every field but the update's size, from the weights before the update. ``grads``:
        the data objective's gradient of every variable (None or IndexedSlices allowed);
        ``total``: with the weight penalty's gradient (default ``grads``); ``clipped``: what the
        optimizer receives (default ``total``); ``objective``: the data objective whose
        finiteness counts (default ``loss``); ``probe``: on histogram steps, (x, taps,
        gradients of the instruments' ``wrt`` tensors as a list per instrument).

        ``light``: an ordinary step of zoo.GradientMonitor, the fewest ops that keep what the
        verdict reads every step: the gradient norms by :func:`graph_stats.gradient_sums` (a
        cast and an ``L2Loss`` a kernel), finiteness from the loss and those sums (the other
        variables' gradients are not read), and no weight norm or update (NaN: probe steps
        measure them)."""
        total = grads if total is None else total
        clipped = total if clipped is None else clipped
        penalty = tf.constant(0.0) if penalty is None else penalty
        objective = loss if objective is None else objective
        scalars_finite = tf.math.is_finite(tf.cast(objective, tf.float32) + tf.cast(penalty, tf.float32))
        if light:
            sums = graph_stats.gradient_sums(self.kernels_of(total))
            total_norm = tf.sqrt(sums)
            finite = scalars_finite & tf.math.is_finite(tf.reduce_sum(sums))
            norms = lambda gs: tf.sqrt(graph_stats.gradient_sums(self.kernels_of(gs)))  # noqa: E731
            before, weight_norm = None, tf.constant(np.full(len(self.kernel_index), np.nan))
        else:
            # the kernels' values now: after the update these reads still hold the old values
            before = [tf.convert_to_tensor(k) for k in self.kernels_of(self.variables)]
            total_norm = graph_stats.norms(self.kernels_of(total))
            finite = (scalars_finite & tf.reduce_all(tf.math.is_finite(total_norm))
                      & graph_stats.all_finite([g for i, g in enumerate(total) if i not in self._kernel_set]))
            norms = lambda gs: graph_stats.norms(self.kernels_of(gs))  # noqa: E731
            weight_norm = graph_stats.norms(before)
        values = {
            "loss": loss, "metric": tf.constant(np.nan, tf.float64) if metric is None else metric, "penalty": penalty,
            "finite": finite,
            "aux_loss": tf.stack(list(aux)) if len(aux) else tf.zeros([0], tf.float64),
            "grad_norm": total_norm if total is grads else norms(grads),
            "grad_norm_total": total_norm,
            "grad_norm_clipped": total_norm if clipped is total else norms(clipped),
            "weight_norm": weight_norm,
            "var_grad_norm": graph_stats.norms([grads[at] for at, _ in self.others]),
            "grad_elements": (tf.concat([_exact_values(grads[at], self.variables[at]) for at, _ in self.elements], 0)
                              if self.elements else tf.zeros([0], tf.float64)),
            "skipped": tf.constant(False),
        }
        probed = None if probe is None else self.probe(*probe, self.kernels_of(grads))
        return Reading(values, before, probed)

    def after_update(self, reading: Reading, skipped=None) -> tf.Tensor:
        """The update's size from the kernels now, then every field packed (float64);
        ``skipped``: a boolean tensor, True where the optimizer applied nothing (a loss
        scaler's overflow)."""
        if reading.before is None:  # a light reading: no update measured
            update = tf.constant(np.full(len(self.kernel_index), np.nan))
        else:
            update = graph_stats.norms(self.kernels_of(self.variables), minus=reading.before)
        values = {**reading.values, "update_norm": update}
        if skipped is not None:
            values["skipped"] = skipped
        return graph_stats.pack(self.layout, values)

    def without_update(self, reading: Reading) -> tf.Tensor:
        """Every field packed, the update's size NaN (a client that measures but does not apply)."""
        values = {**reading.values, "update_norm": tf.fill([len(self.kernel_index)], float("nan"))}
        return graph_stats.pack(self.layout, values)


def np_size(variable) -> int:
    """Elements of a variable (its shape is known once it is built)."""
    return int(np.prod(variable.shape))


def _exact_values(g, variable) -> tf.Tensor:
    """A small variable's gradient, flattened, as exact float64 values (denormals included: the
    magnitude from :func:`graph_stats.exact_abs`, the sign from the sign bit); None reads 0."""
    if g is None:
        return tf.zeros([np_size(variable)], tf.float64)
    g = tf.reshape(tf.cast(graph_stats.dense(g), tf.float32), [-1])
    negative = tf.bitcast(g, tf.int32) < 0  # the sign bit, which DAZ does not clear
    magnitude = graph_stats.exact_abs(g)
    return tf.where(negative, -magnitude, magnitude)
