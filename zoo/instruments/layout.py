"""The names and shapes of what the train step returns, declared once.

The compiled step returns one packed float64 vector per step (and a second one on histogram
steps), because Python converting one small tensor is cheaper than converting ten. A
:class:`Layout` is the only place that knows the packing: the step hands it a dict of named
tensors (``zoo.instruments.graph_stats.pack``), the recorder gets the same dict back as numpy
(``unpack``). Each :class:`Field` also says how it reaches MLflow per ``log_every`` window. The
per-step series' fields are made from their declarations in zoo.instruments.series; an
instrument's, where it computes them.

numpy only: the recorder and the raw statistics file do not import TensorFlow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


LOG10_ZERO = -46.0  # where log10 of an exact 0 is drawn: below float32's smallest value (log10 1.4e-45 = -44.85)


def flow_ratio(first: float, last: float) -> float:
    """first / last, with 0/0 = 1 (nothing reaches either end: no loss between them) and
    x/0 = inf."""
    if last == 0:
        return 1.0 if first == 0 else np.inf
    return first / last


def log10_for_charts(values) -> np.ndarray:
    """log10 of non-negative values (norms) for MLflow's charts, whose axes are linear by
    default: a chart of log10 norms shows decades (1e-17 and 1e-3 read as -17 and -3, where a
    linear chart's ticks all read 0). An exact 0 becomes :data:`LOG10_ZERO`, not -inf: MLflow
    stores -inf as -1.8e308, which flattens every other point of the chart; inf stays inf."""
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(values == 0, LOG10_ZERO, np.log10(values))


@dataclass(frozen=True)
class Field:
    name: str
    shape: tuple[int, ...] = ()     # per step: () a scalar, (L,) one value per layer, (L, B) ...
    labels: tuple[str, ...] = ()    # names along the first axis (layers, heads): MLflow keys
    window: str | None = None       # how a log_every window reaches MLflow: "mean" | "last" | None
    mlflow_name: str | None = None  # MLflow key (prefix for labelled fields); default: name
    undefined_nan: bool = False     # NaN means "does not apply" (accuracy of a regression): not logged
    log10: bool = False             # MLflow gets log10 of the value (norms spanning decades)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def window_metrics(self, values: np.ndarray) -> dict[str, float]:
        """MLflow points for one window of this field's per-step values [steps, *shape]."""
        if self.window is None or len(values) == 0:
            return {}
        value = np.mean(values, axis=0) if self.window == "mean" else values[-1]
        if self.log10:
            value = log10_for_charts(value)
        key = self.mlflow_name or self.name
        if self.shape == ():  # a NaN loss is news (divergence); an undefined metric is not
            return {} if self.undefined_nan and np.isnan(value) else {key: float(value)}
        return {f"{key}/{label}": float(v) for label, v in zip(self.labels, np.ravel(value))}


@dataclass(frozen=True)
class Layout:
    fields: tuple[Field, ...]

    @property
    def width(self) -> int:
        return sum(f.size for f in self.fields)

    def offset(self, name: str) -> int:
        """Where field ``name`` starts in the packed vector (its first value, for a scalar)."""
        first = 0
        for f in self.fields:
            if f.name == name:
                return first
            first += f.size
        raise KeyError(name)

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)

    def unpack(self, packed: np.ndarray) -> dict[str, np.ndarray]:
        """[steps, width] (or one [width] vector) -> {name: [steps, *shape]}."""
        packed = np.atleast_2d(packed)
        out, first = {}, 0
        for f in self.fields:
            out[f.name] = packed[:, first:first + f.size].reshape(len(packed), *f.shape)
            first += f.size
        return out

    def empty(self) -> dict[str, np.ndarray]:
        return self.unpack(np.zeros((0, self.width), np.float64))


def kernel_name(path: str) -> str | None:
    """Monitored layer name of a weight matrix, from its variable path: ``block03_dense/kernel``
    -> ``block03_dense``, ``rnn1/lstm_cell/recurrent_kernel`` -> ``rnn1/recurrent``, an
    ``Embedding``'s ``emb/embeddings`` -> ``emb``; None for biases, norm scales and other
    non-kernel variables."""
    *where, leaf = path.split("/")
    if not leaf.endswith("kernel") and leaf != "embeddings":
        return None
    layer = "/".join(p for p in where if not p.endswith("_cell"))
    return layer if leaf in ("kernel", "embeddings") else f"{layer}/{leaf.removesuffix('_kernel')}"
