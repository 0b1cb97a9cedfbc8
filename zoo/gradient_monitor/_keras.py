"""The private Keras internals the monitor reads, all in one place (Keras 3.9 - 3.15), for
every backend.

Each is used only where no public API gives the same thing; each function says what it reads
and falls back to a public route (or to not measuring, which the monitor then names) when a
Keras version no longer has it.
"""
from __future__ import annotations

import keras


def applied_variables(optimizer) -> list:
    """The variables an ``optimizer.apply(grads)`` call without ``trainable_variables`` updates:
    those it was built on (``BaseOptimizer._trainable_variables``), in its order."""
    return list(getattr(optimizer, "_trainable_variables", []))


def clip(optimizer, grads: list) -> list | None:
    """What the optimizer's own ``clipnorm`` / ``global_clipnorm`` / ``clipvalue`` makes of
    ``grads`` (``BaseOptimizer._clip_gradients``, the function its ``apply`` calls: the same
    arithmetic, so the clipped norm is what the update used); None when it does not clip or
    cannot say."""
    if not any(getattr(optimizer, k, None) for k in ("clipnorm", "global_clipnorm", "clipvalue")):
        return None
    method = getattr(optimizer, "_clip_gradients", None)
    return None if method is None else method(list(grads))


def compiled_loss(model):
    """The loss ``compile(loss=...)`` made (``Trainer._compile_loss``, a CompileLoss over the
    outputs with the loss weights), or None. Calling it also updates its per-output loss
    trackers, so a caller that only measures calls it inside ``keras.StatelessScope``."""
    return getattr(model, "_compile_loss", None)


def runs_keras_train_step(model) -> bool:
    """Does ``fit`` run Keras' own ``train_step`` on ``model`` (neither its class nor the
    instance replaces it)?"""
    return type(model).train_step is keras.Model.train_step and "train_step" not in vars(model)


def runs_keras_compute_loss(model) -> bool:
    """Is ``model.compute_loss`` Keras' own: the compiled loss plus ``model.losses``?"""
    return (type(model).compute_loss is keras.Model.compute_loss and "compute_loss" not in vars(model)
            and compiled_loss(model) is not None)


def build_optimizer_first(model, optimizer) -> bool:
    """Create the optimizer's variables (slots, step counter) on ``model.trainable_variables``
    before ``fit``'s first step, where that is the list Keras' own ``train_step`` applies:
    what Keras' ``fit`` does itself under a distribution strategy (``Trainer._symbolic_build``)
    and ``compile_from_config`` too, with the public ``optimizer.build``. Why: a
    ``tf.function`` whose first trace creates variables is traced a second time without
    (``Function._call``); built here, each of the monitor's two train functions is traced once
    (fit's first epoch: one trace of the whole step fewer). Returns whether it built it (not for
    a step of the model's own, which may apply other variables, nor an optimizer already built).
    """
    if optimizer is None or optimizer is not getattr(model, "optimizer", None) or optimizer.built \
            or not runs_keras_train_step(model):
        return False
    optimizer.build(model.trainable_variables)
    return True


def build_from_batches(model, element_spec) -> None:
    """Build an unbuilt model from the shapes and dtypes of ``fit``'s batches, before its first
    step: ``Trainer._symbolic_build``, what Keras' own ``fit`` does under a distribution strategy
    (on TensorFlow it otherwise builds the model while tracing that step). Symbolic: no data is
    read, no weight is drawn twice (the layers draw their initial weights in the same order).

    Raises:
        ValueError, RuntimeError: Keras cannot build the model from these shapes.
    """
    model._symbolic_build(data_batch=element_spec)


# -- the JAX backend's trainer (zoo.gradient_monitor.backends.on_jax) -------------------------
# Keras' JAX fit has no public seam for the step's loss nor for running every step's extra
# outputs through its loop: these two name the JAXTrainer internals the monitor relies on.

JAX_METRICS_UPDATE = "_update_metrics_variables"  # JAXTrainer: (metrics_variables, unscaled_loss, x, y, y_pred, sample_weight)


def read_jax_step_loss(model, wrap, read) -> bool:
    """Hand ``read(loss)`` the unscaled loss each time Keras' JAX ``train_step`` passes it to its
    metrics (``JAXTrainer._update_metrics_variables``, called in the step outside
    ``jax.value_and_grad``, the only place the loss leaves it); ``wrap(obj, name, make)``
    replaces that method on the model instance (zoo.gradient_monitor.patches).

    Returns:
        False when the Keras version has no such method: nothing wrapped, the loss not read.
    """
    if not callable(getattr(model, JAX_METRICS_UPDATE, None)):
        return False

    def make(original):
        def update_metrics(metrics_variables, unscaled_loss, *args, **kwargs):
            read(unscaled_loss)
            return original(metrics_variables, unscaled_loss, *args, **kwargs)
        return update_metrics

    wrap(model, JAX_METRICS_UPDATE, make)
    return True


def jax_train_function(one_step, steps_per_execution: int):
    """A ``model.train_function`` for Keras' JAX ``fit``: ``(state, iterator) -> (logs, state)``,
    the contract of the function ``JAXTrainer.make_train_function`` makes, with its loop of
    ``steps_per_execution`` steps a call (``JAXTrainer._make_function``); each step is
    ``one_step(state, data) -> (logs, state)``, called in Python, so every step's logs are seen."""
    def train_function(state, iterator):
        logs, state = one_step(state, next(iterator))
        for _ in range(steps_per_execution - 1):
            try:
                data = next(iterator)
            except StopIteration:
                break
            logs, state = one_step(state, data)
        return logs, state
    return train_function
