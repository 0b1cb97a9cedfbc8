"""scikit-learn's bundled 8x8 handwritten digits (1,797 images): real data, shipped, no download."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.data import DATASETS, Dataset, prior_baselines
from zoo.schema import Section, in_unit_interval

SPLIT_SEED = 0  # the train/val split is fixed, so runs with different seeds see the same data


@dataclass
class DigitsConfig(Section):
    val_fraction: float = 0.2
    standardize: bool = True  # per-pixel zero mean, unit variance from the training split

    def __post_init__(self):
        in_unit_interval(val_fraction=self.val_fraction)


@DATASETS.register("digits", schema=DigitsConfig, input_kind="flat",
                   description="scikit-learn 8x8 digits as 64 features, 10 classes")
def load_digits(*, val_fraction, standardize):
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    x, y = sk_load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x.astype(np.float32), y.astype(np.int32), test_size=val_fraction,
        random_state=SPLIT_SEED, stratify=y)
    if standardize:
        mean, std = x_train.mean(axis=0), x_train.std(axis=0)
        std[std == 0] = 1.0  # border pixels that are always blank
        x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    return Dataset("digits", x_train, y_train, x_val, y_val, "classification", 10,
                   prior_baselines(y_train, y_val, 10))
