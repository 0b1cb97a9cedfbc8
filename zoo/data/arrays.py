"""Your own arrays as a zoo dataset: ``zoo-train data=arrays data.path=FILE.npz``.

The file is what ``numpy.savez(FILE, x_train=..., y_train=..., x_val=..., y_val=...)`` (or
``savez_compressed``) writes. What the arrays mean is read from their shapes and dtypes, so any
zoo model that takes that kind of input trains on them, in a sweep too:

- input kind, from x's rank: ``[n, features]`` flat (MLPs), ``[n, steps, features]`` sequence
  (recurrent models), ``[n, height, width, channels]`` image (conv nets, channels last).
- task, with ``task=auto``: integer (or bool) y is classification, float y regression; no
  guessing from the values (float labels 0., 1., 2. are regression unless ``task=classification``
  says otherwise). Classification labels are integers in [0, K), K = the largest label + 1 over
  both splits, the number of outputs. Regression y is ``[n]`` or ``[n, k]``: k outputs.
- sequence targets: one per sequence (``target="last"``, ``model.head=last``) when y has no time
  axis; one per step (``target="sequence"``, ``model.head=sequence``) when y's second axis has
  x's number of steps: labels ``[n, steps]``, regression ``[n, steps]`` or ``[n, steps, k]``.

``standardize`` (the default) shifts and scales each input feature by the training split's mean
and std, both splits alike: per column (flat), per channel (image), per feature over all steps
(sequence). A constant feature is only centred: there is nothing to divide by.

Everything above is checked when the config is validated, before TensorFlow is imported: shapes
and dtypes from the members' ``.npy`` headers, then the values a check needs (labels, and
finiteness of float arrays). A fault is one line naming the array and what to do.
"""
from __future__ import annotations

import functools
import os
import zipfile
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from omegaconf import MISSING

from zoo.data import DATASETS, Dataset, npz, prior_baselines
from zoo.config.origin import from_launch_folder
from zoo.config.schema import Section, SpecError, choice, file_digest

KEYS = ("x_train", "y_train", "x_val", "y_val")
TASKS = ("auto", "classification", "regression")
INPUT_KINDS = {2: "flat", 3: "sequence", 4: "image"}  # x's rank -> input kind
SHAPES = "[n, features], [n, steps, features] or [n, height, width, channels]"
NUMERIC = "biuf"  # numpy kinds: bool, signed and unsigned integer, float
FLOAT32_MAX = float(np.finfo(np.float32).max)
LOAD_COPIES = 3  # the file's arrays, their float32 copies, the standardized ones
FORM = "FILE.npz (x_train, y_train, x_val, y_val)"  # what to give when data.path is missing


@dataclass(frozen=True)
class Layout:
    """What a file holds, read before anything is built (also the memory estimate's input)."""
    input_kind: str               # flat | sequence | image
    target: str | None            # sequences: "last" (one target per sequence) | "sequence" (per step)
    task: str                     # classification | regression
    num_outputs: int              # classes, or regression targets per example (per step)
    n_train: int
    n_val: int
    example_shape: tuple[int, ...]  # one x example


@dataclass
class ArraysConfig(Section):
    path: str = field(default=MISSING, metadata={"form": FORM})  # FILE.npz holding x_train, y_train, x_val, y_val; relative: from where zoo-train was started
    task: str = "auto"  # auto (integer y: classification, float y: regression) | classification | regression
    standardize: bool = True  # per input feature (column, channel, or feature over steps): training split's mean and std

    def __post_init__(self):
        choice(TASKS, task=self.task)
        self.path = from_launch_folder(self.path)
        self.layout = describe(read_headers(self.path), self.task,
                               lambda key: load_member(self.path, key))
        if self.standardize and self.layout.n_train < 2:
            raise SpecError("standardize", f"is true, and x_train holds {self.layout.n_train} example: a "
                                           f"feature's spread over one example is 0, so every input would be "
                                           f"0; give more examples, or set data.standardize=false")

    def fingerprint(self) -> str:
        return file_digest(self.path)

    @property
    def input_kind(self) -> str:
        """What the file holds, for matching against a model's ``input_kind``."""
        return self.layout.input_kind

    @property
    def target(self) -> str | None:
        """For sequences, which recurrent head fits: "last" or "sequence"; None otherwise."""
        return self.layout.target


@DATASETS.register("arrays", schema=ArraysConfig,
                   description="your own arrays: an .npz with x_train, y_train, x_val, y_val; "
                               "flat, sequence or image inputs, classification or regression")
def load_arrays(*, path, task="auto", standardize=True):
    path = from_launch_folder(path)
    headers = read_headers(path)
    arrays = {key: load_member(path, key) for key in KEYS}
    layout = describe(headers, task, arrays.__getitem__)
    x_train, x_val = (arrays[k].astype(np.float32) for k in ("x_train", "x_val"))
    if standardize:
        x_train, x_val = standardized(x_train, x_val)
    y_train, y_val = (_targets(arrays[k], layout) for k in ("y_train", "y_val"))
    if layout.task == "classification":
        baselines = prior_baselines(y_train.ravel(), y_val.ravel(), layout.num_outputs)
    else:  # MSE of predicting the training mean (per output, and per step for per-step targets)
        mean = y_train.mean(axis=0, dtype=np.float64)
        baselines = {"val_loss": float(np.mean((y_val.astype(np.float64) - mean) ** 2))}
    return Dataset("arrays", np.ascontiguousarray(x_train), y_train, np.ascontiguousarray(x_val),
                   y_val, layout.task, layout.num_outputs, baselines)


def standardized(x_train: np.ndarray, x_val: np.ndarray):
    """Both splits shifted and scaled per feature (the last axis) by the training split's mean
    and std over every other axis; a constant feature is centred only."""
    axes = tuple(range(x_train.ndim - 1))
    mean = x_train.mean(axis=axes, dtype=np.float64)
    std = x_train.std(axis=axes, dtype=np.float64)
    std[x_train.max(axis=axes) == x_train.min(axis=axes)] = 1.0
    mean, std = mean.astype(np.float32), std.astype(np.float32)
    return (x_train - mean) / std, (x_val - mean) / std


def _targets(y: np.ndarray, layout: Layout) -> np.ndarray:
    """int32 labels ``[n]`` / ``[n, steps]``, or float32 targets ``[n, k]`` / ``[n, steps, k]``."""
    if layout.task == "classification":
        if y.ndim == 2 and layout.target != "sequence":  # [n, 1] -> [n]
            y = y[:, 0]
        return y.astype(np.int32)
    if y.ndim == 1:
        y = y[:, None]
    elif layout.target == "sequence" and y.ndim == 2:  # [n, steps] -> [n, steps, 1]
        y = y[..., None]
    return y.astype(np.float32)


# --- reading and checking the file ----------------------------------------------------------
def read_headers(path: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{key: (shape, dtype)}`` of the four arrays, from their ``.npy`` headers only (zoo.data.npz:
    a header that cannot be read, or that claims more data than its member holds, is refused),
    and loading them checked against the memory available now."""
    if not os.path.exists(path):
        raise SpecError("path", f"no such file {path!r}; give data.path=FILE.npz")
    if os.path.isdir(path):
        raise SpecError("path", f"{path!r} is a folder, not an .npz file")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        with open(path, "rb") as f:
            single = f.read(len(npz.NPY_MAGIC)) == npz.NPY_MAGIC
        what = "a single .npy array" if single else f"not an .npz archive ({err})"
        raise SpecError("path", f"{path!r} is {what}; save the four arrays with numpy.savez(FILE, "
                                f"x_train=..., y_train=..., x_val=..., y_val=...)") from None
    with archive:
        members = {name.removesuffix(".npy"): archive.getinfo(name) for name in archive.namelist()}
        missing = [key for key in KEYS if key not in members]
        if missing:
            raise SpecError("path", f"{path!r} has no {', '.join(missing)}; it must hold x_train, "
                                    f"y_train, x_val and y_val (it holds {', '.join(members) or 'nothing'})")
        try:
            headers = {key: npz.member_header(archive, members[key]) for key in KEYS}
        except npz.NpzError as err:
            raise SpecError("path", f"{path!r}: {err}") from None
    try:  # the values a check reads, then the run's float32 copies: all in memory at once
        npz.check_memory(path, list(headers.values()), LOAD_COPIES)
    except npz.NpzError as err:
        raise SpecError("path", str(err)) from None
    return {key: (m.shape, m.dtype) for key, m in headers.items()}


def load_member(path: str, key: str) -> np.ndarray:
    """One array's values (never unpickled: ``allow_pickle=False``)."""
    try:
        return npz.load(path, key)
    except npz.NpzError as err:
        raise SpecError("path", f"{path!r}: {err}") from None


def _show(shape) -> str:
    return f"[{', '.join(map(str, shape))}]"


def _kind_of(dtype: np.dtype) -> str:
    if dtype.kind == "O":
        return "Python objects (dtype object)"
    if dtype.kind in "US":
        return f"strings (dtype {dtype.str})"
    if dtype.fields is not None or dtype.subdtype is not None:
        return f"records (dtype {dtype})"
    if dtype.kind == "c":
        return f"complex numbers (dtype {dtype})"
    return f"dtype {dtype}"


def describe(headers: dict, task: str, values: Callable[[str], np.ndarray]) -> Layout:
    """Check the four arrays and say what they hold: shapes and dtypes from ``headers``, values
    (labels, finiteness) from ``values(key)`` only where a check needs them."""
    values = functools.cache(values)  # validation loads each array at most once
    shape = {key: s for key, (s, _) in headers.items()}
    dtype = {key: d for key, (_, d) in headers.items()}
    for key in KEYS:
        if dtype[key].kind not in NUMERIC or dtype[key].fields is not None or dtype[key].subdtype:
            raise SpecError("path", f"{key} holds {_kind_of(dtype[key])}; the arrays must be "
                                    f"numeric (bool, integer or float)")
    x = shape["x_train"]
    if len(x) not in INPUT_KINDS:
        raise SpecError("path", f"x_train has shape {_show(x)}; give x as {SHAPES}")
    if shape["x_val"][1:] != x[1:]:
        raise SpecError("path", f"x_train's examples are {_show(x[1:])} but x_val's are "
                                f"{_show(shape['x_val'][1:])}; both splits need the same shape")
    if 0 in x[1:]:
        raise SpecError("path", f"x_train has shape {_show(x)}: its examples hold no values")
    for split in ("train", "val"):
        xs, ys = shape[f"x_{split}"], shape[f"y_{split}"]
        if len(ys) == 0 or ys[0] != xs[0]:
            got = f"shape {_show(ys)}" if len(ys) == 0 else f"{ys[0]}"
            raise SpecError("path", f"x_{split} has {xs[0]} examples but y_{split} has {got}; "
                                    f"give one target per example")
        if xs[0] == 0:
            raise SpecError("path", f"x_{split} holds no examples")
    if 0 in shape["y_train"][1:]:
        raise SpecError("path", f"y_train has shape {_show(shape['y_train'])}: its targets hold no values")
    if shape["y_val"][1:] != shape["y_train"][1:]:
        raise SpecError("path", f"y_train's targets are {_show(shape['y_train'][1:])} but y_val's "
                                f"are {_show(shape['y_val'][1:])}")
    kind = INPUT_KINDS[len(x)]
    asked, task = task, _task(task, dtype["y_train"], dtype["y_val"])
    target = _target(kind, task, x, shape["y_train"])
    for key in KEYS:  # integers and bools are finite by construction
        if dtype[key].kind == "f":
            bad = ~np.isfinite(values(key))
            if bad.any():
                first = np.argwhere(bad)[0]
                raise SpecError("path", f"{key} holds {int(bad.sum())} NaN or infinite values (the "
                                        f"first at {_show(first)}); drop or fill them")
            if dtype[key].itemsize > 4 and values(key).size:  # float64: training casts it to float32
                top = float(np.max(np.abs(values(key))))
                if top > FLOAT32_MAX:
                    raise SpecError("path", f"{key} holds values up to {top:.3g}, beyond float32's range "
                                            f"({FLOAT32_MAX:.3g}), the precision training runs in; rescale them")
    if asked == "auto" and task == "regression":
        _not_labels(values("y_train"))
    if task == "classification":
        outputs = _classes(values("y_train"), values("y_val"))
    else:
        y = shape["y_train"]
        outputs = 1 if len(y) == 1 or (target == "sequence" and len(y) == 2) else y[-1]
    return Layout(kind, target, task, outputs, x[0], shape["x_val"][0], tuple(x[1:]))


def _task(task: str, train: np.dtype, val: np.dtype) -> str:
    choice(TASKS, task=task)
    if task != "auto":
        return task
    labels = [d.kind in "biu" for d in (train, val)]
    if labels[0] != labels[1]:
        raise SpecError("task", f"is auto but y_train is {train} and y_val is {val} (integer y: "
                                f"classification, float y: regression); save both alike or set "
                                f"data.task=classification or regression")
    return "classification" if labels[0] else "regression"


def _target(kind: str, task: str, x: tuple, y: tuple) -> str | None:
    """Check y's shape against x's; for sequences, one target per sequence or per step."""
    steps = x[1] if kind == "sequence" else None
    per_step = steps is not None and len(y) >= 2 and y[1] == steps
    if task == "classification":
        ok = len(y) == 1 or (len(y) == 2 and (per_step or y[1] == 1))
        expected = ("[n] labels, one per sequence, or [n, steps] labels, one per step"
                    if kind == "sequence" else "[n] labels")
    else:
        ok = len(y) <= 2 or (len(y) == 3 and per_step)
        expected = ("[n] or [n, k] targets per sequence, or [n, steps] or [n, steps, k] per step"
                    if kind == "sequence" else "[n] or [n, k] targets")
    if not ok:
        raise SpecError("path", f"y_train has shape {_show(y)} for x_train {_show(x)} ({kind} "
                                f"inputs, {task}); give y as {expected}")
    if kind != "sequence":
        return None
    return "sequence" if per_step else "last"


LABEL_LIKE = 50  # at most this many distinct whole numbers in float y: labels or values? ask


def _not_labels(y: np.ndarray) -> None:
    """Float y that holds only a few whole numbers (0., 1., 2. from a data frame) could be labels
    or values: with task=auto it would silently be regression, so the user is asked."""
    if not np.array_equal(y, np.round(y)):
        return
    found = np.unique(y)
    if len(found) <= LABEL_LIKE:
        shown = ", ".join(f"{v:g}" for v in found[:5]) + (", ..." if len(found) > 5 else "")
        raise SpecError("task", f"is auto, and y_train is float but holds only {len(found)} whole numbers "
                                f"({shown}): labels or values? Set data.task=classification or "
                                f"data.task=regression")


def _classes(y_train: np.ndarray, y_val: np.ndarray) -> int:
    """K for labels in [0, K): whole numbers >= 0, at least two classes."""
    for key, y in (("y_train", y_train), ("y_val", y_val)):
        if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
            value = y[y != np.round(y)].flat[0]
            raise SpecError("path", f"{key} holds {value:g}; classification labels must be whole "
                                    f"numbers (or set data.task=regression)")
        if y.min() < 0:
            raise SpecError("path", f"{key} holds label {y.min():g}; classification labels must "
                                    f"be integers in [0, K)")
    unseen = np.setdiff1d(np.unique(y_val), np.unique(y_train))
    if len(unseen):
        shown = ", ".join(f"{v:g}" for v in unseen[:5]) + (", ..." if len(unseen) > 5 else "")
        raise SpecError("path", f"y_val holds label(s) {shown} that y_train never has: no model can "
                                f"learn them; split the data so that every class is in y_train")
    classes = int(max(y_train.max(), y_val.max())) + 1
    if classes < 2:
        raise SpecError("path", "y_train and y_val hold only label 0; classification needs two "
                                "classes or more (or set data.task=regression)")
    if classes > 2**31 - 1:
        raise SpecError("path", f"labels reach {classes - 1}; classification labels must be "
                                f"integers in [0, K) with K below 2**31")
    return classes
