"""A regression task generated from a seed, with targets in the units one chooses: Gaussian
inputs, targets the outputs of a random one-hidden-layer tanh teacher network.

The teacher's outputs are standardized over the training split (zero mean, unit variance per
output, both splits by the training statistics) and then multiplied by ``target_scale``: at 1 the
targets are what a user who standardizes them trains on, at 100 or 10,000 they stand for targets
left in raw units (prices, counts). The task is the same at every scale; only its units differ,
so a run's loss read against the best constant predictor's (the targets' variance) compares
across scales.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.data import DATASETS, Dataset
from zoo.config.schema import Section, at_least, positive


@dataclass
class SyntheticRegressionConfig(Section):
    n_train: int = 4096        # training examples
    n_val: int = 1024          # validation examples
    n_features: int = 16       # input dimension (standard Gaussian inputs)
    n_outputs: int = 1         # regression targets per example
    target_scale: float = 1.0  # the targets' std on the training split (1: standardized)
    seed: int = 0  # the data's own seed, apart from the run's: runs vary init, not data

    def __post_init__(self):
        at_least(1, n_train=self.n_train, n_val=self.n_val, n_features=self.n_features,
                 n_outputs=self.n_outputs)
        positive(target_scale=self.target_scale)  # finite: zoo.config.schema.check_finite, for every float knob


@DATASETS.register("synthetic_regression", schema=SyntheticRegressionConfig, input_kind="flat",
                   description="Gaussian inputs, targets a random tanh teacher network's outputs "
                               "with std target_scale (1: standardized)")
def make_synthetic_regression(*, n_train, n_val, n_features, n_outputs, target_scale, seed):
    rng = np.random.default_rng(seed)
    hidden = 32
    w1 = rng.normal(0, 1 / np.sqrt(n_features), (n_features, hidden))
    w2 = rng.normal(0, 1 / np.sqrt(hidden), (hidden, n_outputs))
    x = rng.normal(size=(n_train + n_val, n_features))
    y = np.tanh(x @ w1) @ w2
    mean, std = y[:n_train].mean(axis=0), y[:n_train].std(axis=0)
    y = (y - mean) / std * target_scale
    x, y = x.astype(np.float32), y.astype(np.float32)
    baseline = float(np.mean((y[n_train:].astype(np.float64) - y[:n_train].mean(axis=0, dtype=np.float64)) ** 2))
    return Dataset("synthetic_regression", x[:n_train], y[:n_train], x[n_train:], y[n_train:], "regression",
                   n_outputs, {"val_loss": baseline})
