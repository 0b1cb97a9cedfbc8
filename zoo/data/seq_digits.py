"""scikit-learn's 8x8 digits read as a sequence: the small, shipped cousin of sequential MNIST.

``mode="pixel"`` feeds one pixel per step (64 steps x 1 feature, the pixel-by-pixel setting of
Le et al. 2015, long enough for plain RNNs' gradients to fade); ``mode="row"`` feeds one image
row per step (8 steps x 8 features). The split (stratified 80/20, ``random_state`` 0) and the
standardization (one mean and std over all training pixels, |x| <= 1.85) are those of the
``digits`` dataset, so the two see the same examples with the same values; ``standardize=False``
keeps the raw ink counts, whole numbers 0..16.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.data import DATASETS, Dataset, prior_baselines
from zoo.config.schema import Section, choice

# The same split as zoo/data/digits.py (its SPLIT_SEED and default val_fraction), kept here so
# this module does not depend on that file's internals.
SPLIT_SEED = 0
VAL_FRACTION = 0.2
MODES = {"pixel": (64, 1), "row": (8, 8)}  # mode -> (steps, features)


@dataclass
class SeqDigitsConfig(Section):
    mode: str = "pixel"  # "pixel": 64 steps x 1 feature; "row": 8 steps x 8 features
    standardize: bool = True  # zero mean, unit variance over all training pixels; false: raw ink 0..16

    def __post_init__(self):
        choice(MODES, mode=self.mode)


@DATASETS.register("seq_digits", schema=SeqDigitsConfig, input_kind="sequence", target="last",
                   description="scikit-learn 8x8 digits as a sequence of pixels or rows, 10 classes")
def load_seq_digits(*, mode, standardize=True):
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    x, y = sk_load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x.astype(np.float32), y.astype(np.int32), test_size=VAL_FRACTION,
        random_state=SPLIT_SEED, stratify=y)
    if standardize:
        mean, std = x_train.mean(), x_train.std()  # one unit (ink 0..16) for every pixel: see digits
        x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    steps, features = MODES[mode]
    x_train = np.ascontiguousarray(x_train.reshape(-1, steps, features), dtype=np.float32)
    x_val = np.ascontiguousarray(x_val.reshape(-1, steps, features), dtype=np.float32)
    return Dataset("seq_digits", x_train, y_train, x_val, y_val, "classification", 10,
                   prior_baselines(y_train, y_val, 10))
