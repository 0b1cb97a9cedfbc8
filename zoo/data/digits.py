"""scikit-learn's bundled 8x8 handwritten digits (1,797 images): real data, shipped, no download.

``layout=flat`` gives 64 features per example (for MLPs); ``layout=image`` gives 8x8x1 images
(for conv nets), or 32x32x1 with ``image_size=32``, each pixel repeated as a 4x4 block
(nearest neighbour), the CIFAR resolution the ResNet stages were designed for.

``standardize=True`` subtracts one mean and divides by one std, both over all pixels of the
training split, for both layouts. For images that is the per-channel convention of CIFAR
ResNets (He et al. 2016), here with one channel. For flat inputs the usual MLP convention is per
feature, but the 64 features here are not in different units: every one is the same ink count,
0..16. Per-pixel statistics would divide rarely inked border pixels by a std as small as 0.03,
putting single inputs at 38 standard deviations on the training split and 54 on the validation
split, a first-layer pre-activation that saturates a tanh or sigmoid for those examples alone,
whatever the init. One mean and std keeps every input within |x| <= 1.85 on both splits (the
bound ``tests/test_datasets.py`` checks) and the relative contrast of the pixels as drawn; flat
and image layouts hold the same numbers.

``targets=onehot`` makes the task a regression onto the one-hot vector of each label (1 at the
true class, 0 elsewhere), trained with mean squared error: the square-loss classification of
Cohen et al. 2021 ("Gradient Descent on Neural Networks Typically Occurs at the Edge of
Stability"; its code's ``mse`` loss), under which their edge of stability shows most clearly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.data import DATASETS, Dataset, prior_baselines
from zoo.config.schema import Section, SpecError, choice, in_unit_interval

SPLIT_SEED = 0  # the train/val split is fixed, so runs with different seeds see the same data
LAYOUTS = ("flat", "image")
TARGETS = ("labels", "onehot")
IMAGE_SIZES = (8, 32)


@dataclass
class DigitsConfig(Section):
    val_fraction: float = 0.2  # held out, stratified by class, with a fixed split seed
    standardize: bool = True  # zero mean, unit variance over all training pixels (one mean, one std)
    layout: str = "flat"      # flat: (N, 64) | image: (N, size, size, 1)
    image_size: int = 8       # 8 | 32 (nearest-neighbour upsampling); layout=image only
    targets: str = "labels"   # labels: classification | onehot: regression onto one-hot vectors (mean squared error)

    def __post_init__(self):
        in_unit_interval(val_fraction=self.val_fraction)
        choice(LAYOUTS, layout=self.layout)
        choice(IMAGE_SIZES, image_size=self.image_size)
        choice(TARGETS, targets=self.targets)
        if self.image_size != 8 and self.layout != "image":
            raise SpecError("image_size", f"is only used with data.layout=image, got "
                                          f"image_size={self.image_size} with layout={self.layout}")

    @property
    def input_kind(self) -> str:
        """What this configuration produces, for matching against a model's ``input_kind``."""
        return "image" if self.layout == "image" else "flat"


@DATASETS.register("digits", schema=DigitsConfig, input_kind="flat", input_kinds=LAYOUTS,
                   description="scikit-learn 8x8 digits, 10 classes: 64 features or (with "
                               "layout=image) 8x8x1 / 32x32x1 images")
def load_digits(*, val_fraction, standardize, layout="flat", image_size=8, targets="labels"):
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    x, y = sk_load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x.astype(np.float32), y.astype(np.int32), test_size=val_fraction,
        random_state=SPLIT_SEED, stratify=y)
    if standardize:  # one mean and std over every training pixel: see the module docstring
        mean, std = x_train.mean(), x_train.std()
        x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    if layout == "image":
        x_train, x_val = (_as_images(x, image_size) for x in (x_train, x_val))
    if targets == "onehot":  # the square-loss classification of Cohen et al. 2021 (its code's "mse" targets)
        eye = np.eye(10, dtype=np.float32)
        mean = eye[y_train].mean(axis=0, dtype=np.float64)  # the best constant prediction
        return Dataset("digits", x_train, eye[y_train], x_val, eye[y_val], "regression", 10,
                       {"val_loss": float(np.mean((eye[y_val] - mean) ** 2))})
    return Dataset("digits", x_train, y_train, x_val, y_val, "classification", 10,
                   prior_baselines(y_train, y_val, 10))


def _as_images(x: np.ndarray, size: int) -> np.ndarray:
    """(N, 64) -> (N, size, size, 1), repeating each of the 8x8 pixels as a square block."""
    images = x.reshape(-1, 8, 8)
    factor = size // 8
    if factor > 1:
        images = images.repeat(factor, axis=1).repeat(factor, axis=2)
    return np.ascontiguousarray(images[..., None], dtype=np.float32)
