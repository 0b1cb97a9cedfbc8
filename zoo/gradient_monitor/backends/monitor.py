"""``zoo.GradientMonitor`` on JAX and PyTorch: the TensorFlow monitor's recording, verdict,
progress and records (zoo.gradient_monitor.callback), fed by each step's measurement in
``keras.ops`` (zoo.gradient_monitor.backends.measure) from the backend's own seam
(zoo.gradient_monitor.backends.on_jax, .on_torch)."""
from __future__ import annotations

import warnings

import keras

from zoo.gradient_monitor import _keras
from zoo.gradient_monitor.backends.measure import PortableMeter
from zoo.gradient_monitor.backends.on_torch import TorchSteps
from zoo.gradient_monitor.callback import GRADIENT_APPLIED, GradientMonitor
from zoo.instruments import GradientHistograms
from zoo.records import posedness
from zoo.records.recorder import Recorder
from zoo.tracking.memory import MemorySink

# what a probe step measures on TensorFlow, in words (zoo.instruments)
PROBE_INSTRUMENTS = {"ActivationStats": "activation statistics",
                     "GradientThroughTime": "gradient through time", "ForgetGates": "forget gates"}


class PortableMonitor(GradientMonitor):
    """zoo.GradientMonitor on the JAX or PyTorch backend (``GradientMonitor(...)`` makes one
    there): every step's gradient and clipped-gradient norms, other variables' gradient norms
    and recorded elements, the loss, finiteness and a loss scaler's skips; on probe steps the
    weight norms, the update's size and the gradient histograms; in ``fit`` and in a custom
    loop after ``attach`` (every ``optimizer.apply`` on PyTorch, every ``stateless_apply`` traced
    after it on JAX); the verdict, progress and records as on TensorFlow. The probe-step
    instruments that read the forward pass, the penalty's gradient apart, sharpness and
    ``observe`` are TensorFlow's only: named once in ``skipped``."""

    def on_train_begin(self, logs=None):
        self._in_fit, self._started, self._calls, self._epoch_losses = True, 0, 0, []
        if not self.attach(self.model):
            return
        try:
            self._steps.install(self.model)
        except ValueError as err:
            self._steps.remove()
            warnings.warn(f"GradientMonitor: cannot instrument {self.model.name} ({err}); training goes on unmonitored")
            self.meter = self.recorder = None

    def attach(self, model, optimizer=None) -> bool:
        """As :meth:`GradientMonitor.attach`: outside ``fit``, every ``optimizer.apply`` (PyTorch)
        or every ``optimizer.stateless_apply`` traced from now on (JAX: jit the step after this)
        is measured until :meth:`detach`; then :meth:`collect` and :meth:`finish`."""
        self._attached = True
        backend = keras.backend.backend()
        optimizer = optimizer or self.optimizer or getattr(model, "optimizer", None)
        found = self._find(model, optimizer, needs_optimizer=True)  # its apply is the only seam here
        if found is None:
            return False
        self.skipped = dict(found.skipped)
        tensorflow_only = f"TensorFlow's monitor only, not yet on the {backend} backend"
        for inst in found.instruments:
            if not isinstance(inst, GradientHistograms):
                self.skipped[PROBE_INSTRUMENTS.get(type(inst).__name__, type(inst).__name__)] = tensorflow_only
        if self._in_fit and _keras.runs_keras_train_step(model) and _single_known_loss(model):
            self.skipped["the targets' range (the ill-posed check reads the loss only)"] = tensorflow_only
        if self.sharpness_every:
            self.skipped["sharpness"] = tensorflow_only
        if model.losses or any(getattr(v, "regularizer", None) for v in model.trainable_variables):
            self.skipped["the weight penalty's gradient apart"] = (
                f"{tensorflow_only}: grad_norm includes the penalty's gradient")
        for what, why in self.skipped.items():
            warnings.warn(f"GradientMonitor: not measured: {what} ({why})")
        self.gradient = GRADIENT_APPLIED
        if self._in_fit and not _keras.runs_keras_train_step(model) and self.verbose:  # as TensorFlow's says
            loss = ("not read on JAX (it stays inside its value_and_grad)" if backend == "jax"
                    else "read only if it calls optimizer.scale_loss(loss)")
            print(f"GradientMonitor: measuring {self.gradient}: {type(model).__name__}.train_step is its own; "
                  f"its per-step loss is {loss}, the progress reads fit's epoch loss")
        self.meter = PortableMeter(found.variables, found.kernel_index, found.kernels, found.others, found.elements)
        self._rows: list = []  # each step's packed row (PortableMeter.pack), until collected
        self._seen = self._probes_seen = self._pending = 0
        self.sink = self._open_sink(model)
        self.memory = MemorySink()
        self.recorder = Recorder(self.meter, self.sink or self.memory, self.log_every)
        if backend == "jax":
            from zoo.gradient_monitor.backends.on_jax import JaxSteps  # imports JAX: only on its backend

            self._steps = JaxSteps(self.meter, optimizer, self._receive, self.histogram_every)
            if not self._in_fit:
                self._steps.install_loop()
        else:
            self._steps = TorchSteps(self.meter, optimizer, self._receive, self.histogram_every)
            if not self._in_fit:
                self._steps.install()
        self._hooked = f"{type(optimizer).__name__} {optimizer.name!r}"
        return True

    # no batch hooks: a callback with one makes Keras read every step's logs on the host (no
    # async dispatch: on JAX a sync a step, +1-2 ms on a 20x64 MLP); rows are drained in _receive
    on_train_batch_begin = keras.callbacks.Callback.on_train_batch_begin
    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end

    def _receive(self, packed: dict) -> None:
        self._rows.append(packed)
        if len(self._rows) >= self.capacity:  # bounded memory; a host read every capacity steps
            self.collect()

    def detach(self) -> None:
        """Take the monitor's seams off the model and its optimizer (``fit`` does it at its end)."""
        steps = getattr(self, "_steps", None)
        if steps is not None:
            steps.remove()
            self._rows.extend(steps.flush())  # a custom loop's last rows, for collect
            self._steps = None
        if self._in_fit and self.model is not None:
            self.model.train_function = None  # the next fit builds Keras' own again

    def collect(self) -> int:
        """As :meth:`GradientMonitor.collect`: the steps measured so far into the recorder."""
        self._require_attached("collect")
        if self.meter is None or self.recorder is None:
            return 0
        self._pending = 0
        if getattr(self, "_steps", None) is not None:
            self._rows.extend(self._steps.flush())
        rows, self._rows = self._rows, []
        for packed in rows:
            self._seen += 1
            self.recorder.on_step(*self.meter.unpack(packed), step=self._seen)
        return len(rows)

    def _finish(self, stops: list[str]) -> None:
        if self.recorder is not None and not self._in_fit:
            self.collect()
        if self.recorder is not None and not self._in_fit and self._seen == 0:
            seam = ("optimizer.stateless_apply in a step traced after attach (a step jitted before attach, "
                    "and optimizer.apply, are not measured on JAX)" if keras.backend.backend() == "jax"
                    else "optimizer.apply")
            warnings.warn(f"GradientMonitor: no step of the custom loop reached the monitor: it measures {seam} "
                          f"on the optimizer it hooked ({self._hooked})")
        super()._finish(stops)

    def observe(self, *args, **kwargs):
        """TensorFlow's only (see :meth:`GradientMonitor.observe`), whatever it is called with.

        Raises:
            NotImplementedError: always, naming what measures instead.
        """
        raise NotImplementedError(f"GradientMonitor.observe is TensorFlow's only; on {keras.backend.backend()} "
                                  "the monitor measures fit, and a custom loop after attach (every optimizer.apply "
                                  "on PyTorch, optimizer.stateless_apply on JAX)")




def _single_known_loss(model) -> bool:
    """Would TensorFlow's monitor read the targets' range (GradientMonitor._instruments: one
    output, a loss zoo.records.posedness knows)?"""
    loss = getattr(model, "loss", None)
    single = not isinstance(loss, (list, tuple, dict)) and len(getattr(model, "outputs", None) or [0]) == 1
    return single and bool(posedness.kind_of(loss))
