"""The Python entry points' arguments, checked before anything is built, measured or trained.

Each public entry point (``zoo.diagnose``, ``zoo.compare``, ``zoo.build_model``, ``zoo.train``,
``zoo.load_dataset``, ``zoo.load_pretrained``) calls its check here first, so a wrong argument is
one :class:`zoo.errors.InputError` whose one-line message names the argument and says what it
takes, not whatever breaks first inside (``zoo.diagnose(m, (x,))`` was "not enough values to
unpack", ``batch_size=0`` "range() arg 3 must not be zero"). What only the loaded model can
judge is judged here too, on the first batch the measurement will use: inputs whose loss
overflows the model's float dtype, and batches of one example for a model with batch
normalization. Only numpy is imported at the top; Keras is imported by the checks that take a
model (the caller has one, so it is loaded already).
"""
from __future__ import annotations

import math
import numbers
from pathlib import Path

import numpy as np

from zoo.errors import InputError
from zoo.data import DATASETS, Dataset
from zoo.data.batches import batches_of
from zoo.models import MODELS
from zoo.pretrained import read_manifest

TASKS = ("classification", "regression")
SEED_LIMIT = 2**32      # numpy's and TensorFlow's seeds are 32-bit
MIN_EXAMPLES = 2        # one example has no spread: no batch statistics, no dead unit, no range
DATA_FORMS = "(x, y), (x, y, task), {'x': ..., 'y': ...}, an .npz path, a dataset name or a zoo Dataset"


def _type(value) -> str:
    return type(value).__name__


def _shown(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({_type(value)})"


def integer(name: str, value, low: int, high: int | None = None) -> None:
    """``value`` is an int (not a bool) in [low, high)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer, got {_shown(value)} ({_type(value)})")
    if value < low or (high is not None and value >= high):
        span = f">= {low}" if high is None else f"in [{low}, {'2**32' if high == SEED_LIMIT else high})"
        raise InputError(f"{name} must be an integer {span}, got {value}")


def optional_text(name: str, value) -> None:
    if value is not None and not isinstance(value, str):
        raise InputError(f"{name} must be a string or None, got {_shown(value)} ({_type(value)})")


def loss_argument(loss) -> None:
    """A Keras loss name or object (anything callable), or a list / dict of them, or None."""
    if loss is None or isinstance(loss, str) or callable(loss):
        return
    parts = list(loss.values()) if isinstance(loss, dict) else list(loss) if isinstance(loss, (list, tuple)) else None
    if parts and all(isinstance(p, str) or callable(p) for p in parts):
        return
    raise InputError(f"loss must be a Keras loss name or object (or a list / dict of them, one per output), "
                     f"got {_shown(loss)}")


def keras_model(name: str, model, hint: str = "") -> None:
    import keras

    if isinstance(model, (str, Path)):
        raise InputError(f"{name} must be a keras.Model, got the path {str(model)!r}{hint}")
    if not isinstance(model, keras.Model):
        raise InputError(f"{name} must be a keras.Model, got {_type(model)}{hint}")


# --- data: (x, y[, task]), {"x", "y"[, "task"]}, a path, a name, a Dataset ------------------------
def _leaves(tree, name: str) -> list[tuple[str, np.ndarray]]:
    """(name, array) of an array, or of each array in a list / tuple / dict of them."""
    if isinstance(tree, dict):
        if not tree:
            raise InputError(f"{name} is an empty dict; give an array, or one per input / output")
        return [leaf for key, part in tree.items() for leaf in _leaves(part, f"{name}[{key!r}]")]
    if isinstance(tree, (list, tuple)) and tree and not isinstance(tree[0], numbers.Number):
        return [leaf for i, part in enumerate(tree) for leaf in _leaves(part, f"{name}[{i}]")]
    try:
        array = np.asarray(tree)
    except Exception as err:  # ragged lists
        raise InputError(f"{name} is not an array ({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None
    return [(name, array)]


def arrays(x, y) -> int:
    """x and y hold numbers, the same number of examples (at least MIN_EXAMPLES), and float values
    that are finite within float32's range; the number of examples."""
    counts = {}
    for name, a in _leaves(x, "x") + _leaves(y, "y"):
        if a.dtype.kind not in "biuf" or a.dtype.fields is not None:
            raise InputError(f"{name} holds {a.dtype} values, not numbers")
        if a.ndim == 0:
            raise InputError(f"{name} is a single value, not an array of examples")
        counts[name] = len(a)
        if a.dtype.kind == "f" and a.size:
            finite = np.isfinite(a)
            if not finite.all():
                raise InputError(f"{name} has {int(a.size - finite.sum())} values that are not finite")
            top = float(np.max(np.abs(a)))
            if top > np.finfo(np.float32).max:
                raise InputError(f"{name} holds values up to {top:.3g}, beyond float32's range "
                                 f"({np.finfo(np.float32).max:.3g}); rescale them")
    if len(set(counts.values())) > 1:
        shown = ", ".join(f"{k} {v}" for k, v in counts.items())
        raise InputError(f"x and y must hold the same number of examples; they hold {shown}")
    n = next(iter(counts.values()))
    if n < MIN_EXAMPLES:
        raise InputError(f"data holds {n} example{'s' * (n != 1)}; at least {MIN_EXAMPLES} are needed (one "
                         f"example has no spread: no batch statistics, no dead unit, no range over batches)")
    return n


def task_argument(task) -> None:
    if task is not None and task not in TASKS:
        raise InputError(f"task must be one of {', '.join(TASKS)}, got {task!r}")


def data_argument(data, needs_task: bool = False, optional: bool = False) -> tuple | None:
    """What the data argument is; for arrays given in place, ``(x, y, task or None, examples)``
    checked (:func:`arrays`), else None (a path, a name, a Dataset: their own loaders check them)."""
    if data is None:
        if optional:
            return None
        raise InputError(f"data is missing; give {DATA_FORMS}")
    if isinstance(data, Dataset):
        arrays(data.x_train, data.y_train)
        return None
    if isinstance(data, (str, Path)):
        text = str(data)
        if text.endswith(".npz"):
            if not Path(text).is_file():
                raise InputError(f"data: {text}: no such file")
            return None
        if text not in DATASETS:
            raise InputError(f"data: {text!r} is neither an .npz file nor a dataset; datasets: "
                             f"{', '.join(DATASETS.names())}")
        return None
    if isinstance(data, dict):
        if "name" in data and "x" not in data:  # zoo.load_dataset's arguments (zoo.compare)
            return None
        unknown = sorted(set(map(str, data)) - {"x", "y", "task"})
        missing = [k for k in ("x", "y") if k not in data]
        if missing or unknown:
            what = f"has no {' or '.join(repr(k) for k in missing)}" if missing else \
                f"has keys it does not take: {', '.join(repr(k) for k in unknown)}"
            raise InputError(f"data as a dict takes 'x', 'y' and maybe 'task'; it {what}")
        x, y, task = data["x"], data["y"], data.get("task")
    elif isinstance(data, (tuple, list)):
        if len(data) not in ((3,) if needs_task else (2, 3)):
            form = "(x, y, task)" if needs_task else "(x, y) or (x, y, task)"
            raise InputError(f"data as a {_type(data)} must be {form}; got {len(data)} item{'s' * (len(data) != 1)}")
        x, y = data[0], data[1]
        task = data[2] if len(data) == 3 else None
    else:
        raise InputError(f"data must be {DATA_FORMS}; got {_type(data)}")
    task_argument(task)
    return x, y, task, arrays(x, y)


# --- what only the loaded model can judge -------------------------------------------------------
def _input_shapes(model) -> list[tuple] | None:
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):  # a subclassed model: no symbolic inputs
        return None
    return [tuple(t.shape[1:]) for t in inputs] if inputs else None


def _has_batch_norm(model) -> bool:
    import keras

    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        if isinstance(layer, keras.layers.BatchNormalization):
            return True
        stack.extend(getattr(layer, "layers", []))
    return False


def batch_sizes(n: int, batches: int, batch_size: int) -> list[int]:
    """The examples in each batch zoo.data.batches.batches_of draws from ``n`` examples."""
    taken = min(batches * batch_size, n)
    return [min(batch_size, taken - i) for i in range(0, taken, batch_size)]


def batches_fit(model, n: int, batches: int, batch_size: int) -> None:
    """A model with batch normalization needs two or more examples in every batch: over one,
    every feature's spread is 0 and the layer's output is its offset, so no gradient passes."""
    sizes = batch_sizes(n, batches, batch_size)
    if min(sizes) < MIN_EXAMPLES and _has_batch_norm(model):
        raise InputError(f"batch_size: the batches hold {', '.join(map(str, sizes))} example(s), and the model "
                         f"has batch normalization, which needs at least {MIN_EXAMPLES} per batch (one "
                         f"example's spread is 0); choose batch_size and batches so that no batch holds one")


def _unit_scale(tree):
    """Every float array of ``tree`` divided by its root mean square when that is above 1."""
    if isinstance(tree, dict):
        return {k: _unit_scale(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_unit_scale(v) for v in tree)
    a = np.asarray(tree)
    if a.dtype.kind != "f" or not a.size:
        return a
    rms = float(np.sqrt(np.mean(np.square(a.astype(np.float64)))))
    return (a / rms).astype(a.dtype) if rms > 1 else a


def _overflows(model, fn, x, y) -> tuple[bool, str]:
    """(outputs or loss not finite on (x, y), what overflowed in words)."""
    import keras

    outputs = model(x, training=False)
    out = [np.asarray(keras.ops.convert_to_numpy(o)) for o in keras.tree.flatten(outputs)]
    if not all(np.all(np.isfinite(o)) for o in out):
        return True, "outputs overflow"
    value = float(keras.ops.convert_to_numpy(fn(y, outputs)))
    return not math.isfinite(value), f"loss overflows ({value:g})"


def loss_is_finite(model, x, y, task: str, loss, batches: int, batch_size: int, seed: int) -> None:
    """Data whose magnitude overflows the model's dtype is refused: on the first batch the
    measurement draws, the model's outputs or loss are not finite, and they are once the float
    arrays are scaled to unit root mean square (inputs and regression targets of magnitude 1e30
    overflowed a ReLU net's squared error to inf: every gradient NaN). When the scaled data
    overflows too, or a weight is not finite, the model is the cause: the diagnosis measures and
    reports it (zoo.analysis.diagnosis: the finding ``diverged``). A loss that cannot be computed here is
    left to the measurement, which says why."""
    from zoo.training.step import data_loss

    xs, ys = batches_of(x, y, 1, batch_size, seed)
    try:
        fn, _ = data_loss(model, task or "regression", loss)
        over, what = _overflows(model, fn, xs[0], ys[0])
        if not over or not all(np.all(np.isfinite(w)) for w in model.get_weights()):
            return
        scaled_y = ys[0] if task == "classification" else _unit_scale(ys[0])
        if _overflows(model, fn, _unit_scale(xs[0]), scaled_y)[0]:
            return
    except Exception:  # a loss or y that does not fit: zoo.diagnose says so in its own words
        return
    tops = [f"{name} up to {float(np.max(np.abs(np.asarray(a, np.float64)))):.3g}"
            for name, a in _leaves(xs[0], "x") + ([] if task == "classification" else _leaves(ys[0], "y"))
            if np.size(a) and np.asarray(a).dtype.kind == "f"]
    raise InputError(f"data: the model's {what} in {getattr(model, 'compute_dtype', None) or 'its dtype'} on the "
                     f"first batch ({', '.join(tops)}), and not with the data scaled to unit RMS: no gradient can "
                     f"be measured; rescale the data (standardize it)")


# --- each entry point's check -------------------------------------------------------------------
def check_diagnose(model, data, loss, batches, batch_size, seed, label) -> None:
    """``zoo.diagnose``'s arguments; with arrays given in place, what the loaded model judges too."""
    keras_model("model", model, "; load a saved model first (keras.saving.load_model) or run zoo-diagnose "
                                "MODEL.keras --data DATA.npz")
    integer("batches", batches, 1)
    integer("batch_size", batch_size, 1)
    integer("seed", seed, 0, SEED_LIMIT)
    optional_text("label", label)
    loss_argument(loss)
    given = data_argument(data)
    if given is None:
        return
    x, y, task, n = given
    batches_fit(model, n, batches, batch_size)
    if task is None:
        first = y[0] if isinstance(y, (list, tuple)) else next(iter(y.values())) if isinstance(y, dict) else y
        task = "classification" if np.issubdtype(np.asarray(first).dtype, np.integer) else "regression"
    loss_is_finite(model, x, y, task, loss, batches, batch_size, seed)


def check_compare(a, b, data, batches, batch_size, seed, knob, loss) -> None:
    """``zoo.compare``'s arguments: two models (or pretrained names) that take the same inputs,
    and data both can take."""
    names = read_manifest().names()
    shapes = {}
    for name, model in (("a", a), ("b", b)):
        if isinstance(model, str):
            if model not in names:
                raise InputError(f"{name}: unknown pretrained model {model!r}; choose one of: {', '.join(names)}")
            shapes[name] = [tuple(read_manifest().get(model).data["input_shape"])]
        else:
            keras_model(name, model, "; or a pretrained entry's name (zoo.list_pretrained())")
            shapes[name] = _input_shapes(model)
    if shapes["a"] is not None and shapes["b"] is not None and shapes["a"] != shapes["b"]:
        raise InputError(f"b takes inputs of shape {_shapes(shapes['b'])} but a takes {_shapes(shapes['a'])}: "
                         f"zoo.compare measures both on the same batches")
    integer("batches", batches, 1)
    integer("batch_size", batch_size, 1)
    integer("seed", seed, 0, SEED_LIMIT)
    optional_text("knob", knob)
    loss_argument(loss)
    pretrained = isinstance(a, str) or isinstance(b, str)
    if data is None and not pretrained:
        raise InputError("data is missing: give a dataset name, a zoo Dataset, zoo.load_dataset's arguments as "
                         "a dict, or (x, y, task), when neither model is a pretrained entry")
    given = data_argument(data, needs_task=True, optional=pretrained)
    if given is not None and shapes["a"] is not None and len(shapes["a"]) == 1 and not isinstance(given[0], (list, dict)):
        have = tuple(np.shape(given[0])[1:])
        want = shapes["a"][0]
        if len(have) != len(want) or any(w is not None and w != h for w, h in zip(want, have)):
            raise InputError(f"data: x has examples of shape {have} but the models take {_shapes([want])}")


def _shapes(shapes: list[tuple]) -> str:
    shown = ["(" + ", ".join("any" if d is None else str(d) for d in s) + ("," if len(s) == 1 else "") + ")"
             for s in shapes]
    return shown[0] if len(shown) == 1 else "[" + ", ".join(shown) + "]"


def check_build_model(name, input_shape, num_outputs) -> None:
    """``zoo.build_model``'s arguments (its knobs are the model's config keys, checked by its schema)."""
    if not isinstance(name, str) or name not in MODELS:
        raise InputError(f"name must be one of: {', '.join(MODELS.names())}; got {_shown(name)}")
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, (tuple, list)) or not input_shape \
            or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1 for d in input_shape):
        raise InputError(f"input_shape must be a tuple of positive integers without the batch axis, such as "
                         f"(64,) or (28, 28, 1); got {_shown(input_shape)}")
    integer("num_outputs", num_outputs, 1)


def check_train(overrides, sink) -> None:
    """``zoo.train``'s arguments: a list of ``key=value`` overrides, and a sink or None."""
    if overrides is not None:
        if isinstance(overrides, str) or not isinstance(overrides, (list, tuple)):
            raise InputError(f"overrides must be a list of strings such as ['model.depth=3'], got {_shown(overrides)}")
        bad = [o for o in overrides if not isinstance(o, str)]
        if bad:
            raise InputError(f"overrides must be strings such as 'model.depth=3', got {_shown(bad[0])} ({_type(bad[0])})")
    if sink is not None:
        missing = [m for m in ("start", "log_metrics", "log_artifact", "set_tags", "finish") if not callable(getattr(sink, m, None))]
        if missing:
            raise InputError(f"sink must be a zoo.tracking.sink.Sink (start, log_metrics, log_artifact, set_tags, "
                             f"finish), or None; {_type(sink)} has no {', '.join(missing)}")


def check_load_dataset(name) -> None:
    if not isinstance(name, str) or name not in DATASETS:
        raise InputError(f"name must be one of: {', '.join(DATASETS.names())}; got {_shown(name)}")


def check_load_pretrained(name) -> None:
    """A pretrained entry's name (an unknown one is zoo.pretrained.UnknownPretrainedError, an InputError)."""
    if not isinstance(name, str):
        raise InputError(f"name must be a pretrained entry's name (zoo.list_pretrained()), got {_shown(name)} "
                         f"({_type(name)})")
