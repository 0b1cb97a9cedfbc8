"""What the monitor can measure in any Keras model, found by looking at it: the monitored kernels
(input side first), the activation layers and their kinds, and a forward pass that also returns
the tensors the instruments read (``taps``). A zoo model's builder says which layers are
activations (zoo.models.roles); for any other model they are recognized by class and by the
``activation`` of Dense and convolution layers. What cannot be measured is named, never fatal.
"""
from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

import keras

from zoo.models import blocks
from zoo.models.roles import roles_of
from zoo.instruments import GradientHistograms, Instrument, ModelView, instruments_for
from zoo.instruments.layout import kernel_name

ACTIVATION_LAYERS = {keras.layers.ReLU: "relu", keras.layers.LeakyReLU: "leaky_relu",
                     keras.layers.PReLU: "prelu", keras.layers.ELU: "elu"}
RECURRENT = (keras.layers.RNN, keras.layers.Bidirectional)


@dataclass
class Found:
    """A model as the monitor sees it."""
    variables: list                    # model.trainable_variables, in their order
    kernel_index: list[int]            # positions of the monitored kernels
    kernels: tuple[str, ...]           # their names (layer paths inside the model)
    instruments: list[Instrument]
    forward: object                    # callable(x, training) -> (y_pred, taps)
    skipped: dict[str, str] = field(default_factory=dict)  # what is not measured -> why
    others: tuple[tuple[int, str], ...] = ()   # (position, name) of other monitored variables
    elements: tuple[tuple[int, str], ...] = ()  # (position, name) of variables recorded per element


def kernels_of(model) -> tuple[list[int], tuple[str, ...]]:
    """Positions and names of the monitored kernels among ``model.trainable_variables``: every
    kernel, recurrent kernel and embedding table, named by its layer path inside the model."""
    prefix = f"{model.name}/"
    index, names = [], []
    for i, v in enumerate(model.trainable_variables):
        name = kernel_name(v.path.removeprefix(prefix))
        if name:
            index.append(i)
            names.append(name if name not in names else f"{name}#{i}")
    return index, tuple(names)


MAX_ELEMENTS = 256        # the largest variable GradientMonitor(elements=...) records element by element
MAX_ELEMENTS_TOTAL = 4096  # and all of them together (one float64 each per step)


def variable_name(model, variable) -> str:
    """A variable's name in the monitor's records: its path inside the model, without the
    model's own name and without the ``*_cell`` part of a recurrent layer (``lstm/bias``); a
    kernel's is its layer's (zoo.instruments.layout.kernel_name: ``dense_1``, ``lstm/recurrent``)."""
    path = variable.path.removeprefix(f"{model.name}/")
    return kernel_name(path) or "/".join(p for p in path.split("/") if not p.endswith("_cell"))


class SelectionError(ValueError):
    """``variables=`` or ``elements=`` names no variable of the model, or too large a one."""


def select(model, spec, what: str) -> list[int]:
    """Positions in ``model.trainable_variables`` chosen by ``spec``: "all"; a name or a list of
    names, each matched (``fnmatch`` patterns allowed) against a variable's record name
    (:func:`variable_name`), its path and its layer's name; or a predicate
    ``callable(variable) -> bool``. Raises SelectionError (one line) when an entry, or the
    predicate, chooses nothing."""
    variables = list(model.trainable_variables)
    names = [variable_name(model, v) for v in variables]
    if spec == "all":
        return list(range(len(variables)))
    if callable(spec):
        chosen = [i for i, v in enumerate(variables) if spec(v)]
        if not chosen:
            raise SelectionError(f"GradientMonitor: {what}: the predicate chose none of {model.name}'s "
                                 f"{len(variables)} trainable variables")
        return chosen
    chosen: list[int] = []
    for pattern in [spec] if isinstance(spec, str) else list(spec):
        hits = [i for i, (v, name) in enumerate(zip(variables, names))
                if any(fnmatch.fnmatchcase(candidate, pattern)
                       for candidate in (name, v.path, v.path.removeprefix(f"{model.name}/"), name.split("/")[0]))]
        if not hits:
            shown = ", ".join(names[:12]) + (f", … ({len(names)} in all)" if len(names) > 12 else "")
            raise SelectionError(f"GradientMonitor: {what}: {pattern!r} names no trainable variable of "
                                 f"{model.name}; its variables: {shown}")
        chosen += [i for i in hits if i not in chosen]
    return chosen


def chosen(model, kernel_index: list[int], variables=None, elements=None) -> tuple[tuple, tuple]:
    """(others, elements): (position, name) of the variables ``variables=`` adds to the kernels,
    and of those ``elements=`` records element by element (each at most MAX_ELEMENTS, all at
    most MAX_ELEMENTS_TOTAL). Raises SelectionError."""
    trainable = list(model.trainable_variables)
    kernels = set(kernel_index)
    others = tuple((i, variable_name(model, trainable[i])) for i in select(model, variables, "variables")
                   if i not in kernels) if variables is not None else ()
    picked = tuple((i, variable_name(model, trainable[i])) for i in select(model, elements, "elements")) \
        if elements is not None else ()
    for i, name in picked:
        size = int(math.prod(trainable[i].shape))
        if size > MAX_ELEMENTS:
            raise SelectionError(f"GradientMonitor: elements: {name} has {size:,} elements; at most "
                                 f"{MAX_ELEMENTS} are recorded element by element (its norm: variables=)")
    total = sum(int(math.prod(trainable[i].shape)) for i, _ in picked)
    if total > MAX_ELEMENTS_TOTAL:
        raise SelectionError(f"GradientMonitor: elements: {total:,} elements chosen; at most {MAX_ELEMENTS_TOTAL}")
    return others, picked


def activation_kind(layer) -> str | None:
    """The activation registry's name for what ``layer`` outputs, or None."""
    for cls, kind in ACTIVATION_LAYERS.items():
        if isinstance(layer, cls):
            return kind
    if isinstance(layer, RECURRENT):
        return None  # its activation acts inside the recurrence, not on its output
    fn = getattr(layer, "activation", None)
    kind = getattr(fn, "__name__", None)
    return kind if kind in blocks.ACTIVATIONS.names() and kind != "linear" else None


def is_functional(model) -> bool:
    """A functional or Sequential model, whose layers' outputs are on a graph that can be read."""
    try:
        return bool(model.inputs) and bool(model.outputs)
    except (AttributeError, ValueError):
        return False


def discover(model) -> Found:
    """The monitor's view of ``model`` (built, trainable variables created)."""
    skipped: dict[str, str] = {}
    index, kernels = kernels_of(model)
    if not is_functional(model):
        skipped["activation statistics, gradient through time, forget gates"] = (
            f"{type(model).__name__} is not a functional or Sequential model: its layers' "
            "outputs cannot be read; gradient norms and histograms are measured")
        return Found(list(model.trainable_variables), index, kernels, instruments_for_kernels(kernels),
                     _plain_forward(model), skipped)
    roles = roles_of(model)
    layers = {l.name: l for l in model.layers}
    if roles.activations:
        activations = [(layers[name], kind) for name, kind in roles.activations if name in layers]
    else:
        activations = [(l, k) for l in model.layers if (k := activation_kind(l))]
    for layer in model.layers:
        if isinstance(layer, keras.Model) and layer.layers:
            skipped[f"activations and recurrent layers inside {layer.name}"] = (
                "a nested model's layers are not on the outer model's graph")
    instruments = instruments_for(ModelView(model, activations, kernels, roles.sequences, skipped))
    taps = {k: t for inst in instruments for k, t in inst.taps().items()}
    forward = _plain_forward(model)
    if taps:
        try:
            probe = keras.Model(_symbolic(model, "input"), {"y_pred": _symbolic(model, "output"), "taps": taps},
                                name=f"{model.name}_probe")

            def forward(x, training):  # noqa: F811 - the same layers, their outputs read too
                out = probe(x, training=training)
                return out["y_pred"], out["taps"]
        except Exception as err:  # a tap the graph does not connect: measure without taps
            skipped["activation statistics, gradient through time, forget gates"] = (
                f"the layers' outputs cannot be read: {type(err).__name__}: {str(err)[:200]}")
            instruments = instruments_for_kernels(kernels)
    return Found(list(model.trainable_variables), index, kernels, instruments, forward, skipped)


def _symbolic(model, which: str):
    """The model's symbolic input (or output) in the structure its call takes (returns): a
    Sequential has no ``input`` before it is called, but its ``inputs`` list."""
    try:
        return getattr(model, which)
    except (AttributeError, ValueError):
        flat = getattr(model, which + "s")
        return flat[0] if len(flat) == 1 else flat


def instruments_for_kernels(kernels) -> list[Instrument]:
    return [GradientHistograms(kernels)]


def _plain_forward(model):
    def forward(x, training):
        return model(x, training=training), {}
    return forward
