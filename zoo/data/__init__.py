"""The dataset registry. Builders return a :class:`Dataset` of numpy arrays, made from shipped
or generated data only: nothing here downloads at run time unless a dataset says so.

A builder is ``build(**options) -> Dataset``; its options are the fields of its schema.

Tags: ``input_kind`` ("flat", "image", "sequence"; ``input_kinds`` when a layout option picks
one), and for sequence datasets ``target``: "last" (one target per sequence) or "sequence" (one
per time step), which a recurrent model's ``head`` must match.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field

import numpy as np

from zoo.config.registry import Registry

DATASETS = Registry("dataset")


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    task: str                   # "classification" (integer labels) | "regression"
    num_outputs: int            # classes, or regression targets
    # Trivial predictors' scores, so a curve can be read against "learned nothing":
    baselines: dict[str, float] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def prior_baselines(y_train: np.ndarray, y_val: np.ndarray, num_classes: int) -> dict[str, float]:
    """Cross-entropy and accuracy of predicting the training class frequencies on every input."""
    prior = np.bincount(y_train, minlength=num_classes) / len(y_train)
    val_loss = float(-np.mean(np.log(np.clip(prior[y_val], 1e-12, None))))
    return {"val_loss": val_loss, "val_accuracy": float(np.mean(y_val == np.argmax(prior)))}


def constant_baseline(data: Dataset) -> float:
    """Training-split loss of the best constant predictor, the "learned nothing" score a run's
    training loss is read against: the entropy of the label frequencies (cross-entropy of
    predicting them everywhere) for classification, the targets' variance (MSE of predicting
    their mean) for regression."""
    y = np.asarray(data.y_train)
    if data.task == "classification":
        p = np.bincount(y.ravel(), minlength=data.num_outputs) / y.size
        p = p[p > 0]
        return float(-np.sum(p * np.log(p)))
    return float(np.mean(np.var(y.astype(np.float64), axis=0)))


for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
