"""Is a loss well posed on its targets? The floor of each Keras loss, the targets it reads, and
the best constant predictor's value, from the losses' definitions alone (numpy only).

A loss that reads targets outside its domain measures nothing a run can improve on: binary
cross-entropy on labels 0..9 is ``-[y log p + (1 - y) log(1 - p)]`` with ``y = 9``, which falls
below 0 as ``p`` grows (a sigmoid MLP under Adam: 1.43 → −34.9 in 10 epochs, at chance accuracy),
and a sparse cross-entropy given labels 2.5 reads class 2. Such a run is **ill-posed**: its progress is
neither learning nor stalled (zoo.records.summary.progress), and the one-line reason says why.

The rules, each fixed by the loss's definition in Keras 3 (``keras.losses``), not by measuring:

- **floor**: the least value the loss takes on targets it reads, over all predictions. Every
  cross-entropy, KL divergence, hinge, Dice / Tversky and every error (MSE, MAE, Huber, log-cosh,
  MSLE, MAPE) is a mean of non-negative terms: floor 0. Cosine similarity (Keras returns
  ``-cos``): −1. Poisson (``p - y log p``): ``mean(y - y log y)`` over the targets, the value at
  ``p = y``, so it depends on them.
- **below the floor**: a loss value under ``floor - FLOOR_TOLERANCE * (1 + |floor|)``. A float32
  mean of non-negative terms is non-negative exactly; the margin only absorbs rounding near −1.
- **the targets each loss reads** (:data:`KINDS`): binary cross-entropy (and its focal variant,
  Dice, Tversky) ``[0, 1]``; sparse categorical cross-entropy integers in ``[0, classes)``
  (Keras casts other values to an integer index); categorical cross-entropy (and focal, KL
  divergence, categorical hinge) rows on the simplex: entries in ``[0, 1]`` summing to 1 within
  ``ROW_SUM_TOLERANCE``; hinge and squared hinge −1 or 1 (all-0/1 targets are converted by Keras);
  Poisson ``y >= 0``; mean squared logarithmic error ``y >= 0`` (Keras reads lower values as 0);
  mean absolute percentage error ``y != 0`` (it divides by ``|y|``); the other errors any finite
  number. Every loss reads finite targets only.
- **the best constant predictor** (:func:`constant_loss`), what "learned nothing" scores: the
  entropy of the label frequencies (sparse), of the mean target row (categorical), the mean
  binary entropy of each output's mean (binary), each output's variance (MSE), mean absolute
  deviation from the median (MAE), ``mean(ȳ - ȳ log ȳ)`` (Poisson), ``2 min(p, 1 - p)`` and
  ``4 p (1 - p)`` with ``p`` the share of positive targets (hinge, squared hinge); None where no
  closed form exists (Huber, log-cosh, MSLE, MAPE, cosine similarity).

Example::

    >>> ill_posed("binary_crossentropy", targets=np.arange(10.0))
    'binary cross-entropy read targets outside [0, 1]: 0 … 9'
    >>> ill_posed("mse", values=[-3.0])
    'mean squared error fell to -3, below its floor 0'
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass

import numpy as np

LABEL = "ill-posed"        # the progress label of an ill-posed loss (zoo.records.summary.progress)
FLOOR_TOLERANCE = 1e-6     # relative margin below a floor that float32 rounding can reach
ROW_SUM_TOLERANCE = 1e-3   # a target row on the simplex sums to 1 within this
DISTINCT = 16              # a target summary keeps the distinct values when there are at most this many


@dataclass(frozen=True)
class Kind:
    """One Keras loss: its name (``keras.losses``' function), in words, its floor (None: it
    depends on the targets), and the targets it reads, in words."""
    name: str
    words: str
    floor: float | None
    reads: str


@dataclass(frozen=True)
class Targets:
    """What the rules need to know of a target array, without the array: a monitor can keep
    this for each batch. ``row_low`` / ``row_high``: the least and greatest sum over the last
    axis (None for one value per example); ``distinct``: the sorted distinct values when there
    are at most :data:`DISTINCT` (else None)."""
    low: float
    high: float
    integral: bool
    finite: bool
    zeros: int
    row_low: float | None = None
    row_high: float | None = None
    distinct: tuple[float, ...] | None = None

    @classmethod
    def of(cls, y) -> "Targets":
        """The summary of an array of targets (any shape; the last axis is a row)."""
        a = np.asarray(y, dtype=np.float64)
        finite = bool(np.all(np.isfinite(a)))
        shown = a[np.isfinite(a)] if not finite else a
        if shown.size == 0:
            return cls(math.nan, math.nan, False, finite, 0)
        values = np.unique(shown)
        rows = a.sum(axis=-1) if a.ndim >= 2 and a.shape[-1] > 1 else None
        return cls(float(shown.min()), float(shown.max()), bool(np.all(shown == np.round(shown))), finite,
                   int(np.sum(shown == 0)), None if rows is None else float(np.nanmin(rows)),
                   None if rows is None else float(np.nanmax(rows)),
                   tuple(float(v) for v in values) if len(values) <= DISTINCT else None)

    def merged(self, other: "Targets") -> "Targets":
        """The summary of both arrays together (a monitor keeps one per batch and merges them)."""
        def pick(a, b, fn):
            return b if a is None else a if b is None else fn(a, b)
        distinct = (tuple(sorted(set(self.distinct) | set(other.distinct)))
                    if self.distinct is not None and other.distinct is not None else None)
        return Targets(pick(self.low, other.low, min), pick(self.high, other.high, max),
                       self.integral and other.integral, self.finite and other.finite, self.zeros + other.zeros,
                       pick(self.row_low, other.row_low, min), pick(self.row_high, other.row_high, max),
                       distinct if distinct is None or len(distinct) <= DISTINCT else None)

    @property
    def span(self) -> str:
        return f"{_g(self.low)} … {_g(self.high)}"


def _g(x: float) -> str:
    return f"{x:.4g}"


def _unit_interval(t: Targets, kind: Kind, classes) -> str | None:
    if t.low < 0 or t.high > 1:
        return f"{kind.words} read targets outside [0, 1]: {t.span}"
    return None


def _class_indices(t: Targets, kind: Kind, classes) -> str | None:
    if not t.integral:
        return f"{kind.words} read targets that are not integers ({t.span}): Keras casts them to a class index"
    top = f"{classes}" if classes else "∞"
    if t.low < 0 or (classes and t.high >= classes):
        return f"{kind.words} read targets outside [0, {top}): {t.span}"
    return None


def _simplex(t: Targets, kind: Kind, classes) -> str | None:
    if t.row_low is None:
        return f"{kind.words} read one target per example ({t.span}), not a row of class probabilities"
    if t.low < 0 or t.high > 1 or abs(t.row_low - 1) > ROW_SUM_TOLERANCE or abs(t.row_high - 1) > ROW_SUM_TOLERANCE:
        return (f"{kind.words} read target rows that are not distributions (entries {t.span}, row sums "
                f"{_g(t.row_low)} … {_g(t.row_high)}; it reads entries in [0, 1] summing to 1)")
    return None


def _signs(t: Targets, kind: Kind, classes) -> str | None:
    if t.distinct is not None and (set(t.distinct) <= {-1.0, 1.0} or set(t.distinct) <= {0.0, 1.0}):
        return None
    return f"{kind.words} read targets other than -1 and 1 (or 0 and 1): {t.span}"


def _non_negative(t: Targets, kind: Kind, classes, why: str = "") -> str | None:
    if t.low < 0:
        return f"{kind.words} read targets below 0: {t.span}{why}"
    return None


def _non_zero(t: Targets, kind: Kind, classes) -> str | None:
    if t.zeros:
        return f"{kind.words} read {t.zeros} targets equal to 0: it divides by |y|"
    return None


KINDS = {k.name: (k, rule) for k, rule in (
    (Kind("binary_crossentropy", "binary cross-entropy", 0.0, "[0, 1]"), _unit_interval),
    (Kind("binary_focal_crossentropy", "binary focal cross-entropy", 0.0, "[0, 1]"), _unit_interval),
    (Kind("sparse_categorical_crossentropy", "sparse categorical cross-entropy", 0.0,
          "integers in [0, classes)"), _class_indices),
    (Kind("categorical_crossentropy", "categorical cross-entropy", 0.0, "rows on the simplex"), _simplex),
    (Kind("categorical_focal_crossentropy", "categorical focal cross-entropy", 0.0, "rows on the simplex"), _simplex),
    (Kind("kl_divergence", "KL divergence", 0.0, "rows on the simplex"), _simplex),
    (Kind("categorical_hinge", "categorical hinge", 0.0, "rows on the simplex"), _simplex),
    (Kind("hinge", "hinge", 0.0, "-1 or 1 (or 0 and 1)"), _signs),
    (Kind("squared_hinge", "squared hinge", 0.0, "-1 or 1 (or 0 and 1)"), _signs),
    (Kind("poisson", "Poisson", None, "[0, ∞)"), _non_negative),
    (Kind("dice", "Dice", 0.0, "[0, 1]"), _unit_interval),
    (Kind("tversky", "Tversky", 0.0, "[0, 1]"), _unit_interval),
    (Kind("mean_squared_error", "mean squared error", 0.0, "any number"), None),
    (Kind("mean_absolute_error", "mean absolute error", 0.0, "any number"), None),
    (Kind("huber", "Huber", 0.0, "any number"), None),
    (Kind("log_cosh", "log-cosh", 0.0, "any number"), None),
    (Kind("mean_squared_logarithmic_error", "mean squared logarithmic error", 0.0, "[0, ∞)"),
     functools.partial(_non_negative, why="; Keras reads them as 0 before the log")),
    (Kind("mean_absolute_percentage_error", "mean absolute percentage error", 0.0, "numbers other than 0"), _non_zero),
    (Kind("cosine_similarity", "cosine similarity", -1.0, "any vector"), None),
)}

ALIASES = {"mse": "mean_squared_error", "mae": "mean_absolute_error", "mape": "mean_absolute_percentage_error",
           "msle": "mean_squared_logarithmic_error", "kld": "kl_divergence", "kldivergence": "kl_divergence",
           "kullback_leibler_divergence": "kl_divergence", "bce": "binary_crossentropy", "huber_loss": "huber",
           "logcosh": "log_cosh"}


def kind_of(loss) -> str | None:
    """The Keras name of ``loss`` (:data:`KINDS`' key), or None for a loss the rules do not know:
    ``loss`` a name ("mse", "binary_crossentropy", "BinaryCrossentropy"), a Keras loss object or
    function, or its config (``keras.losses.serialize``: ``{"class_name": ..., "config": ...}``,
    or ``get_config()``: ``{"name": ...}``)."""
    names = []
    if isinstance(loss, str):
        names.append(loss)
    elif isinstance(loss, dict):
        names += [loss.get("class_name"), (loss.get("config") or {}).get("name") if isinstance(loss.get("config"), dict)
                  else loss.get("config"), loss.get("name")]
    elif loss is not None:
        names.append(type(loss).__name__)
        config = loss.get_config() if hasattr(loss, "get_config") else {}
        names += [config.get("name") if isinstance(config, dict) else None, getattr(loss, "__name__", None)]
        fn = getattr(loss, "fn", None)  # a LossFunctionWrapper around a named function
        names.append(getattr(fn, "__name__", None))
    for name in names:
        if not isinstance(name, str):
            continue
        snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
        for candidate in (name, name.lower(), snake):
            candidate = ALIASES.get(candidate, candidate)
            if candidate in KINDS:
                return candidate
    return None


def kind(loss) -> Kind | None:
    """The :class:`Kind` of ``loss`` (see :func:`kind_of`), or None."""
    name = kind_of(loss)
    return KINDS[name][0] if name else None


def floor(loss, targets=None) -> float | None:
    """The least value ``loss`` can take on ``targets`` (an array; needed for Poisson only), or
    None when it is not known."""
    k = kind(loss)
    if k is None:
        return None
    if k.floor is not None:
        return k.floor
    if k.name == "poisson" and targets is not None and not isinstance(targets, Targets):
        y = np.asarray(targets, dtype=np.float64)
        if np.all(y >= 0):
            return float(np.mean(np.where(y > 0, y - y * np.log(np.where(y > 0, y, 1.0)), 0.0)))
    return None


def target_reason(loss, targets, classes: int | None = None) -> str | None:
    """Why ``loss`` cannot read ``targets`` (an array or a :class:`Targets`), in one line, or
    None. ``classes``: the number of classes of a sparse cross-entropy's head (its units)."""
    k = kind(loss)
    if k is None or targets is None:
        return None
    t = targets if isinstance(targets, Targets) else Targets.of(targets)
    if not t.finite:
        return f"{k.words} read targets that are not finite"
    rule = KINDS[k.name][1]
    return rule(t, k, classes) if rule else None


def below_floor(loss, values, targets=None) -> str | None:
    """Why a loss value of ``loss`` is impossible, in one line (the least of ``values`` is below
    its floor), or None."""
    low = floor(loss, targets)
    if low is None or values is None:
        return None
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size and v.min() < low - FLOOR_TOLERANCE * (1 + abs(low)):
        return f"{kind(loss).words} fell to {v.min():.4g}, below its floor {low:.4g}"
    return None


def ill_posed(loss, targets=None, values=None, classes: int | None = None) -> str | None:
    """The ill-posed rule: None when ``loss`` is well posed, else the one-line reason: the
    targets are outside what the loss reads (:func:`target_reason`), or a loss value is below
    its floor (:func:`below_floor`).

    Args:
        loss: a loss name, Keras loss object or function, or its config (:func:`kind_of`).
        targets: the targets the loss read (an array, or a :class:`Targets` summary), or None.
        values: loss values (a scalar or an array), or None.
        classes: a sparse cross-entropy's number of classes (the head's units), or None.

    Returns:
        None, or the reason, e.g. "binary cross-entropy read targets outside [0, 1]: 0 … 9".
        A loss the rules do not know (:data:`KINDS`) is never ill-posed.
    """
    return target_reason(loss, targets, classes) or below_floor(loss, values, targets)


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-300, 1.0)
    r = np.clip(1 - p, 1e-300, 1.0)
    return -(np.where(p > 0, p * np.log(q), 0.0) + np.where(p < 1, (1 - p) * np.log(r), 0.0))


def constant_loss(loss, targets) -> float | None:
    """The loss of the best constant predictor on ``targets`` (the predictions a net that learned
    nothing can make at best), from the loss's definition; None for a loss with no closed form
    here, for targets the loss cannot read (:func:`target_reason`), or no targets.

    Args:
        loss: a loss name, Keras loss object or function, or its config (:func:`kind_of`).
        targets: the training targets (an array; the last axis is one example's outputs, or
            classes for a categorical loss).

    Returns:
        The best constant predictor's mean loss, or None.
    """
    name = kind_of(loss)
    if name is None or targets is None or target_reason(loss, targets):
        return None
    y = np.asarray(targets, dtype=np.float64)
    if y.size == 0:
        return None
    columns = y.reshape(-1, y.shape[-1]) if y.ndim >= 2 else y.reshape(-1, 1)
    mean = columns.mean(axis=0)
    if name == "sparse_categorical_crossentropy":
        return _entropy(np.bincount(y.astype(np.int64).ravel()) / y.size)
    if name == "categorical_crossentropy":
        return _entropy(mean)
    if name == "binary_crossentropy":
        return float(np.mean(_binary_entropy(mean)))
    if name == "mean_squared_error":
        return float(np.mean(columns.var(axis=0)))
    if name == "mean_absolute_error":
        return float(np.mean(np.abs(columns - np.median(columns, axis=0))))
    if name == "poisson":
        c = np.clip(mean, 1e-300, None)
        return float(np.mean(mean - mean * np.log(c)))
    if name in ("hinge", "squared_hinge"):
        positive = float(np.mean(columns > 0))
        return 2 * min(positive, 1 - positive) if name == "hinge" else 4 * positive * (1 - positive)
    return None
