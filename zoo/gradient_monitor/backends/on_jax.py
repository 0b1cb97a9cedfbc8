"""``fit``'s steps on JAX: Keras' JAX trainer is stateless and jitted, so a step's numbers leave
it as outputs, not as writes to variables.

- The update is ``optimizer.stateless_apply(optimizer_variables, grads, trainable_variables)``,
  wrapped on the optimizer object: it hands the measuring the gradients the optimizer receives
  and the weights before and after the update (and a loss scaler's scale, from its state).
- The step's loss is computed inside ``jax.value_and_grad``, where nothing outside can keep
  it; it is read where the step hands it to its metrics (``JAXTrainer._update_metrics_variables``).
- Each step's tensors are an extra entry of the jitted step's logs, taken off in Python before
  Keras or another callback sees them: no host round trip inside the step. The model's own
  ``train_step`` is jitted as Keras jits it (``jax.jit(train_step, donate_argnums=0)``, with
  ``jit_compile``), once: the probe steps' part (weight and update norms, gradient histograms)
  runs under a conditional on a boolean input (two compiled steps, as on TensorFlow, compiled
  in ~1.8 s where one takes ~1 s on a 20x64 MLP; the conditional costs no measurable time a
  step). The ``steps_per_execution`` loop around it is Keras' own loop, so every step's tensors
  are kept.
"""
from __future__ import annotations

import jax
import keras
import numpy as np

from zoo.gradient_monitor.backends.patches import Patches
from zoo.gradient_monitor.hooks import loss_scale

KEY = "zoo_gradient_monitor"  # the jitted step's extra log entry
METRICS_UPDATE = "_update_metrics_variables"  # JAXTrainer: (metrics_variables, unscaled_loss, x, y, y_pred, sample_weight)


class JaxSteps:
    """The seams on one model and optimizer in ``fit``: ``receive(packed)`` gets each step's row
    (PortableMeter.pack; device arrays, converted when the monitor collects), with the probe
    part every ``histogram_every``-th step from the first (chosen in Python, handed to the
    compiled step as a boolean)."""

    def __init__(self, meter, optimizer, receive, histogram_every: int):
        self.meter, self.optimizer, self.receive, self.every = meter, optimizer, receive, histogram_every
        self.patches = Patches()
        self._trace: dict | None = None  # what the step being traced handed the seams
        self._steps = 0  # steps run so far

    def install(self, model) -> None:
        """Wrap the seams and set ``model.train_function`` (fit calls it once a batch).

        Raises:
            ValueError: a ``keras.distribution`` is set (its sharded step is not rebuilt here).
        """
        if keras.distribution.distribution() is not None:
            raise ValueError("a keras.distribution is set: the monitor does not rebuild a sharded JAX step")
        self.patches.wrap(self.optimizer, "stateless_apply", self._stateless_apply)
        if callable(getattr(model, METRICS_UPDATE, None)):
            self.patches.wrap(model, METRICS_UPDATE, self._update_metrics)
        step = self._traced(model.train_step)
        if not model.run_eagerly and model.jit_compile:  # as Keras' own make_train_function
            step = jax.jit(step, donate_argnums=0)
        model.train_function = self._train_function(step, int(model.steps_per_execution))

    def remove(self) -> None:
        self.patches.remove()

    def _train_function(self, step, steps_per_execution: int):
        def one(state, data):
            probing = np.bool_(self._steps % self.every == 0)
            self._steps += 1
            logs, state = step(state, data, probing)
            if KEY in logs:
                logs = dict(logs)
                self.receive(logs.pop(KEY))
            return logs, state

        def train_function(state, iterator):  # Keras' loop (JAXTrainer._make_function), every step kept
            logs, state = one(state, next(iterator))
            for _ in range(steps_per_execution - 1):
                try:
                    data = next(iterator)
                except StopIteration:
                    break
                logs, state = one(state, data)
            return logs, state
        return train_function

    def _traced(self, original):
        """The model's own ``train_step`` with the trace state set while it runs (is traced),
        its measurement added to its logs; ``probing``: a boolean input, so one compiled step
        serves both kinds."""
        def train_step(state, data, probing):
            self._trace = {"probing": probing}
            try:
                logs, state = original(state, data)
                measured = self._trace.get("measured")
                if measured is not None:
                    logs = {**logs, KEY: self.meter.pack(measured, self._trace.get("loss"))}
            finally:
                self._trace = None
            return logs, state
        return train_step

    def _update_metrics(self, original):
        def update_metrics(metrics_variables, unscaled_loss, *args, **kwargs):
            if self._trace is not None:
                self._trace["loss"] = unscaled_loss
            return original(metrics_variables, unscaled_loss, *args, **kwargs)
        return update_metrics

    def _stateless_apply(self, original):
        meter, optimizer = self.meter, self.optimizer

        def stateless_apply(optimizer_variables, grads, trainable_variables):
            new_values, new_state = original(optimizer_variables, grads, trainable_variables)
            if self._trace is None:  # not fit's step (a custom loop): not measured
                return new_values, new_state
            scale = loss_scale(optimizer)
            if isinstance(scale, keras.Variable):  # a loss scaler's: its value in this step's state
                with keras.StatelessScope(state_mapping=list(zip(optimizer.variables, optimizer_variables))):
                    scale = keras.ops.convert_to_tensor(scale)
            self._trace["measured"] = meter.measure(
                list(grads), meter.kernels_of(list(trainable_variables)), meter.kernels_of(list(new_values)),
                optimizer, scale, self._trace["probing"])
            return new_values, new_state
        return stateless_apply
