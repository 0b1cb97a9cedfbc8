"""The zoo's train step: forward, objective, gradients, penalty, clip, apply; the measuring is
the monitor's (zoo.instruments.meter), as in a user's ``fit`` under ``zoo.GradientMonitor``.

``_step`` is the whole algorithm and reads top to bottom. The gradient it monitors is the
gradient of the *data* objective (the main head's loss plus the weighted auxiliary losses):
that is what vanishes or explodes. A weight penalty's gradient is added to it for the update
(as Keras would) and its norm is kept as ``grad_norm_total``, but it is never mistaken for
gradient flow: an L1 penalty gives the first layer a gradient of its own whatever reaches it
from the loss. The step returns one packed vector (``zoo.instruments.layout`` names its fields);
on every ``histogram_every``-th step a second compiled variant also runs the instruments of
``zoo.instruments`` and returns their fields packed in a second vector. Per-element
gradients never leave the graph.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from zoo.models import blocks
from zoo.models.roles import ATTRIBUTE, roles_of
from zoo.instruments.discover import discover
from zoo.instruments import ActivationStats, ModelView, instruments_for
from zoo.instruments.layout import kernel_name
from zoo.instruments.meter import Meter
from zoo.records.posedness import kind_of

LOSSES = {
    "classification": lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    "regression": lambda: keras.losses.MeanSquaredError(),
}


def batch_spec(x, y) -> tuple:
    """Signature of (inputs, targets) batches with an open batch dimension; ``x`` and ``y`` are
    arrays, or lists / dicts of arrays for models with several inputs or outputs."""
    def spec(a):
        return tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(a.dtype))
    return tf.nest.map_structure(spec, x), tf.nest.map_structure(spec, y)


def is_zoo_model(model) -> bool:
    """Built by a zoo builder (its roles attached: zoo.models.roles)."""
    return getattr(model, ATTRIBUTE, None) is not None


def _activation_of(layer) -> str | None:
    """"softmax" or "sigmoid" when ``layer`` applies it last (its outputs are probabilities),
    else None."""
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    name = getattr(getattr(layer, "activation", None), "__name__", None)
    return name if name in ("softmax", "sigmoid") else None


def _ends_in(model, activation: str) -> bool:
    """Does the model's last layer apply ``activation`` (softmax, sigmoid): are its outputs
    probabilities rather than logits?"""
    layers = getattr(model, "layers", None) or []
    return bool(layers) and _activation_of(layers[-1]) == activation


# Keras' cross-entropies by name, with the activation that turns logits into what they expect
PROBABILITY_LOSSES = {
    "sparse_categorical_crossentropy": (keras.losses.SparseCategoricalCrossentropy, "softmax"),
    "categorical_crossentropy": (keras.losses.CategoricalCrossentropy, "softmax"),
    "binary_crossentropy": (keras.losses.BinaryCrossentropy, "sigmoid"),
}


def _named_loss(model, name):
    """A loss given by name, as Keras reads it; a cross-entropy (:data:`PROBABILITY_LOSSES`)
    from logits when the model's last layer does not apply the softmax or sigmoid it expects.
    By name, Keras' functions take the outputs as probabilities (``from_logits=False``): on a
    model that ends in logits (the zoo's, and most) the loss was then wrong, 10.3 where it is
    2.33 for an untrained 10-class net, and so were its gradients."""
    if isinstance(name, str) and name in PROBABILITY_LOSSES:
        cls, activation = PROBABILITY_LOSSES[name]
        return cls(from_logits=not _ends_in(model, activation))
    return keras.losses.get(name)


def _default_loss(model, task: str):
    """The task's loss for a model with none: mean squared error for regression; for
    classification binary cross-entropy when the model ends in a sigmoid or in one unit (from
    logits unless the sigmoid is there), else sparse categorical cross-entropy (from logits unless
    the model ends in a softmax)."""
    if task == "regression":
        return keras.losses.MeanSquaredError()
    outputs = _flat_outputs(model)
    one_unit = len(outputs) == 1 and outputs[0][1] == 1
    if _ends_in(model, "sigmoid") or one_unit:
        return keras.losses.BinaryCrossentropy(from_logits=not _ends_in(model, "sigmoid"))
    return _named_loss(model, "sparse_categorical_crossentropy")


def data_loss(model, task: str, loss=None):
    """(callable(y_true, y_pred) -> scalar, what it is in words): the data loss of any model,
    over its outputs' structure with Keras' own semantics (keras CompileLoss: one loss for every
    output, or a list / dict of them, and the compiled ``loss_weights``).

    ``loss``: a Keras loss name (a cross-entropy from logits unless the model's last layer
    applies the softmax or sigmoid it expects) or object; else the model's compiled loss; else the
    task's (:func:`_default_loss`). Raises ValueError for an unknown name."""
    spec, words = _loss_spec(model, task, loss)
    return _loss_callable(model, spec, loss), words


def _loss_callable(model, spec, given):
    """The model's own CompileLoss when it was compiled and no loss is given, else one of ``spec``."""
    from keras.src.trainers.compile_utils import CompileLoss

    if given is None and getattr(model, "_compile_loss", None) is not None:
        return model._compile_loss
    return CompileLoss(spec)


def _loss_spec(model, task: str, loss=None):
    """(the loss as the step uses it: a name, object, or list / dict of them; in words)."""
    if loss is not None:
        try:
            fn = tf.nest.map_structure(lambda one: _named_loss(model, one), loss)
        except ValueError as err:
            raise ValueError(f"unknown loss {loss!r}: {err}") from None
        return fn, f"{loss_words(fn)} (given)"
    if getattr(model, "_compile_loss", None) is not None:
        return getattr(model, "loss", None), f"{loss_words(getattr(model, 'loss', None))} (the model's compiled loss)"
    fn = _default_loss(model, task)
    return fn, f"{loss_words(fn)} (task {task})"


def loss_words(loss) -> str:
    """A loss (a name, a Keras loss object, or a list / dict of them) in words:
    "sparse_categorical_crossentropy from logits"."""
    if isinstance(loss, dict):
        return ", ".join(f"{k}: {loss_words(v)}" for k, v in loss.items())
    if isinstance(loss, (list, tuple)):
        return ", ".join(loss_words(v) for v in loss)
    if loss is None or isinstance(loss, str):
        return str(loss)
    config = loss.get_config() if hasattr(loss, "get_config") else {}
    name = config.get("name") or getattr(loss, "__name__", type(loss).__name__)
    return f"{name}{' from logits' if config.get('from_logits') else ''}"


# -- heads: what each output is, as its loss reads it -------------------------------------------

@dataclass(frozen=True)
class Head:
    """One output of a model as its loss reads it, decided once when the step is built.

    ``metric``: ``accuracy`` (argmax against integer labels: a sparse cross-entropy),
    ``categorical_accuracy`` (argmax against the target row's argmax: categorical
    cross-entropy, KL divergence), ``binary_accuracy`` (each unit thresholded at 0.5 on
    probabilities, 0 on logits, against targets > 0.5: binary cross-entropy, one unit or
    multi-label, as Keras' ``binary_accuracy``), or None (regression: no accuracy)."""
    name: str
    loss: str | None           # the loss's Keras name (zoo.records.posedness.kind_of); None: not known
    from_logits: bool | None   # the loss reads logits (None: the loss has no such option)
    units: int | None          # the output's last axis (None: not known)
    activation: str | None     # "softmax" | "sigmoid" when the output layer applies it last
    metric: str | None = None

    @property
    def words(self) -> str:
        act = f" {self.activation}" if self.activation else ""
        units = f"{self.units} unit{'s' * (self.units != 1)}" if self.units else "an output"
        return f"{self.name} ({units}{act})"


class LossMismatch(ValueError):
    """A loss that cannot be read on the head it is given, whatever the data (one line)."""


def _flat_outputs(model) -> list[tuple[str, int | None, str | None]]:
    """(name, units, activation) of each output, in the flattened order of the model's output
    structure (a dict's keys sorted, as tf.nest and Keras' CompileLoss flatten it)."""
    try:
        structure = model.output
    except (AttributeError, ValueError):
        try:
            outs = model.outputs
        except (AttributeError, ValueError):
            outs = None
        structure = (outs[0] if len(outs) == 1 else outs) if outs else None
    layers = list(getattr(model, "layers", None) or [])
    if structure is None:  # a subclassed model: its last layer stands for its one output
        last = layers[-1] if layers else None
        return [("output", getattr(last, "units", None), _activation_of(last) if last else None)]
    keys = sorted(structure) if isinstance(structure, dict) else None
    out = []
    for i, t in enumerate(tf.nest.flatten(structure)):
        layer = next((l for l in layers if _output_of(l) is t), None)
        name = keys[i] if keys else (layer.name if layer is not None else f"output_{i}")
        units = t.shape[-1] if len(t.shape) else None
        out.append((name, int(units) if units is not None else None, _activation_of(layer) if layer else None))
    return out


def _output_of(layer):
    try:
        return layer.output
    except (AttributeError, ValueError):  # a layer called more than once has no single output
        return None


def _loss_for(spec, i: int, name: str):
    """Output ``i``'s loss in a compile-style spec: one loss for all, a list by position, a dict
    by output name."""
    if isinstance(spec, dict):
        return spec.get(name)
    if isinstance(spec, (list, tuple)):
        return spec[i] if i < len(spec) else None
    return spec


# the losses that read class probabilities (or logits, with from_logits=True)
PROBABILITY_KINDS = ("binary_crossentropy", "binary_focal_crossentropy", "categorical_crossentropy",
                     "categorical_focal_crossentropy", "sparse_categorical_crossentropy")


def _from_logits(loss) -> bool | None:
    """Does ``loss`` read logits? Keras' by-name functions read probabilities; None for a loss
    with no such option."""
    config = loss.get_config() if hasattr(loss, "get_config") else {}
    if isinstance(config, dict) and "from_logits" in config:
        return bool(config["from_logits"])
    return False if kind_of(loss) in PROBABILITY_KINDS else None


def _metric_for(loss: str | None) -> str | None:
    if loss == "sparse_categorical_crossentropy":
        return "accuracy"
    if loss in ("categorical_crossentropy", "categorical_focal_crossentropy", "kl_divergence"):
        return "categorical_accuracy"
    if loss in ("binary_crossentropy", "binary_focal_crossentropy"):
        return "binary_accuracy"
    return None


def heads_of(model, spec) -> list[Head]:
    """Each output's :class:`Head`, for ``spec`` the loss as the step uses it (a name, object, or
    list / dict of them, as ``compile`` takes). Raises :class:`LossMismatch` for a loss that
    cannot be read on its head: a softmax cross-entropy over one unit (a softmax over one value
    is 1, so the loss is constant and its gradient exactly 0, whatever the weights)."""
    heads = []
    for i, (name, units, activation) in enumerate(_flat_outputs(model)):
        loss = _loss_for(spec, i, name)
        kind = kind_of(loss)
        head = Head(name, kind, _from_logits(loss) if loss is not None else None, units, activation, _metric_for(kind))
        if kind in ("sparse_categorical_crossentropy", "categorical_crossentropy",
                    "categorical_focal_crossentropy") and units == 1:
            raise LossMismatch(
                f"loss {kind} does not fit output {name}, which has 1 unit: a softmax over one value is 1, so the "
                "loss is constant and its gradient 0 whatever the weights; for two classes use binary_crossentropy "
                "(one sigmoid unit), for K classes an output of K units")
        heads.append(head)
    return heads


def heads_for(model, task: str, loss=None) -> list[Head]:
    """The heads of ``model`` as :class:`InstrumentedStep` reads them (``loss``, ``task``: as it
    takes them). Raises :class:`LossMismatch` for a loss that does not fit a head, ValueError
    for an unknown loss name."""
    if is_zoo_model(model) and loss is None:
        fn = LOSSES[task]()
        kind = kind_of(fn)
        return [Head("head", kind, _from_logits(fn), model.outputs[0].shape[-1], None, _metric_for(kind))]
    return heads_of(model, _loss_spec(model, task, loss)[0])


def metric_of(head: Head | None, y, out):
    """The metric of ``head`` (:attr:`Head.metric`) on one batch, as a float32 scalar; NaN
    without one."""
    if head is None or head.metric is None:
        return tf.constant(np.nan, tf.float32)
    out = tf.convert_to_tensor(out)
    if head.metric == "binary_accuracy":
        threshold = 0.0 if head.from_logits else 0.5
        truth = tf.reshape(tf.cast(y, tf.float32) > 0.5, tf.shape(out))
        return tf.reduce_mean(tf.cast(tf.equal(out > threshold, truth), tf.float32))
    predicted = tf.argmax(out, -1)
    if head.metric == "categorical_accuracy":
        labels = tf.argmax(y, -1)
    else:
        labels = tf.reshape(tf.cast(y, tf.int64), tf.shape(predicted))  # [n] or [n, 1] labels alike
    return tf.reduce_mean(tf.cast(tf.equal(predicted, labels), tf.float32))


def _first(x):
    return tf.nest.flatten(x)[0]


class InstrumentedStep:
    """Trains ``model`` one batch at a time. Auxiliary heads (``roles_of(model).aux_heads``,
    outputs 1..) add their loss times the roles' ``aux_weight`` to the objective and are logged
    apart; statistics, evaluation and inference follow the main head's path (output 0)."""

    def __init__(self, model: keras.Model, task: str, optimizer, clipping: tuple[str, float] | None,
                 input_spec: tuple, loss=None):
        self.model, self.task, self.optimizer, self.clipping = model, task, optimizer, clipping
        self.variables = list(model.trainable_variables)
        self.regularized = [i for i, v in enumerate(self.variables) if getattr(v, "regularizer", None)]
        self.skipped: dict[str, str] = {}  # what cannot be measured on this model -> why
        self.heads = heads_for(model, task, loss)  # first: a loss that does not fit a head is refused
        if is_zoo_model(model) and loss is None:
            self._zoo_model(model, task)
        else:
            self._any_model(model, task, loss)
        self.meter = Meter(self.variables, self.kernel_index, self.kernels, self.aux_heads,
                           bool(self.regularized), self.instruments)
        self.layout, self.probe_layout = self.meter.layout, self.meter.probe_layout
        optimizer.build(self.variables)
        # one trace each: the batch dimension is left open so the last, smaller batch reuses it;
        # no AutoGraph (the step has no tensor-dependent Python control flow): converting its
        # source was 4.5 of a 20-layer MLP's 6.2 s of tracing
        self.train = tf.function(lambda x, y: self._step(x, y, False), input_signature=input_spec, autograph=False)
        self.train_with_probes = tf.function(lambda x, y: self._step(x, y, True), input_signature=input_spec,
                                             autograph=False)
        self.evaluate = tf.function(self._evaluate, input_signature=input_spec, autograph=False)

    def _zoo_model(self, model, task):
        """A zoo builder's model: its roles say which layers are activations and which outputs
        are auxiliary heads; the monitored kernels are those of the main head's path."""
        roles = roles_of(model)
        self.main, self.loss_fn, self.loss_name = blocks.main_head(model), LOSSES[task](), task
        self.aux_heads, self.aux_weight = roles.aux_heads, roles.aux_weight
        on_main_path = {id(v) for v in self.main.trainable_variables}
        self.kernel_index = [i for i, v in enumerate(self.variables)
                             if kernel_name(v.path) and id(v) in on_main_path]
        self.kernels = tuple(kernel_name(self.variables[i].path) for i in self.kernel_index)
        main_layers = {layer.name for layer in self.main.layers}
        activations = [(model.get_layer(name), kind) for name, kind in roles.activations
                       if name in main_layers]
        self.activations = tuple((layer.name, kind) for layer, kind in activations)  # monitored
        self.instruments = instruments_for(ModelView(self.main, activations, self.kernels, roles.sequences))
        # a twin sharing every layer that returns the heads and what the instruments read, by name
        heads = {"head": model.outputs[0], **dict(zip(self.aux_heads, model.outputs[1:]))}
        taps = {k: t for inst in self.instruments for k, t in inst.taps().items()}
        self.forward = keras.Model(model.inputs, {**heads, **taps}, name=f"{model.name}_probe")

    def _any_model(self, model, task, loss):
        """A model built elsewhere (Sequential, functional, subclassed, nested; several inputs or
        outputs): what to measure is found by looking at it (zoo.instruments.discover), the data
        loss is ``loss``, else the model's compiled loss, else the task's (:func:`data_loss`)."""
        found = discover(model)
        self.main, self.aux_heads, self.aux_weight = model, (), 0.0
        self.loss_fn, self.loss_name = data_loss(model, task, loss)
        self.kernel_index, self.kernels, self.instruments = found.kernel_index, found.kernels, found.instruments
        self.skipped = dict(found.skipped)
        stats = [inst for inst in self.instruments if isinstance(inst, ActivationStats)]
        self.activations = tuple((layer.name, kind) for inst in stats for layer, kind in inst.layers)

        def forward(x, training):
            y_pred, taps = found.forward(x, training=training)
            return {"head": y_pred, **taps}

        self.forward = forward

    def _step(self, x, y, probing: bool):
        with tf.GradientTape() as tape:
            if probing:
                tape.watch(tf.nest.flatten(x))
            out = self.forward(x, training=True)
            loss = tf.cast(self.loss_fn(y, out["head"]), tf.float32)  # [] over the batch
            aux = [tf.cast(self.loss_fn(y, out[h]), tf.float32) for h in self.aux_heads]
            objective = loss + self.aux_weight * tf.add_n([0.0] + aux)  # the data objective
        wrt = self.meter.wrt(_first(x), out) if probing else []
        grads = tape.gradient(objective, self.variables + wrt)
        grads, wrt_grads = self._zero_if_unreached(grads[:len(self.variables)]), grads[len(self.variables):]
        penalty, total = self._add_penalty(grads)
        clipped = self._clip(total)
        # every number of a step but the update's size is read from the pre-update weights: the
        # reads come first in program order, which tf.function keeps for reads and writes of a
        # variable (automatic control dependencies); nothing else waits for the measurements
        reading = self.meter.before_update(
            loss=loss, metric=self._metric(y, out["head"]), penalty=penalty, aux=aux, objective=objective,
            grads=grads, total=total, clipped=clipped, probe=(_first(x), out, self.meter.split_wrt(wrt_grads)) if probing else None)
        self.optimizer.apply(clipped, self.variables)
        packed = self.meter.after_update(reading)
        return (packed, reading.probed) if probing else packed

    def _zero_if_unreached(self, grads):
        """A variable the objective does not reach has no gradient: it gets a zero one."""
        return [tf.zeros_like(v) if g is None else g for g, v in zip(grads, self.variables)]

    def _add_penalty(self, grads):
        """(penalty, data gradient + the penalty's gradient): the weight penalty's own gradient,
        taken apart so the monitored gradient stays the data objective's."""
        if not self.regularized:
            return tf.constant(0.0), grads
        with tf.GradientTape() as tape:
            terms = [tf.cast(self.variables[i].regularizer(self.variables[i]), tf.float32)
                     for i in self.regularized]
            penalty = tf.add_n(terms)
        extra = tape.gradient(penalty, [self.variables[i] for i in self.regularized])
        total = list(grads)
        for i, g in zip(self.regularized, extra):
            total[i] = total[i] + g
        return penalty, total

    def _metric(self, y, out):
        """The first output's metric, by what its head and loss are (:class:`Head`); NaN for
        regression."""
        return metric_of(self.heads[0] if self.heads else None, _first(y), _first(out))

    def _clip(self, grads):
        if self.clipping is None:
            return grads
        kind, c = self.clipping
        if kind == "clipnorm":
            return [tf.clip_by_norm(g, c) for g in grads]
        if kind == "global_clipnorm":
            return tf.clip_by_global_norm(grads, c)[0]
        return [tf.clip_by_value(g, -c, c) for g in grads]

    def _evaluate(self, x, y):
        out = self.main(x, training=False)
        return tf.cast(self.loss_fn(y, out), tf.float32), self._metric(y, out)
