"""Where every training step passes: the seams ``zoo.GradientMonitor`` measures at, without
replacing the user's step.

Every Keras 3 training step, whatever writes it (Keras' own ``train_step``, a subclass's, a
custom loop), ends by handing gradients to the optimizer: ``apply`` (``apply_gradients`` calls
it). :class:`Hooks` wraps that method on the user's optimizer *object* (not its class), so the
step runs exactly as written and the monitor sees what the optimizer receives, before a loss
scaler unscales it and before the optimizer's own clipping. ``scale_loss``, which Keras' step
(and the documented mixed-precision custom step) calls with the loss just before the gradient,
is wrapped the same way to read the step's loss.

Two more seams, both in ``fit`` only, both around the model's own step rather than instead of it:

- **probe steps**: a second train function whose step first runs the instruments that need the
  forward pass (activations, the gradient reaching each time step, forget gates) on the same
  batch, without side effects (``keras.StatelessScope``: batch-norm statistics, dropout seeds
  and metric states are left as they were), then calls the model's own step. ``fit`` runs it
  only on probe steps: the choice is made in Python between two compiled functions, so an
  ordinary step carries no ``tf.cond``.
- **the data loss apart from the weight penalties**, for Keras' own step and ``compute_loss``
  only: the step runs inside an outer ``GradientTape``, and the compiled loss (without
  ``model.losses``) is computed once more from the same predictions (in a ``StatelessScope``,
  so its per-output loss trackers count once); its gradient is taken from the outer tape. A
  second backward pass, paid only by models with a weight penalty.

Python code here runs while a train function is *traced*; :class:`Trace` carries what one
traced step handed the seams so far (the step's loss, its probe readings).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import keras
import tensorflow as tf

from zoo.gradient_monitor import _keras
from zoo.gradient_monitor.patches import Patches


@dataclass
class Trace:
    """What the step being traced has handed the seams so far."""
    probing: bool = False         # tracing the probe-step function
    loss: object = None           # the loss the step handed optimizer.scale_loss (unscaled)
    data_loss: object = None      # Keras' own step with penalties: the compiled loss alone ...
    outer: object = None          # ... and the outer tape that recorded it
    probe: dict | None = None     # the forward-pass instruments' fields of a probe step
    graph: object = None          # the graph the tensors above belong to (None: eager)
    observing: bool = False       # GradientMonitor.observe measures this apply itself
    wrapped: bool = False         # set by fit's train_step wrapper (else: a custom step or loop)

    def fresh(self, tensor) -> bool:
        """Was ``tensor`` made in the graph being traced now (or both are eager)?"""
        if tensor is None:
            return False
        return _current_graph() is self.graph


def _current_graph():
    return None if tf.executing_eagerly() else tf.compat.v1.get_default_graph()


@dataclass
class Hooks:
    """The seams on one model and optimizer. ``on_apply(grads, variables, apply)`` is called
    instead of ``optimizer.apply(grads, variables)`` while installed and must call ``apply``
    exactly once with the same arguments; ``probe(data)`` (fit's probe steps) returns the probe
    readings of a batch."""
    model: object
    optimizer: object
    on_apply: object
    probe: object = None
    split_penalty: bool = False   # take the data loss's gradient apart (Keras' own step, penalized)
    trace: Trace = field(default_factory=Trace)
    patches: Patches = field(default_factory=Patches)

    # -- installing ----------------------------------------------------------------------------
    def install(self) -> None:
        """Wrap the optimizer's ``apply`` and ``scale_loss`` (and, to split the penalty, the
        model's ``compute_loss``) on the instances."""
        self.patches.wrap(self.optimizer, "apply", lambda _: self._apply)
        self.patches.wrap(self.optimizer, "scale_loss", lambda _: self._scale_loss)
        if self.split_penalty:
            self.patches.wrap(self.model, "compute_loss", lambda _: self._compute_loss)

    def remove(self) -> None:
        """Put back every wrapped method (an instance attribute the user had set is restored)."""
        self.patches.remove()

    def original(self, obj, name: str):
        return self.patches.original(obj, name)

    # -- fit's two train functions -------------------------------------------------------------
    def train_functions(self) -> tuple:
        """(ordinary, probe-step) train functions for ``fit``, both Keras' own
        (``make_train_function``) around the model's own step."""
        model = self.model
        own = vars(model).get("train_step")

        def build(step):
            if step is None:
                vars(model).pop("train_step", None)
            else:
                object.__setattr__(model, "train_step", step)
            model.make_train_function(force=True)
            return model.train_function

        original = model.train_step
        plain = self._traced(original, probing=False)
        probing = self._traced(original, probing=True)
        functions = (build(plain if self.split_penalty else own), build(probing))
        if own is None:
            vars(model).pop("train_step", None)
        else:
            object.__setattr__(model, "train_step", own)
        return functions

    def _traced(self, step, probing: bool):
        """``step`` with the trace state set while it is traced: the probe forward pass first on
        probe steps; inside an outer tape when the penalty's gradient is taken apart."""
        def train_step(data):
            self.trace = Trace(probing=probing, graph=_current_graph(), wrapped=True)
            if probing and self.probe is not None:
                self.trace.probe = self.probe(data)
            try:
                if not self.split_penalty:
                    return step(data)
                with tf.GradientTape() as outer:
                    self.trace.outer = outer
                    return step(data)
            finally:
                self.trace = Trace()
        return train_step

    # -- the seams -----------------------------------------------------------------------------
    def _apply(self, grads, trainable_variables=None):
        apply = self.original(self.optimizer, "apply")
        if self.trace.observing:
            return apply(grads, trainable_variables)
        variables = list(trainable_variables) if trainable_variables is not None \
            else _keras.applied_variables(self.optimizer)
        return self.on_apply(list(grads), variables, lambda: apply(grads, trainable_variables))

    def _scale_loss(self, loss):
        if not self.trace.wrapped:  # a custom loop: this call starts the step's trace state
            self.trace = Trace(graph=_current_graph())
        if _current_graph() is self.trace.graph:
            self.trace.loss = loss
        return self.original(self.optimizer, "scale_loss")(loss)

    def _compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        total = self.original(self.model, "compute_loss")(x, y, y_pred, sample_weight, training=training)
        if training and self.trace.outer is not None:
            with keras.StatelessScope():  # the compiled loss's own trackers count the step once
                self.trace.data_loss = _keras.compiled_loss(self.model)(y, y_pred, sample_weight)
        return total

    # -- what the step handed over -------------------------------------------------------------
    def data_gradients(self, variables: list):
        """The data loss's gradients of ``variables`` (the penalty split), or None."""
        trace = self.trace
        if trace.outer is None or trace.data_loss is None:
            return None
        grads = trace.outer.gradient(trace.data_loss, variables)  # stops the outer tape recording
        trace.outer = None
        return grads

    def step_loss(self):
        """(the loss the step handed ``scale_loss``, the data loss alone or None), or (None,
        None) when this step handed none."""
        trace = self.trace
        loss = trace.loss if trace.fresh(trace.loss) else None
        return loss, (trace.data_loss if trace.fresh(trace.data_loss) else None)


def loss_scale(optimizer):
    """The factor the optimizer divides the gradients it receives by (a LossScaleOptimizer's
    current dynamic scale, a base optimizer's fixed ``loss_scale_factor``), or None."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.dynamic_scale if optimizer.built else optimizer.initial_scale
    return getattr(optimizer, "loss_scale_factor", None)


def skips_nonfinite(optimizer) -> bool:
    """Does the optimizer skip a step whose gradients are not finite (a loss scaler)?"""
    return isinstance(optimizer, keras.optimizers.LossScaleOptimizer)


def inner(optimizer):
    """The optimizer that updates the weights (a loss scaler wraps one)."""
    return getattr(optimizer, "inner_optimizer", optimizer)
