"""The user's files, read and checked before TensorFlow loads: a saved ``.keras`` model's
config (its input shape and whether it was compiled with a loss) and an ``.npz`` of arrays.

Every problem is a zoo.errors.InputError whose message is one line naming the file.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from zoo.data import npz
from zoo.errors import InputError  # the one bad-input type; its home was here

PAIRS = (("x", "y"), ("x_train", "y_train"))  # the keys an .npz may use, in this order


MIN_EXAMPLES = 2       # one example has no spread: no batch statistics, no dead unit, no range
CONFIG_LIMIT = 64 * 2**20  # a .keras file's config.json larger than this is not a model's config
WEIGHTS = ("model.weights.h5", "model.weights.npz")  # what keras.saving.save_model writes beside it
FLOAT32_MAX = float(np.finfo(np.float32).max)


def read_arrays(path) -> dict:
    """``{"x": array, "y": array}`` from an ``.npz`` holding ``x`` and ``y`` (or ``x_train``
    and ``y_train``: an ``arrays`` dataset file); raises InputError for a missing or unreadable
    file, missing keys, headers that cannot be read or claim more than the file or the memory
    holds (zoo.data.npz: checked before anything loads), arrays that are not numbers, different
    lengths, fewer than two examples, or values that are not finite in float32."""
    path = Path(path)
    try:
        headers = npz.read_headers(path)
    except npz.NpzError as err:
        raise InputError(str(err)) from None
    pair = next((p for p in PAIRS if set(p) <= set(headers)), None)
    if pair is None:
        raise InputError(f"{path}: needs arrays named x and y (or x_train and y_train); it has "
                         f"{', '.join(sorted(headers)) or 'none'}")
    members = {name: headers[key] for name, key in zip(("x", "y"), pair)}
    for name, m in members.items():
        if not (m.dtype.kind in "biuf" and m.dtype.fields is None and m.dtype.subdtype is None):
            raise InputError(f"{path}: {name} holds {m.dtype} values, not numbers")
        if len(m.shape) == 0 or m.shape[0] == 0:
            raise InputError(f"{path}: {name} has no examples (shape {m.shape})")
    x_rows, y_rows = members["x"].shape[0], members["y"].shape[0]
    if x_rows != y_rows:
        raise InputError(f"{path}: x has {x_rows} examples but y has {y_rows}")
    if x_rows < MIN_EXAMPLES:
        raise InputError(f"{path}: x holds {x_rows} example; a diagnosis needs at least {MIN_EXAMPLES} (one "
                         f"example has no spread: no batch statistics, no dead unit, no range over batches)")
    try:  # the arrays, and x's float32 copy
        npz.check_memory(path, list(members.values()), copies=2)
        x, y = (npz.load(path, key) for key in pair)
    except npz.NpzError as err:
        raise InputError(f"{path}: {err}") from None
    for name, a in (("x", x), ("y", y)):
        if np.issubdtype(a.dtype, np.floating):
            finite = np.isfinite(a)
            if not np.all(finite):
                raise InputError(f"{path}: {name} has {int(np.size(a) - finite.sum())} values that are not finite")
            top = float(np.max(np.abs(a))) if a.size else 0.0
            if top > FLOAT32_MAX:
                raise InputError(f"{path}: {name} holds values up to {top:.3g}, beyond float32's range "
                                 f"({FLOAT32_MAX:.3g}) that the diagnosis computes in; rescale them")
    if np.issubdtype(x.dtype, np.floating) and x.dtype != np.float32:
        x = x.astype(np.float32)
    return {"x": x, "y": y}


def model_config(path) -> dict:
    """The saved model's ``config.json`` (a Keras 3 ``.keras`` file is a zip holding it and the
    weights); raises InputError for a missing file, a folder, a file that is not a zip, a zip
    without ``config.json`` or the weights, or a config that is not a JSON object."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a .keras model file")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    how = "save it with model.save('model.keras')"
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            info = z.getinfo("config.json") if "config.json" in names else None
            if info is None:
                raise InputError(f"{path}: not a Keras .keras model file (no config.json in it); {how}")
            if info.file_size > CONFIG_LIMIT:
                raise InputError(f"{path}: its config.json holds {info.file_size / 2**20:.0f} MiB, more than a "
                                 f"model's config ({CONFIG_LIMIT / 2**20:.0f} MiB); {how}")
            if not names & set(WEIGHTS):
                raise InputError(f"{path}: holds no weights ({' or '.join(WEIGHTS)}); {how}")
            config = json.loads(z.read(info))
    except InputError:
        raise
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, RuntimeError, EOFError) as err:
        raise InputError(f"{path}: not a Keras .keras model file ({type(err).__name__}); {how}") from None
    if not isinstance(config, dict) or not isinstance(config.get("config", {}), (dict, type(None))):
        raise InputError(f"{path}: its config.json is not a Keras model's config (a JSON object with "
                         f"class_name and config); {how}")
    return config


def input_shape(config: dict) -> tuple | None:
    """The one input's shape without the batch axis (None entries: any length), or None when
    the config does not say (several inputs, a subclassed model)."""
    layers = (config.get("config") or {}).get("layers") or []
    if not isinstance(layers, list):
        return None
    shapes = [(layer.get("config") or {}).get("batch_shape") for layer in layers
              if isinstance(layer, dict) and layer.get("class_name") == "InputLayer"]
    if len(shapes) != 1 or not isinstance(shapes[0], list) or not shapes[0]:
        return None
    return tuple(shapes[0][1:])


def compiled_loss(config: dict):
    """The loss the model was compiled with, or None."""
    compiled = config.get("compile_config")
    return compiled.get("loss") if isinstance(compiled, dict) else None


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
        want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise InputError(f"{path}: x has examples of shape {have} but the model takes {want}")
