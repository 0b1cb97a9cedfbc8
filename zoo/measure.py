"""A model's gradients at its current weights, on given batches, with nothing changed.

What ``zoo.compare`` and ``zoo.diagnose`` read: each batch goes through the model's own
instrumented step (zoo.step.InstrumentedStep, the zoo's train step, which measures any Keras
model: zoo builders' by their roles, any other by zoo.monitor.discover) with plain SGD at
learning rate 0, every instrument on (histograms, activation statistics, gradient through time,
forget gates). The forward pass is in training mode, as in training; every variable the pass
touches (batch-norm moving statistics included) is put back afterwards, so a model measured is
the model it was. The batches are the run's "steps", so the result is a
:class:`zoo.monitor.stats.RunStats` that the verdict, the plots and the summaries read as they
read a run's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Measured:
    stats: object          # zoo.monitor.stats.RunStats, one row per batch
    step: object           # the zoo.step.InstrumentedStep that measured (its kernels, skipped, loss)
    loss_name: str         # the data loss, in words (zoo.step.data_loss)
    skipped: dict          # what could not be measured on this model -> why
    heads: list            # zoo.step.Head of each output: its loss, units, activation, metric


def take(tree, index):
    """Rows ``index`` of an array, or of every array in a list / dict of them."""
    if isinstance(tree, dict):
        return {k: take(v, index) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(take(v, index) for v in tree)
    return np.asarray(tree)[index]


def examples(tree) -> int:
    """Number of examples (the first axis) of an array or a list / dict of arrays."""
    if isinstance(tree, dict):
        return examples(next(iter(tree.values())))
    if isinstance(tree, (list, tuple)):
        return examples(tree[0])
    return len(tree)


def batches_of(x, y, batches: int, batch_size: int, seed: int) -> tuple[list, list]:
    """``batches`` batches of ``batch_size`` examples drawn without replacement with ``seed``
    (fewer, and a last smaller one, when the data has fewer examples)."""
    order = np.random.RandomState(seed).permutation(examples(x))
    take_n = min(batches * batch_size, len(order))
    idx = [order[i:i + batch_size] for i in range(0, take_n, batch_size)]
    return [take(x, i) for i in idx], [take(y, i) for i in idx]


def measure(model, xs: list, ys: list, task: str, loss=None) -> Measured:
    """Measure ``model`` on each batch (``xs[i]``, ``ys[i]``: arrays, or lists / dicts of arrays
    for several inputs or outputs); ``task``: "classification" | "regression" (the default loss
    and accuracy); ``loss``: a Keras loss name or object (default: the model's compiled loss,
    else the task's: zoo.step.data_loss). Raises ValueError for an unknown loss name, and
    zoo.step.LossMismatch (a ValueError) for a loss that does not fit an output."""
    import keras

    from zoo.monitor.recorder import Recorder
    from zoo.step import InstrumentedStep, batch_spec
    from zoo.tracking.memory import MemorySink

    step = InstrumentedStep(model, task, keras.optimizers.SGD(learning_rate=0.0), None,
                            batch_spec(xs[0], ys[0]), loss=loss)
    recorder = Recorder(step.meter, MemorySink(), log_every=len(xs))
    saved = [v.numpy() for v in model.variables]
    try:
        for x, y in zip(xs, ys):
            packed, probed = step.train_with_probes(x, y)
            recorder.on_step(packed.numpy(), probed.numpy())
    finally:
        for v, value in zip(model.variables, saved):
            v.assign(value)
    return Measured(recorder.stats(), step, step.loss_name, dict(step.skipped), list(step.heads))
