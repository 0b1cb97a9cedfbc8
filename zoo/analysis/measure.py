"""A model's gradients at its current weights, on given batches, with nothing changed.

What ``zoo.compare`` and ``zoo.diagnose`` read: each batch goes through the model's own
instrumented step (zoo.training.step.InstrumentedStep, the zoo's train step, which measures any Keras
model: zoo builders' by their roles, any other by zoo.instruments.discover) with plain SGD at
learning rate 0, every instrument on (histograms, activation statistics, gradient through time,
forget gates). The forward pass is in training mode, as in training; every variable the pass
touches (batch-norm moving statistics included) is put back afterwards, so a model measured is
the model it was. The batches are the run's "steps", so the result is a
:class:`zoo.records.stats.RunStats` that the verdict, the plots and the summaries read as they
read a run's.
"""
from __future__ import annotations

from dataclasses import dataclass

from zoo.records.recorder import Recorder
from zoo.tracking.memory import MemorySink


@dataclass
class Measured:
    stats: object          # zoo.records.stats.RunStats, one row per batch
    step: object           # the zoo.training.step.InstrumentedStep that measured (its kernels, skipped, loss)
    loss_name: str         # the data loss, in words (zoo.training.step.data_loss)
    skipped: dict          # what could not be measured on this model -> why
    heads: list            # zoo.training.step.Head of each output: its loss, units, activation, metric


def measure(model, xs: list, ys: list, task: str, loss=None) -> Measured:
    """Measure ``model`` on each batch (``xs[i]``, ``ys[i]``: arrays, or lists / dicts of arrays
    for several inputs or outputs); ``task``: "classification" | "regression" (the default loss
    and accuracy); ``loss``: a Keras loss name or object (default: the model's compiled loss,
    else the task's: zoo.training.step.data_loss). Raises ValueError for an unknown loss name, and
    zoo.training.step.LossMismatch (a ValueError) for a loss that does not fit an output."""
    import keras

    from zoo.training.step import InstrumentedStep, batch_spec

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
