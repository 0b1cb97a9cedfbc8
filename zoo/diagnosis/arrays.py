"""The user's files, read and checked before TensorFlow loads: a saved ``.keras`` model's
config (its input shape and whether it was compiled with a loss) and an ``.npz`` of arrays.

Every problem is an :class:`InputError` whose message is one line naming the file.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

PAIRS = (("x", "y"), ("x_train", "y_train"))  # the keys an .npz may use, in this order


class InputError(ValueError):
    """A file that cannot be diagnosed, in one line."""


def read_arrays(path) -> dict:
    """``{"x": array, "y": array}`` from an ``.npz`` holding ``x`` and ``y`` (or ``x_train``
    and ``y_train``: an ``arrays`` dataset file); raises InputError for a missing or unreadable
    file, missing keys, object arrays, different lengths, no examples, or values that are not
    finite."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            pair = next((p for p in PAIRS if set(p) <= keys), None)
            if pair is None:
                raise InputError(f"{path}: needs arrays named x and y (or x_train and y_train); it has "
                                 f"{', '.join(sorted(keys)) or 'none'}")
            x, y = npz[pair[0]], npz[pair[1]]
    except InputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise InputError(f"{path}: not a readable .npz ({type(err).__name__}: {str(err).splitlines()[0][:160]})") from None
    for name, a in (("x", x), ("y", y)):
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise InputError(f"{path}: {name} holds {a.dtype} values, not numbers")
        if a.ndim == 0 or len(a) == 0:
            raise InputError(f"{path}: {name} has no examples (shape {a.shape})")
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            raise InputError(f"{path}: {name} has {int(np.size(a) - np.isfinite(a).sum())} values that are not finite")
    if len(x) != len(y):
        raise InputError(f"{path}: x has {len(x)} examples but y has {len(y)}")
    if np.issubdtype(x.dtype, np.floating) and x.dtype != np.float32:
        x = x.astype(np.float32)
    return {"x": x, "y": y}


def model_config(path) -> dict:
    """The saved model's ``config.json`` (a Keras 3 ``.keras`` file is a zip holding it);
    raises InputError for a missing file or one that is not a ``.keras`` model."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("config.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as err:
        raise InputError(f"{path}: not a Keras .keras model file ({type(err).__name__}); save it with "
                         "model.save('model.keras')") from None


def input_shape(config: dict) -> tuple | None:
    """The one input's shape without the batch axis (None entries: any length), or None when
    the config does not say (several inputs, a subclassed model)."""
    layers = (config.get("config") or {}).get("layers") or []
    shapes = [l["config"].get("batch_shape") for l in layers if l.get("class_name") == "InputLayer"]
    if len(shapes) != 1 or shapes[0] is None:
        return None
    return tuple(shapes[0][1:])


def compiled_loss(config: dict):
    """The loss the model was compiled with, or None."""
    return (config.get("compile_config") or {}).get("loss")


def model_input_shape(model) -> tuple | None:
    """A built model's one input shape (no batch axis), or None (several inputs, subclassed)."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    return tuple(inputs[0].shape[1:]) if inputs and len(inputs) == 1 else None


def check_fits(path, shape: tuple | None, x: np.ndarray) -> None:
    """The arrays fit the model's input shape (raises InputError naming both)."""
    if shape is None:
        return
    have = tuple(x.shape[1:])
    if len(have) != len(shape) or any(s is not None and s != h for s, h in zip(shape, have)):
        want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
        raise InputError(f"{path}: x has examples of shape {have} but the model takes {want}")
