"""``fit``'s and a custom loop's steps on JAX: Keras' JAX trainer is stateless and jitted, so a step's numbers leave
it as outputs, not as writes to variables.

- The update is ``optimizer.stateless_apply(optimizer_variables, grads, trainable_variables)``,
  wrapped on the optimizer object: it hands the measuring the gradients the optimizer receives
  and the weights before and after the update (and a loss scaler's scale, from its state).
- The step's loss is computed inside ``jax.value_and_grad``, where nothing outside can keep
  it; it is read where the step hands it to its metrics (zoo.gradient_monitor._keras, which
  names the private Keras internals this relies on).
- Each step's tensors are an extra entry of the jitted step's logs, taken off in Python before
  Keras or another callback sees them: no host round trip inside the step. The model's own
  ``train_step`` is jitted as Keras jits it (``jax.jit(train_step, donate_argnums=0)``, with
  ``jit_compile``), once: the probe steps' part (weight and update norms, gradient histograms)
  runs under a conditional on a boolean input (two compiled steps, as on TensorFlow, compiled
  in ~1.8 s where one takes ~1 s on a 20x64 MLP; the conditional costs no measurable time a
  step). The ``steps_per_execution`` loop around it is Keras' loop, redone in Python
  (zoo.gradient_monitor._keras.jax_train_function), so every step's tensors are kept.
- A custom loop (Keras' guide's: ``optimizer.stateless_apply`` inside the user's ``jax.jit``
  step): the same wrapper measures there, the probe part on steps whose ``optimizer.iterations``
  is a multiple of ``histogram_every`` (read from the step's optimizer state), and the row
  leaves the compiled step through ``jax.debug.callback`` (ordered: in step order), the only way
  out of a function whose outputs are the user's. No loss (NaN): the step's loss stays inside
  the user's ``value_and_grad``.
"""
from __future__ import annotations

import jax
import keras
import numpy as np
from keras import ops

from zoo.gradient_monitor import _keras
from zoo.gradient_monitor.patches import Patches
from zoo.gradient_monitor.hooks import loss_scale

KEY = "zoo_gradient_monitor"  # the jitted step's extra log entry


class JaxSteps:
    """The seams on one model and optimizer, in ``fit`` (:meth:`install`) or a custom loop
    (:meth:`install_loop`): ``receive(packed)`` gets each step's row (PortableMeter.pack; device
    arrays in fit, numpy from a loop, converted when the monitor collects), with the probe part
    every ``histogram_every``-th step from the first (in fit chosen in Python, handed to the
    compiled step as a boolean)."""

    def __init__(self, meter, optimizer, receive, histogram_every: int):
        self.meter, self.optimizer, self.receive, self.every = meter, optimizer, receive, histogram_every
        self.patches = Patches()
        self._trace: dict | None = None  # what the step being traced handed the seams
        self._steps = 0  # steps run so far
        self._loop = False  # measuring a custom loop (install_loop), until remove
        self._sent: list = []  # the rows a custom loop's steps sent, until flush

    def install(self, model) -> None:
        """Wrap the seams and set ``model.train_function`` (fit calls it once a batch).

        Raises:
            ValueError: a ``keras.distribution`` is set (its sharded step is not rebuilt here).
        """
        if keras.distribution.distribution() is not None:
            raise ValueError("a keras.distribution is set: the monitor does not rebuild a sharded JAX step")
        self.patches.wrap(self.optimizer, "stateless_apply", self._stateless_apply)
        _keras.read_jax_step_loss(model, self.patches.wrap, self._read_loss)
        step = self._traced(model.train_step)
        if not model.run_eagerly and model.jit_compile:  # as Keras' own make_train_function
            step = jax.jit(step, donate_argnums=0)

        def one(state, data):
            probing = np.bool_(self._steps % self.every == 0)
            self._steps += 1
            logs, state = step(state, data, probing)
            if KEY in logs:
                logs = dict(logs)
                self.receive(logs.pop(KEY))
            return logs, state
        model.train_function = _keras.jax_train_function(one, int(model.steps_per_execution))

    def install_loop(self) -> None:
        """Measure every ``optimizer.stateless_apply`` traced from now on (a custom loop's step:
        trace it after this), until :meth:`remove`."""
        self.patches.wrap(self.optimizer, "stateless_apply", self._stateless_apply)
        self._loop = True

    def remove(self) -> None:
        if self._loop:
            jax.effects_barrier()  # the rows still on their way are kept
        self.patches.remove()
        self._loop = False  # a loop's step compiled while installed still calls back: ignored

    def flush(self) -> list:
        """The rows a custom loop's steps sent since the last flush, in step order (waits for
        those still on their way)."""
        if self._loop:
            jax.effects_barrier()
        rows, self._sent = self._sent, []
        return rows

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

    def _read_loss(self, unscaled_loss) -> None:
        if self._trace is not None:
            self._trace["loss"] = unscaled_loss

    def _from_loop(self, packed) -> None:  # on JAX's callback thread: kept for flush
        if self._loop:
            self._sent.append(packed)

    def _stateless_apply(self, original):
        meter, optimizer = self.meter, self.optimizer

        def stateless_apply(optimizer_variables, grads, trainable_variables):
            new_values, new_state = original(optimizer_variables, grads, trainable_variables)
            if self._trace is None and not self._loop:  # not fit's step, no loop installed
                return new_values, new_state
            with keras.StatelessScope(state_mapping=list(zip(optimizer.variables, optimizer_variables))):
                scale = loss_scale(optimizer)  # a loss scaler's: its value in this step's state
                scale = None if scale is None else ops.convert_to_tensor(scale)
                iterations = ops.convert_to_tensor(optimizer.iterations)  # before this update
            probing = self._trace["probing"] if self._trace is not None \
                else ops.equal(ops.mod(iterations, self.every), 0)
            ours = _ours(meter, optimizer, len(grads))
            if ours is None:  # another model's variables (a shared optimizer)
                return new_values, new_state
            measured = meter.measure(ours(grads), meter.kernels_of(ours(trainable_variables)),
                                     meter.kernels_of(ours(new_values)), optimizer, scale, probing)
            if self._trace is not None:
                self._trace["measured"] = measured
            else:  # a custom loop's step: its outputs are the user's, so the row leaves by a callback
                jax.debug.callback(self._from_loop, meter.pack(measured), ordered=True)
            return new_values, new_state
        return stateless_apply


def _ours(meter, optimizer, n: int):
    """``values -> [the value of each of meter.variables, None where not among them]`` for the
    lists ``stateless_apply`` takes: they are in the order of the variables the optimizer was
    built on (``optimizer.build(var_list)``: a part of the model when only that part is trained,
    a fine-tuned head), not the model's. None when none of the model's variables is among them."""
    applied = _keras.applied_variables(optimizer)
    if len(applied) != n:  # a Keras without the list: the model's own variables, in its order
        applied = meter.variables if len(meter.variables) == n else []
    at = {id(v): i for i, v in enumerate(applied)}
    if not any(id(v) in at for v in meter.variables):
        return None
    return lambda values: [values[at[id(v)]] if id(v) in at else None for v in meter.variables]
