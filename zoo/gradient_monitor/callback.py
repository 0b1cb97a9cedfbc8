"""``zoo.GradientMonitor``: the zoo's instruments on any Keras model, in ``fit`` or a custom loop,
without changing how it trains.

The monitor measures where every training step passes (zoo.gradient_monitor.hooks): the gradients the
model's own step hands its optimizer, whatever that step is (Keras' ``train_step``, a subclass's
with its own loss, clipping or loss scaling, a custom loop). Every step, in the compiled step
(zoo.instruments.meter): the per-kernel norms of that gradient, unscaled under mixed precision; of
what the optimizer's own clipping leaves; the weight norms before the update and the update's
size; whether a loss scaler skipped the step. On probe steps (every ``histogram_every``-th, a
second compiled function ``fit`` calls then) also gradient histograms and, where the model's
layers can be read, activation statistics, the gradient reaching each time step and LSTM forget
gates, from a forward pass on the same batch that changes no state. The rows go to a ring buffer
of variables, drained into the recorder (zoo.records.recorder) after the train function's calls;
at the end the run is judged (verdict, progress, its first gradient event), drawn and written.

With Keras' own ``train_step`` and ``compute_loss`` and a weight penalty, the monitored gradient
is the data loss's, the penalty's kept apart (``grad_norm_total``), as in a zoo run; otherwise it
is the gradient the optimizer receives, and the run says so once (``monitor.gradient``, the tag
``zoo.monitor_gradient``).

With ``sharpness_every``, ``fit`` also reads the sharpness, λ_max of the loss's Hessian
(zoo.instruments.sharpness), before every ``sharpness_every``-th update, on that update's own batch,
in Python between two calls of the train function (see :meth:`GradientMonitor._read_then_train`).
"""
from __future__ import annotations

import inspect
import math
import numbers
import sys
import tempfile
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from zoo.errors import InputError
from zoo.gradient_monitor import _keras
from zoo.gradient_monitor.backends import monitor_class
from zoo.gradient_monitor.hooks import Hooks, inner, loss_scale, skips_nonfinite
from zoo.instruments import graph_stats
from zoo.records import posedness
from zoo.instruments.discover import Found, SelectionError, chosen, discover
from zoo.instruments import ActivationStats, GradientHistograms, GradientThroughTime, Probe, TargetRange
from zoo.instruments.targets import TARGET_SUMMARY
from zoo.instruments.meter import Meter
from zoo.records.recorder import Recorder
from zoo.instruments.sharpness import SharpnessMeter, SharpnessSeries
from zoo.instruments.sharpness_record import FILE as SHARPNESS_FILE, FOLDER as SHARPNESS_FOLDER, SharpnessRecord
from zoo.records.summary import describe_progress, description, headline, progress, sharpness_summary, summarize
from zoo.records.verdict import judge_run
from zoo.runtime.stopping import deferred
from zoo.tracking.memory import MemorySink
from zoo.tracking import store
from zoo.tracking.mlflow_sink import MlflowSink

PREFIX_BESIDE_OTHERS = "zoo/"  # metric names in a run the monitor did not start
RING_BYTES = 64 * 2**20        # the most the rings grow to, to hold an epoch of fit
MAX_CAPACITY = 2**20           # rows a ring may be asked to hold between two drains

GRADIENT_DATA = "the data loss's gradient (Keras' train_step; the weight penalties' gradient kept apart)"
GRADIENT_APPLIED = "the gradient the model's train_step gives the optimizer (unscaled)"


class GradientMonitor(keras.callbacks.Callback):
    """Per-layer gradient statistics of any Keras model during ``fit`` or a custom loop.

    The model trains exactly as without it: the monitor measures the gradients its own
    ``train_step`` hands the optimizer (see the module for how).

    Args:
        histogram_every: steps between probe steps (gradient histograms, activation statistics,
            gradient through time, forget gates), a whole number >= 1.
        log_every: steps between MLflow points of the per-step series (the raw statistics keep
            every step), >= 1.
        baseline: the best constant predictor's training loss (``zoo.data.constant_baseline``
            computes it for a zoo dataset), for ``progress``; None: no progress.
        mlflow: "auto" (into the active MLflow run if there is one, else memory), True (an
            active run or ``run_id`` is required) or False (memory only).
        run_id: an existing MLflow run to log into (with ``tracking_uri``, the store holding it).
        tracking_uri: the store of ``run_id``; needs ``run_id``.
        capacity: rows the ring buffer holds between two drains (in ``fit`` it grows to hold an
            epoch, up to 64 MB of rows), 1 ... 2**20.
        verbose: print the verdict line at the end.
        variables: other trainable variables whose gradient norm is recorded besides the
            kernels (which are always measured: the verdict reads them): "all", a name or list
            of names (``fnmatch`` patterns, matched against the record name such as
            ``dense_1/bias``, the variable's path and its layer's name), or a predicate
            ``callable(variable) -> bool``.
        elements: variables recorded element by element every step, chosen the same way; each
            at most 256 elements, 4,096 in all.
        optimizer: the optimizer to measure at (default: the model's); for a custom step that
            updates through another optimizer object.
        sharpness_every: in ``fit``, read the sharpness λ_max (the largest eigenvalue of the
            loss's Hessian with respect to the trainable weights; for Adam and RMSprop the
            preconditioned one, Cohen et al. 2022) before update 1 and every
            ``sharpness_every``-th update after it, a whole number >= 1; None (the default):
            never. Each reading is taken on the batch of the update it precedes, at the weights
            that update starts from, with the model in inference mode (dropout off, batch norm
            on its moving statistics) and inside ``keras.StatelessScope``, by the warm-started
            block power iteration of zoo.instruments.sharpness.SharpnessMeter (at most 20 block
            iterations of 3 Hessian-vector products); the loss is ``model.compute_loss`` (the
            compiled loss plus ``model.losses``). The readings go to MLflow (or memory) as
            ``3 sharpness/lambda_max`` (``preconditioned_lambda_max``) beside
            ``3 sharpness/threshold``, the optimizer's stability threshold (2/η for gradient
            descent, 38/η for Adam at β₁ = 0.9), and into ``sharpness`` and
            ``stats/sharpness.npz`` at the end; a diverged run's verdict names the first reading
            beyond the threshold. The readings change no weight, optimizer slot, random seed or
            metric: the model trains as without them. Not in a custom loop (no batch reaches
            the monitor there).

    Raises:
        ValueError: an impossible argument, named in one line (before anything is built;
            ``sharpness_every``'s is zoo.InputError, gradzoo's one type of bad input, a ValueError);
            ``variables`` / ``elements`` naming no variable of the model (at the start of
            training).
    """

    def __new__(cls, *args, **kwargs):
        # on JAX and PyTorch, GradientMonitor(...) is the same monitor fed by their steps
        if cls is GradientMonitor and keras.backend.backend() != "tensorflow":
            cls = monitor_class()
        return super().__new__(cls)

    def __init__(self, histogram_every: int = 10, log_every: int = 20, baseline: float | None = None,
                 mlflow="auto", run_id: str | None = None, tracking_uri: str | None = None,
                 capacity: int = 256, verbose: bool = True, variables=None, elements=None, optimizer=None,
                 sharpness_every: int | None = None):
        super().__init__()
        _check_arguments(histogram_every=histogram_every, log_every=log_every, capacity=capacity,
                         baseline=baseline, mlflow=mlflow, run_id=run_id, tracking_uri=tracking_uri,
                         verbose=verbose, variables=variables, elements=elements, optimizer=optimizer,
                         sharpness_every=sharpness_every)
        self.histogram_every, self.log_every, self.baseline = histogram_every, log_every, baseline
        self.mlflow, self.run_id, self.tracking_uri = mlflow, run_id, tracking_uri
        self.capacity, self.verbose = capacity, verbose
        self.variables, self.elements, self.optimizer = variables, elements, optimizer
        self.sharpness_every = sharpness_every
        self.sharpness: SharpnessRecord | None = None  # the readings, after finish (sharpness_every)
        self._sharpness: SharpnessSeries | None = None  # fit with sharpness_every: the readings so far
        self.found: Found | None = None
        self.meter: Meter | None = None
        self.hooks: Hooks | None = None
        self.recorder: Recorder | None = None
        self.sink = None
        self.stats = None
        self.verdict = None
        self.progress: tuple[str, float] | None = None
        self.gradient = ""              # which gradient grad_norm is, in words
        self.ill_posed: str | None = None  # why the loss cannot be read (zoo.records.posedness)
        self.skipped: dict[str, str] = {}
        self._seen = self._probes_seen = self._pending = 0
        self._attached = False  # attach() was called (whether or not the model could be instrumented)
        self._in_fit = False
        self._fit_rows = 0      # in fit: rows for an epoch (on_train_begin)
        self._functions = None  # fit: (ordinary, probe-step) train functions
        self._started = 0       # fit: steps the train function was called for so far (this epoch's end: exact)
        self._calls = 0         # fit: calls of the train function
        self._hooked = ""       # the optimizer the hooks are on, in words
        self._epoch_losses: list[float] = []  # fit: each epoch's loss as fit's logs give it

    # -- fit ---------------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        model = self.model
        spe = int(model.steps_per_execution)
        # a whole epoch fits in the ring when its length is known (drained at the epoch's end;
        # the batch hook then only counts), else it is drained when nearly full
        epoch = (self.params or {}).get("steps")
        self.capacity = max(self.capacity, 4 * spe)
        self._fit_rows = epoch + 2 * spe if epoch else 0
        self._in_fit, self._started, self._calls, self._epoch_losses = True, 0, 0, []
        if not model.built or not model.trainable_variables:
            # a Sequential without an Input, a subclass whose layers are made in __init__: on
            # TensorFlow, fit builds them while tracing its first step; build them before it
            model.train_function = self._first_call(model.train_function)
            return
        if not self.attach(model):
            return
        _keras.build_optimizer_first(model, self.hooks.optimizer if self.hooks is not None else None)
        self._functions = self.hooks.train_functions()
        model.train_function = self._functions[0]

    def _first_call(self, keras_function):
        """A train function for fit's first call on an unbuilt model: the model built from the
        batches' shapes (zoo.gradient_monitor._keras.build_from_batches), then attached and the first
        step run by the monitor's function, as if it had been built before fit."""
        def first_call(iterator):
            model = self.model
            try:
                _keras.build_from_batches(model, iterator.element_spec)
            except Exception as err:  # fit then builds it as without the monitor
                warnings.warn(f"GradientMonitor: cannot instrument {model.name} (the model is not built and "
                              f"{type(err).__name__}: {err}); training goes on unmonitored")
                model.train_function = keras_function
                return keras_function(iterator)
            if not self.attach(model):
                model.train_function = keras_function
                return keras_function(iterator)
            self._functions = self.hooks.train_functions()
            self.on_train_batch_begin(0)  # what the first call's batch hook would have chosen
            return model.train_function(iterator)
        return first_call

    def on_train_batch_begin(self, batch, logs=None):
        if self._functions is None:
            return
        # a probe step is a step whose 0-based number is a multiple of histogram_every; one
        # call of the train function runs steps_per_execution of them, all probed if one is
        spe = int(self.model.steps_per_execution)
        first = self._started
        probing = (-first) % self.histogram_every < spe
        function = self._functions[1 if probing else 0]
        if self._sharpness is not None and (-first) % self.sharpness_every < spe:  # a reading is due in this call
            function = self._reading_call(function, first)
        self.model.train_function = function
        self._started += spe
        self._calls += 1

    def on_train_batch_end(self, batch, logs=None):
        # drain only when the next call of the train function could overwrite unread rows (not
        # every batch: a read costs a few eager ops; when the ring holds an epoch, at its end)
        spe = self.model.steps_per_execution if self.model is not None else 1
        self._pending += spe
        if self._pending + 2 * spe > self.capacity:
            self.collect()

    def on_epoch_end(self, epoch, logs=None):
        if self.recorder is None:
            return
        self.collect()
        self._started = self._seen  # the last call of an epoch may run fewer steps
        logs = logs or {}
        self._epoch_losses.append(float(logs.get("loss", math.nan)))
        val_loss = float(logs.get("val_loss", math.nan))
        val_metric = float(logs.get("val_accuracy", logs.get("val_acc", math.nan)))
        self.recorder.on_epoch_end(val_loss, val_metric)

    def on_train_end(self, logs=None):
        if self.meter is None:
            return
        # from the first moment: a Ctrl-C that lands in a weakref callback of the functions detach
        # drops is "ignored" by Python (lost: 2 of 8 trials), one recorded here is delivered after
        with deferred() as stops:
            self.detach()
            self._finish(stops)

    # -- any loop ----------------------------------------------------------------------------
    def attach(self, model, optimizer=None) -> bool:
        """Find what to measure in ``model`` and hook its optimizer (``optimizer``, else the
        monitor's, else ``model.optimizer``): every ``apply`` on it is then measured. Returns
        False (with a warning) when the model cannot be measured at all: it then trains as
        without the monitor.

        Raises:
            ValueError: ``variables`` / ``elements`` name no variable of the model.
        """
        self._attached = True
        optimizer = optimizer or self.optimizer or getattr(model, "optimizer", None)
        found = self._find(model, optimizer, needs_optimizer=self._in_fit)
        if found is None:
            return False
        self.skipped = dict(found.skipped)
        split = (self._in_fit and _keras.runs_keras_train_step(model) and _keras.runs_keras_compute_loss(model)
                 and (bool(model.losses) or any(getattr(v, "regularizer", None) for v in model.trainable_variables)))
        own_step = _keras.runs_keras_train_step(model)
        self.gradient = GRADIENT_DATA if split else GRADIENT_APPLIED
        instruments = self._instruments(model, found, own_step)
        self.meter = Meter(found.variables, found.kernel_index, found.kernels, (), split, instruments,
                           found.others, found.elements)
        self._sharpness = self._sharpness_series(model, optimizer)
        for what, why in self.skipped.items():
            warnings.warn(f"GradientMonitor: not measured: {what} ({why})")
        if not split and not own_step and self.verbose:
            print(f"GradientMonitor: measuring {self.gradient}: {type(model).__name__}.train_step is its own")
        self._make_rings()
        self.sink = self._open_sink(model)
        self.memory = MemorySink()  # the metrics as MLflow would get them, when it does not
        self.recorder = Recorder(self.meter, self.sink or self.memory, self.log_every)
        self.hooks = None
        if isinstance(optimizer, keras.optimizers.Optimizer):
            forward = any(isinstance(i, (ActivationStats, GradientThroughTime, TargetRange)) or i.taps()
                          for i in instruments)
            self.hooks = Hooks(model, optimizer, self._on_apply, self._probe_forward if forward else None, split)
            self.hooks.install()
            self._hooked = f"{type(optimizer).__name__} {optimizer.name!r}"
        return True

    def _find(self, model, optimizer, needs_optimizer: bool):
        """What to measure in ``model`` (zoo.instruments.discover, with ``variables`` and
        ``elements``) as ``self.found``; None, with a warning, when it cannot be measured (it
        then trains as without the monitor).

        Raises:
            SelectionError: ``variables`` / ``elements`` name no variable of the model.
        """
        try:
            if not model.built:
                raise ValueError("the model has no variables yet (build it first: call it on a batch)")
            if not model.trainable_variables:
                raise ValueError("the model has no trainable variables")
            found = discover(model)
            found.others, found.elements = chosen(model, found.kernel_index, self.variables, self.elements)
            if needs_optimizer and not isinstance(optimizer, keras.optimizers.Optimizer):
                raise ValueError("its optimizer is not a Keras 3 optimizer" if optimizer is not None
                                 else "it has no optimizer (compile it with one, or pass optimizer=)")
        except SelectionError:
            raise
        except Exception as err:
            warnings.warn(f"GradientMonitor: cannot instrument {model.name} "
                          f"({type(err).__name__}: {err}); training goes on unmonitored")
            self.found = self.meter = None
            return None
        self.found = found
        return found

    def detach(self) -> None:
        """Take the monitor's hooks off the model and its optimizer (``fit`` does it at its end;
        a custom loop may call it once it is done). The records stay."""
        if self.hooks is not None:
            self.hooks.remove()
            self.hooks = None
        if self._functions is not None and self.model is not None:
            self.model.train_function = None  # the next fit builds Keras' own again
            self._functions = None

    def _instruments(self, model, found: Found, own_step: bool) -> list:
        """What probe steps measure: everything ``discover`` found in ``fit``; in a custom loop
        (no forward pass to read) the gradient histograms only. The gradient through time needs
        the step's loss on the probe's forward pass: the model's compiled loss or its own
        ``compute_loss``."""
        out = []
        has_loss = _keras.compiled_loss(model) is not None or type(model).compute_loss is not keras.Model.compute_loss
        for inst in found.instruments:
            if isinstance(inst, GradientHistograms):
                out.append(inst)
            elif not self._in_fit:
                self.skipped[f"{type(inst).__name__}"] = "a custom loop gives the monitor no forward pass to read"
            elif isinstance(inst, GradientThroughTime) and not has_loss:
                self.skipped["gradient through time"] = "the model has no compiled loss for the probe's backward pass"
            else:
                out.append(inst)
        # what the compiled loss reads, for the ill-posed rule: Keras' own step, one output, a known loss
        single = not tf.nest.is_nested(getattr(model, "loss", None)) and len(getattr(model, "outputs", None) or [0]) == 1
        if self._in_fit and own_step and single and posedness.kind_of(getattr(model, "loss", None)):
            out.append(TargetRange())
        return out

    def _sharpness_series(self, model, optimizer) -> SharpnessSeries | None:
        """The sharpness readings of ``sharpness_every`` (fit with a Keras optimizer and a loss
        ``compute_loss`` computes), or None, with the reason in ``skipped``."""
        if not self.sharpness_every:
            return None
        has_loss = _keras.compiled_loss(model) is not None or type(model).compute_loss is not keras.Model.compute_loss
        why = ("a custom loop gives the monitor no batch to read it on" if not self._in_fit
               else "the model has no compiled loss or compute_loss to take the Hessian of" if not has_loss
               else "its optimizer is not a Keras 3 optimizer" if not isinstance(optimizer, keras.optimizers.Optimizer)
               else None)
        if why:
            self.skipped["sharpness"] = why
            return None
        meter = SharpnessMeter(self._sharpness_objective, model.trainable_variables)
        weights = meter.variables
        self._weights_finite = tf.function(lambda: tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in weights]))
        return SharpnessSeries(meter, inner(optimizer), int(self.sharpness_every))

    def _sharpness_objective(self, x, target):
        """The loss whose Hessian is read: ``model.compute_loss`` on the model's inference-mode
        prediction, in a ``keras.StatelessScope`` (any state the forward pass or the loss would
        change, a seed, a moving statistic, a loss tracker, is left as it was)."""
        y, sample_weight = target
        with keras.StatelessScope():
            y_pred = self.model(x, training=False)
            return self.model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=False)

    def _reading_call(self, function, first: int):
        """``fit``'s train function for a call with a sharpness reading due (see
        :meth:`_read_then_train`); ``first``: the 0-based number of its first step."""
        def train_function(iterator):
            return self._read_then_train(function, first, iterator)
        return train_function

    def _read_then_train(self, function, first: int, iterator):
        """One call of ``fit``'s train function ``function`` (Keras' own, around the model's own
        step), with a sharpness reading before each due update: the call's batches are taken
        from ``iterator`` here, one at a time, and before a due update λ_max is read on its
        batch, at the weights it starts from; then ``function`` runs that one step (Keras' train
        function runs its same compiled step on a batch given in Python). The step and its
        batches are those ``fit`` would have run; only the reading comes in between."""
        if not isinstance(iterator, tf.data.Iterator):  # a distributed iterator: its batches are per replica
            self.skipped["sharpness"] = f"fit's batches come from a {type(iterator).__name__}, not a tf.data iterator"
            warnings.warn(f"GradientMonitor: not measured: sharpness ({self.skipped['sharpness']})")
            self._sharpness = None
            return function(iterator)
        outputs = None
        for k in range(first, first + int(self.model.steps_per_execution)):
            batch = iterator.get_next_as_optional()
            if not batch.has_value():
                break
            data = batch.get_value()
            if k % self.sharpness_every == 0:
                self._read_sharpness(data)
            outputs = function([data])
        if outputs is None:
            raise StopIteration  # as Keras' own train function, at the end of the data
        return outputs

    def _read_sharpness(self, data) -> None:
        """One reading on the batch ``data`` before the next update (none once a weight is not
        finite: the run has diverged; the next reading then starts cold)."""
        series = self._sharpness
        if not bool(self._weights_finite()):
            series.meter.reset()
            return
        data = tf.nest.map_structure(lambda t: None if isinstance(t, tf.experimental.Optional) else t, data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        step = int(self._count.numpy()) + 1  # the row the next update gets
        metrics = series.read(step, x, (y, sample_weight))
        if metrics and not math.isfinite(series.rows[-1][1]):
            series.meter.reset()
        if metrics:
            (self.sink or self.memory).log_metrics(metrics, step)

    def _make_rings(self):
        meter = self.meter
        if self._fit_rows > self.capacity:  # in fit: room for an epoch, within RING_BYTES
            row_bytes = 8 * (meter.layout.width + meter.probe_layout.width / self.histogram_every)
            self.capacity = max(self.capacity, min(self._fit_rows, int(RING_BYTES // row_bytes)))
        cap, probe_cap = self.capacity, self._probe_capacity()
        self._rows = tf.Variable(tf.zeros([cap, meter.layout.width], tf.float64), trainable=False)
        self._probes = tf.Variable(tf.zeros([probe_cap, max(meter.probe_layout.width, 1)], tf.float64),
                                   trainable=False)
        self._probe_step = tf.Variable(tf.fill([probe_cap], tf.constant(-1, tf.int64)), trainable=False)
        self._count = tf.Variable(tf.constant(0, tf.int64), trainable=False)
        self._probe_count = tf.Variable(tf.constant(0, tf.int64), trainable=False)
        self._seen = self._probes_seen = self._pending = 0

    def observe(self, grads, variables=None, *, loss, apply=None, total=None, clipped=None, scale=None):
        """Measure one step of a custom (compiled) loop.

        Call it inside the step, after the gradients and instead of applying them (pass the
        update as ``apply``). The monitor also measures an ``optimizer.apply`` it has hooked
        without this call (then without the loss).

        Args:
            grads: the data loss's gradients of ``variables``, as your code holds them (of the
                scaled loss under mixed precision: they are unscaled by ``scale``).
            variables: the variables ``grads`` belong to, default the model's trainable ones.
            loss: the step's loss (unscaled).
            apply: a callable that applies the update (its size is then measured; without it
                the update's size is NaN).
            total: the gradient with a weight penalty's added, if it differs.
            clipped: what the optimizer receives after your clipping, if it differs.
            scale: the loss scale ``grads`` carry; default the hooked optimizer's (a
                LossScaleOptimizer's current scale), else none.

        Raises:
            RuntimeError: before ``attach``.
        """
        meter = self.meter
        if meter is None:
            raise RuntimeError("GradientMonitor.observe: call monitor.attach(model) first, outside the compiled step")
        if scale is None and self.hooks is not None:
            scale = loss_scale(self.hooks.optimizer)
        grads = [_unscale(g, scale) for g in grads]
        total = None if total is None else [_unscale(g, scale) for g in total]
        clipped = None if clipped is None else [_unscale(g, scale) for g in clipped]
        if variables is not None and [id(v) for v in variables] != [id(v) for v in meter.variables]:
            order = {id(v): i for i, v in enumerate(variables)}
            grads, total, clipped = (None if gs is None else [gs[order[id(v)]] if id(v) in order else None
                                                              for v in meter.variables]
                                     for gs in (grads, total, clipped))
        reading = meter.before_update(loss=tf.cast(loss, tf.float32), grads=grads, total=total, clipped=clipped)
        if apply is None:
            packed = meter.without_update(reading)
        else:
            if self.hooks is not None:
                self.hooks.trace.observing = True  # this apply is measured here, not again by the hook
            try:
                apply()  # after the reads, in program order (tf.function keeps it for variables)
            finally:
                if self.hooks is not None:
                    self.hooks.trace.observing = False
            packed = meter.after_update(reading)
        self._write(packed, lambda: self._histograms_only(grads), self._probe_due(always=False))

    def collect(self) -> int:
        """Move the rows the compiled steps wrote into the recorder.

        Returns:
            How many rows were new.

        Raises:
            RuntimeError: before ``attach``.
        """
        self._require_attached("collect")
        if self.meter is None or self.recorder is None:
            return 0  # the model could not be instrumented (warned): it trains unmonitored
        self._pending = 0
        count = int(self._count.numpy())
        new = count - self._seen
        if new <= 0:
            return 0
        if new > self.capacity:
            warnings.warn(f"GradientMonitor: {new - self.capacity} steps were overwritten before they "
                          f"were collected (capacity {self.capacity}); collect more often")
            self._seen = count - self.capacity
        steps = np.arange(self._seen, count)
        rows = tf.gather(self._rows, steps % self.capacity).numpy()
        probed = {}
        probe_count = int(self._probe_count.numpy())
        if probe_count > self._probes_seen:
            slots = np.arange(max(self._probes_seen, probe_count - self._probe_capacity()), probe_count)
            slots = slots % self._probe_capacity()
            found = tf.gather(self._probes, slots).numpy()[:, :self.meter.probe_layout.width]
            probed = dict(zip(tf.gather(self._probe_step, slots).numpy().tolist(), found))
            self._probes_seen = probe_count
        for step, row in zip(steps.tolist(), rows):
            self.recorder.on_step(row, probed.get(step), step=step + 1)
        self._seen = count
        return new

    def _require_attached(self, what: str) -> None:
        if not self._attached:
            raise RuntimeError(f"GradientMonitor.{what}: call monitor.attach(model) first (fit does it itself)")

    def _probe_capacity(self) -> int:
        return self.capacity // self.histogram_every + 2 * int(getattr(self.model, "steps_per_execution", 1) or 1)

    def finish(self):
        """Judge the steps recorded so far; draw, write and (MLflow) log everything; the sink is
        closed. Safe to call once after training.

        Raises:
            RuntimeError: before ``attach``.
        """
        self._require_attached("finish")
        with deferred() as stops:  # a Ctrl-C now is delivered once the records are whole
            self._finish(stops)

    def _finish(self, stops: list[str]) -> None:
        if self.recorder is None:
            return
        self.collect()
        if self._in_fit and self._seen == 0 and self._calls:
            warnings.warn(f"GradientMonitor: no step of {self.model.name}'s train_step reached the optimizer "
                          f"the monitor hooked ({self._hooked}); pass optimizer= the one your train_step applies")
        try:
            self._judge_and_write(stops)
        finally:
            self.recorder = None  # written (or failed): finish does not write twice
        if self.verbose:
            print(f"GradientMonitor: {self.summary_line()}")

    def _judge_and_write(self, stops: list[str]) -> None:
        """Judge the recorded steps and write everything (MLflow or memory); ``stops``: the
        signals received meanwhile (zoo.runtime.stopping.deferred), named on the run if any came."""
        recorder, sink = self.recorder, self.sink
        recorder.flush()
        self.stats = stats = recorder.stats()
        self.sharpness = self._sharpness.record() if self._sharpness is not None else None
        self.verdict = verdict = judge_run(stats, self.sharpness)
        self.ill_posed = self._ill_posed(stats)
        loss = self._last_epoch_loss(stats)
        if self.baseline and loss is not None:
            self.progress = progress(loss, float(self.baseline), self.ill_posed)
        elif self.ill_posed:
            self.progress = ("ill-posed", math.nan)
        final = {f"health/{k}": v for k, v in verdict.numbers.items()}
        final.update(summarize(stats))
        if self.sharpness is not None:
            final.update(sharpness_summary(self.sharpness, stats))
            with tempfile.TemporaryDirectory() as tmp:  # its own file, as a zoo run's
                self.sharpness.save(Path(tmp) / SHARPNESS_FILE)
                (sink or self.memory).log_artifact(Path(tmp) / SHARPNESS_FILE, SHARPNESS_FOLDER)
        if self.progress:
            final["progress/train_loss_ratio"] = self.progress[1]
        tags = {"zoo.verdict": verdict.label, "zoo.verdict_reason": verdict.reason,
                "zoo.headline": self.headline, "zoo.steps": str(int(stats.step[-1]) if len(stats.step) else 0),
                "zoo.monitor_gradient": self.gradient}
        if self.progress:
            tags["zoo.progress"] = self.progress[0]
        if verdict.event is not None:
            tags["zoo.event"] = verdict.event.text()[:5000]
        if self.skipped:
            tags["zoo.monitor_skipped"] = "; ".join(f"{k}: {v}" for k, v in self.skipped.items())[:5000]
        silent = zero_gradient_kernels(stats)
        if silent:  # the verdict reads their zeros as a gradient that vanished: say it may not be one
            tags["zoo.zero_gradient_kernels"] = ", ".join(silent)[:5000]
            warnings.warn(f"GradientMonitor: {', '.join(silent)} had a gradient of exactly 0 at every step, which "
                          f"the verdict ({verdict.label}) counts as a gradient that vanished there. If it feeds "
                          "an output without a loss, or the optimizer does not update it, freeze it "
                          f"(model.get_layer({silent[0]!r}).trainable = False) and it is not measured; "
                          "otherwise the gradient stopped on the way (dead ReLUs, or below float32's least value)")
        if sink is None:  # memory: the numbers and tags; the pictures on demand (figure())
            self.memory.log_metrics(final, int(len(stats.step)))
            self.memory.set_tags(tags)
            return
        from zoo.report import run_report

        sink.log_metrics(final, int(len(stats.step)))
        run_report.write_records(sink, stats, verdict, self._title())
        if not sink.has_description():  # the user's run: its own description stays
            tags["mlflow.note.content"] = description(verdict, *(self.progress or (None, None)), self.ill_posed)
        if stops:  # the process is being stopped: the records are whole, the run's end is its owner's
            tags.update({"zoo.outcome": "killed", "zoo.killed": stops[0]})
        sink.set_tags(tags)
        sink.finish("FINISHED")

    def _ill_posed(self, stats) -> str | None:
        """Why the loss cannot be read (zoo.records.posedness), or None: targets outside what the
        compiled loss reads (probe steps of Keras' own step), or a recorded loss below its floor
        (of each loss, or of their sum for several outputs)."""
        spec = getattr(self.model, "loss", None)
        losses = [l for l in tf.nest.flatten(spec) if l is not None] if spec is not None else []
        values = stats.loss[~stats.skipped.astype(bool)] if len(stats.loss) else np.zeros(0)
        values = values[np.isfinite(values)]
        if len(losses) == 1:
            return posedness.ill_posed(losses[0], targets=self._targets(), values=values, classes=self._classes())
        floors = [posedness.floor(l) for l in losses]
        if losses and values.size and all(f is not None for f in floors):
            low = sum(floors)
            if values.min() < low - posedness.FLOOR_TOLERANCE * (1 + abs(low)):
                return f"the loss fell to {values.min():.4g}, below its floor {low:.4g} (the sum of its outputs' floors)"
        return None

    def _targets(self):
        """The targets the loss read on the probe steps, as one zoo.records.posedness.Targets,
        or None when they were not read."""
        layout = self.meter.probe_layout
        if "targets" not in {f.name for f in layout.fields} or not self.recorder.probes:
            return None
        t = layout.unpack(np.stack(self.recorder.probes))["targets"]
        column = {name: t[:, i] for i, name in enumerate(TARGET_SUMMARY)}
        rows = column["row_low"]
        return posedness.Targets(
            float(np.nanmin(column["low"])), float(np.nanmax(column["high"])), bool(np.all(column["integral"])),
            bool(np.all(column["finite"])), int(np.sum(column["zeros"])),
            None if np.all(np.isnan(rows)) else float(np.nanmin(rows)),
            None if np.all(np.isnan(rows)) else float(np.nanmax(column["row_high"])))

    def _classes(self) -> int | None:
        """The units of a single-output model's head (a sparse cross-entropy's classes), or None."""
        outputs = getattr(self.model, "outputs", None) or []
        return int(outputs[0].shape[-1]) if len(outputs) == 1 and outputs[0].shape[-1] else None

    def _last_epoch_loss(self, stats) -> float | None:
        """The last epoch's mean training loss over the steps the optimizer applied: the
        recorded per-step loss (the data loss, or the loss the step handed ``scale_loss``), else
        the epoch's loss as ``fit``'s logs give it (the model's own loss tracker)."""
        if len(stats.loss):
            start = int(np.searchsorted(stats.step, stats.epoch_step[-2], side="right")) if len(stats.epoch_step) > 1 else 0
            applied = stats.loss[start:][~stats.skipped[start:]]
            if len(applied) and not np.all(np.isnan(applied)):
                return float(np.mean(applied))
        if self._epoch_losses and not math.isnan(self._epoch_losses[-1]):
            return self._epoch_losses[-1]
        return None

    # -- results -----------------------------------------------------------------------------
    @property
    def headline(self) -> str:
        """'healthy · learning': the verdict, the progress (with ``baseline``) and the first
        gradient event, as a run's (zoo.records.summary.headline); empty before ``finish``."""
        if not self.verdict:
            return ""
        return headline(self.verdict.label, self.progress[0] if self.progress else None, self.verdict.event)

    def summary_line(self) -> str:
        """The line ``finish`` prints: steps, the verdict with its reason, the progress, the
        first gradient event."""
        steps = int(self.stats.step[-1]) if len(self.stats.step) else 0
        lost = steps - len(self.stats.step)
        skipped = int(np.sum(self.stats.skipped))
        line = (f"{steps} steps{f' ({lost} not recorded: the buffer overflowed)' if lost else ''}"
                f"{f', {skipped} skipped by the loss scaler' if skipped else ''}; "
                f"verdict {self.verdict.label} ({self.verdict.reason})")
        if self.progress:
            line += "; progress " + describe_progress(*self.progress, self.ill_posed).replace(
                "final train loss", "last epoch's training loss")
        if self.verdict.event is not None:
            line += "; " + self.verdict.event.text()
        silent = zero_gradient_kernels(self.stats)
        if silent:
            line += f"; gradient exactly 0 at every step in {', '.join(silent)} (see the warning)"
        return line

    def figure(self):
        """The gradient-flow figure (matplotlib) of the steps recorded so far.

        Raises:
            RuntimeError: nothing was recorded (never attached, or the model could not be
                instrumented: its warning said why).
        """
        from zoo.report import plots

        if self.stats is None and self.recorder is None:
            raise RuntimeError("GradientMonitor.figure: nothing recorded (the monitor was not attached to a "
                               "model, or could not instrument it: see its warning)")

        stats = self.stats if self.stats is not None else self.recorder.stats()
        return plots.gradient_flow_figure(stats, self.verdict or judge_run(stats), self._title())

    def _title(self) -> str:
        return f"{self.model.name}: gradients under zoo.GradientMonitor" if self.model is not None else ""

    # -- inside the graph --------------------------------------------------------------------
    def _on_apply(self, grads, variables, apply):
        """The hooked ``optimizer.apply(grads, variables)``: measure, apply (``apply()``), write."""
        meter, hooks = self.meter, self.hooks
        at = {id(v): i for i, v in enumerate(variables)}
        if not any(id(v) in at for v in meter.variables):
            return apply()  # an update of other variables (another model's, through a shared optimizer)
        optimizer = hooks.optimizer
        scale = loss_scale(optimizer)
        if scale is not None:
            scale = tf.convert_to_tensor(scale)  # the scale the grads carry: read before apply changes it

        def ours(gs):
            return [gs[at[id(v)]] if id(v) in at else None for v in meter.variables]

        unscaled_all = [_unscale(g, scale) for g in grads]
        total = ours(unscaled_all)
        clipped = _keras.clip(inner(optimizer), unscaled_all)
        clipped = None if clipped is None else ours(clipped)
        data = hooks.data_gradients(meter.variables)
        loss, data_loss = hooks.step_loss()
        nan = tf.constant(math.nan, tf.float32)
        step_loss = nan if loss is None else tf.cast(loss, tf.float32)
        monitored_loss = step_loss if data_loss is None else tf.cast(data_loss, tf.float32)
        penalty = None if data_loss is None or loss is None else step_loss - monitored_loss
        skipped = tf.logical_not(optimizer.check_finite(grads)) if skips_nonfinite(optimizer) else None
        monitored = data if data is not None else total
        # an ordinary step of fit measures what the verdict reads every step, in the fewest ops;
        # probe steps (and a custom loop's one compiled step) measure everything
        light = self._in_fit and not hooks.trace.probing
        reading = meter.before_update(
            loss=monitored_loss, penalty=penalty, objective=monitored_loss if loss is not None else tf.zeros(()),
            grads=monitored, total=total, clipped=clipped, light=light)
        apply()  # the user's own call, untouched; after the reads, in program order
        packed = meter.after_update(reading, skipped)
        forward = hooks.trace.probe or {}
        hooks.trace.loss = None  # used: a later apply in the same step has no loss of its own

        def probe_row():
            measured = dict(forward)
            for inst in meter.instruments:
                if isinstance(inst, GradientHistograms):
                    grads = [tf.zeros(v.shape, v.dtype) if g is None else g  # no gradient (an output without a loss): zeros
                             for g, v in zip(meter.kernels_of(monitored), meter.kernels_of(meter.variables))]
                    measured.update(inst.compute(Probe(None, {}, [], grads)))
            return graph_stats.pack(meter.probe_layout, measured)

        if not self._in_fit:  # a custom loop: one compiled step, so the probe steps are a tf.cond
            self._write(packed, probe_row, self._probe_due(always=False))
        elif hooks.trace.probing:
            self._write(packed, probe_row, self._probe_due())
        else:
            self._write(packed)

    def _probe_due(self, always: bool = True):
        """Is the step being written a probe step? None when every step of the function being
        traced is one (fit's probe function with steps_per_execution 1: fit calls it only then);
        else a boolean tensor (several steps a call, or a custom loop)."""
        if always and int(getattr(self.model, "steps_per_execution", 1) or 1) == 1:
            return None
        return tf.equal(tf.math.floormod(self._count.read_value(), self.histogram_every), 0)

    def _probe_forward(self, data):
        """The fields of the instruments that read the forward pass (all but the histograms),
        for one batch, from a forward and backward pass that leaves every state as it was
        (``keras.StatelessScope``); the gradient is that of the loss ``compute_loss`` gives,
        scaled and unscaled as the step's own is under a loss scaler."""
        meter = self.meter
        fields = [f for inst in meter.instruments if not isinstance(inst, GradientHistograms) for f in inst.fields]
        due = self._probe_due()
        if due is None:
            return self._forward_fields(data)
        return tf.cond(due, lambda: self._forward_fields(data),
                       lambda: {f.name: tf.zeros(f.shape, graph_stats.PACKED_DTYPE) for f in fields})

    def _forward_fields(self, data) -> dict:
        model, meter, found = self.model, self.meter, self.found
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        needs_grads = any(isinstance(i, GradientThroughTime) for i in meter.instruments)
        scale = loss_scale(self.hooks.optimizer)
        with keras.StatelessScope():
            with tf.GradientTape() as tape:  # variables watched: every op to a tap is recorded
                if needs_grads:
                    tape.watch(tf.nest.flatten(x))
                y_pred, taps = found.forward(x, training=True)
                loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight) if needs_grads else None
                if loss is not None and scale is not None:
                    loss = tf.cast(loss, tf.float32) * tf.cast(scale, tf.float32)
            wrt = meter.wrt(_first(x), taps)
            wrt_grads = tape.gradient(loss, wrt) if wrt and loss is not None else [None] * len(wrt)
        wrt_grads = meter.split_wrt([_unscale(g, scale) for g in wrt_grads])
        measured = {}
        for inst, mine in zip(meter.instruments, wrt_grads):
            if not isinstance(inst, GradientHistograms):
                values = inst.compute(Probe(_first(x), taps, mine, [], y))
                measured.update({k: tf.cast(v, graph_stats.PACKED_DTYPE) for k, v in values.items()})
        return measured

    def _write(self, packed, probe_fn=None, due=None):
        """Store one step's row in the ring and, with ``probe_fn``, its probe row: always when
        ``due`` is None, else where the boolean tensor ``due`` is true (a ``tf.cond``)."""
        step = self._count.read_value()
        self._rows.scatter_nd_update([[tf.math.floormod(step, self.capacity)]], [packed])

        def probe():
            slot = tf.math.floormod(self._probe_count.read_value(), self._probe_capacity())
            self._probes.scatter_nd_update([[slot]], [tf.reshape(probe_fn(), [-1])])
            self._probe_step.scatter_nd_update([[slot]], [step])
            self._probe_count.assign_add(1)
            return tf.constant(True)

        if probe_fn is not None and self.meter.probe_layout.width:
            if due is None:
                probe()
            else:
                tf.cond(due, probe, lambda: tf.constant(False))
        self._count.assign_add(1)

    def _histograms_only(self, grads):
        """A custom loop's probe step: the gradient histograms (the other instruments need the
        forward pass and are not in a custom loop's meter)."""
        measured = {}
        for inst in self.meter.instruments:
            measured.update(inst.compute(Probe(None, {}, [], self.meter.kernels_of(grads))))
        return graph_stats.pack(self.meter.probe_layout, measured)

    def _open_sink(self, model):
        """Where the records go: an MLflow sink on an existing run, or None (memory only)."""
        if self.mlflow is False:
            return None
        if self.run_id or "mlflow" in sys.modules or self.mlflow is True:
            import mlflow


            active = mlflow.active_run()
            run_id = self.run_id or (active.info.run_id if active is not None else None)
            if run_id:
                uri = self.tracking_uri or mlflow.get_tracking_uri()
                if self.run_id:  # the user's id: refuse one the store does not have, in one line
                    _check_store(uri)
                    try:
                        mlflow.MlflowClient(uri).get_run(run_id)
                    except mlflow.exceptions.MlflowException as err:
                        raise ValueError(f"GradientMonitor: run_id {run_id!r} is not a run of {uri} "
                                         f"({str(err).splitlines()[0][:200]})") from None
                return MlflowSink.attached(uri, run_id, PREFIX_BESIDE_OTHERS)
            if self.mlflow is True:
                raise ValueError("GradientMonitor(mlflow=True): no active MLflow run; start one "
                                 "(mlflow.start_run()) or pass run_id=")
        return None


# __new__ (the backend switch) would show help(), IDEs and inspect.signature (*args, **kwargs)
_init = inspect.signature(GradientMonitor.__init__)
GradientMonitor.__signature__ = _init.replace(parameters=list(_init.parameters.values())[1:])


def zero_gradient_kernels(stats) -> list[str]:
    """The kernels whose recorded gradient norm is exactly 0 at every recorded step (none
    without steps)."""
    if not len(stats.step):
        return []
    zero = np.all(np.asarray(stats.grad_norm) == 0, axis=0)
    return [str(name) for name, z in zip(stats.layers, zero) if z]


def _check_arguments(*, histogram_every, log_every, capacity, baseline, mlflow, run_id, tracking_uri, verbose,
                     variables, elements, optimizer, sharpness_every=None):
    """Refuse an impossible argument with one line naming it (before anything is built)."""
    for name, value in (("histogram_every", histogram_every), ("log_every", log_every), ("capacity", capacity)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"GradientMonitor: {name} must be a whole number >= 1, got {value!r}")
    if sharpness_every is not None and (isinstance(sharpness_every, bool)
                                        or not isinstance(sharpness_every, numbers.Integral) or sharpness_every < 1):
        raise InputError(f"GradientMonitor: sharpness_every must be a whole number >= 1 or None (off), "
                         f"got {sharpness_every!r}")
    if capacity > MAX_CAPACITY:
        raise ValueError(f"GradientMonitor: capacity must be at most {MAX_CAPACITY:,} rows (collect more often), "
                         f"got {capacity!r}")
    if baseline is not None and (isinstance(baseline, bool) or not isinstance(baseline, numbers.Real)
                                 or not math.isfinite(baseline) or baseline <= 0):
        raise ValueError(f"GradientMonitor: baseline must be a loss > 0 (the best constant predictor's) "
                         f"or None, got {baseline!r}")
    if not (mlflow is True or mlflow is False or mlflow == "auto"):
        raise ValueError(f"GradientMonitor: mlflow must be 'auto', True or False, got {mlflow!r}")
    for name, value in (("run_id", run_id), ("tracking_uri", tracking_uri)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValueError(f"GradientMonitor: {name} must be a non-empty string or None, got {value!r}")
    if not isinstance(verbose, bool):
        raise ValueError(f"GradientMonitor: verbose must be True or False, got {verbose!r}")
    if mlflow is False and (run_id or tracking_uri):
        raise ValueError("GradientMonitor: run_id / tracking_uri given with mlflow=False (records would go nowhere)")
    if tracking_uri and not run_id:
        raise ValueError("GradientMonitor: tracking_uri needs run_id= (the run of that store to log into); "
                         "for the active run, leave tracking_uri out")
    for name, value in (("variables", variables), ("elements", elements)):
        if not (value is None or value == "all" or callable(value) or isinstance(value, str)
                or (isinstance(value, (list, tuple)) and value and all(isinstance(v, str) and v for v in value))):
            raise ValueError(f"GradientMonitor: {name} must be 'all', a name, a non-empty list of names or a "
                             f"predicate, got {value!r}")
    if optimizer is not None and not isinstance(optimizer, keras.optimizers.Optimizer):
        raise ValueError(f"GradientMonitor: optimizer must be a Keras 3 optimizer, got {type(optimizer).__name__}")


def _check_store(uri: str) -> None:
    """The store of a given ``run_id`` answers at once (MLflow's client retries an HTTP store
    for minutes, and opening a missing sqlite file creates an empty store). Raises ValueError."""
    try:
        if uri.startswith(("http://", "https://")):
            store.check_server(uri)
        elif uri.startswith("sqlite:"):
            path = store.sqlite_path(uri)
            if path is not None and not path.is_file():
                raise store.StoreError(f"{path} does not exist")
            store.check_for_reading(uri)
    except store.StoreError as err:
        raise ValueError(f"GradientMonitor: tracking_uri {uri!r}: {err}") from None


def _first(x):
    return tf.nest.flatten(x)[0]


def _unscale(g, scale):
    if g is None or scale is None:
        return g
    if isinstance(g, tf.IndexedSlices):
        return tf.IndexedSlices(g.values / tf.cast(scale, g.values.dtype), g.indices, g.dense_shape)
    return g / tf.cast(scale, g.dtype)
