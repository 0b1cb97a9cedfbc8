"""A classification task generated from a seed: Gaussian inputs labelled by a random teacher net.

Labels are the argmax of a random one-hidden-layer tanh network, so the task is learnable but
not linearly separable, and any size can be made without shipping data.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.data import DATASETS, Dataset, prior_baselines
from zoo.config.schema import Section, at_least


@dataclass
class SyntheticConfig(Section):
    n_train: int = 4096      # training examples
    n_val: int = 1024        # validation examples
    n_features: int = 32     # input dimension
    n_classes: int = 10      # labels of the teacher network
    seed: int = 0  # the data's own seed, apart from the run's: runs vary init, not data

    def __post_init__(self):
        at_least(1, n_train=self.n_train, n_val=self.n_val, n_features=self.n_features)
        at_least(2, n_classes=self.n_classes)


@DATASETS.register("synthetic", schema=SyntheticConfig, input_kind="flat",
                   description="Gaussian inputs labelled by a random tanh teacher network")
def make_synthetic(*, n_train, n_val, n_features, n_classes, seed):
    rng = np.random.default_rng(seed)
    hidden = 4 * n_classes
    w1 = rng.normal(0, 1 / np.sqrt(n_features), (n_features, hidden))
    w2 = rng.normal(0, 1 / np.sqrt(hidden), (hidden, n_classes))
    x = rng.normal(size=(n_train + n_val, n_features)).astype(np.float32)
    y = np.argmax(np.tanh(x @ w1) @ w2, axis=1).astype(np.int32)
    x_train, x_val, y_train, y_val = x[:n_train], x[n_train:], y[:n_train], y[n_train:]
    return Dataset("synthetic", x_train, y_train, x_val, y_val, "classification", n_classes,
                   prior_baselines(y_train, y_val, n_classes))
