"""MNIST, Fashion-MNIST and CIFAR-10 through ``keras.datasets.<name>.load_data()``.

Unlike the other datasets these are *downloaded*, on first use, by Keras' ``get_file``: into
``$KERAS_HOME/datasets`` (``~/.keras/datasets`` when ``KERAS_HOME`` is unset; Keras reads the
variable once, when it is imported), and reused from there afterwards. Keras checks the cached
MNIST and CIFAR-10 archives against their published SHA-256 before use (Fashion-MNIST has no
hash) and downloads again on a mismatch. Images are scaled to [0, 1] float32, then, with
``standardize`` (the default), shifted and scaled per channel by the training split's mean and
standard deviation. ``n_train`` / ``n_val`` keep the first examples of Keras' train / test
split (0 keeps all); validation data always comes from the test split.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.data import DATASETS, Dataset, prior_baselines
from zoo.config.schema import Section, SpecError, at_least
from zoo._lazy import pin_backend


@dataclass
class KerasImageConfig(Section):
    standardize: bool = True  # per-channel zero mean, unit variance from the training split
    n_train: int = 0          # first n training images; 0 = all
    n_val: int = 0            # first n of Keras' test split as validation; 0 = all

    def __post_init__(self):
        at_least(0, n_train=self.n_train, n_val=self.n_val)


def _subset(x: np.ndarray, y: np.ndarray, n: int, key: str, name: str):
    if n > len(x):
        raise SpecError(f"data.{key}", f"must be <= {len(x)} for {name}, got {n}")
    return (x[:n], y[:n]) if n else (x, y)


def _to_float(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32)
    x /= np.float32(255.0)
    return x


def _channel_stats(x: np.ndarray):
    """Per-channel mean and std of ``(N, H, W, C)`` images, one channel at a time (saves memory)."""
    means, stds = [], []
    for c in range(x.shape[-1]):
        channel = x[..., c]
        mean = float(channel.mean(dtype=np.float64))
        std = float(np.sqrt(np.mean(np.square(channel - np.float32(mean)), dtype=np.float64)))
        means.append(mean)
        stds.append(std if std > 0 else 1.0)
    return np.asarray(means, np.float32), np.asarray(stds, np.float32)


def load_keras_images(name: str, *, standardize: bool, n_train: int, n_val: int) -> Dataset:
    """Load ``keras.datasets.<name>`` as ``(N, H, W, C)`` float32 images and int32 labels."""
    pin_backend()
    import keras

    (x_train, y_train), (x_val, y_val) = getattr(keras.datasets, name).load_data()
    x_train, y_train = _subset(x_train, y_train, n_train, "n_train", name)
    x_val, y_val = _subset(x_val, y_val, n_val, "n_val", name)
    if x_train.ndim == 3:  # grayscale (N, H, W) -> (N, H, W, 1)
        x_train, x_val = x_train[..., None], x_val[..., None]
    elif keras.config.image_data_format() == "channels_first":  # cifar10 honours keras.json
        x_train, x_val = x_train.transpose(0, 2, 3, 1), x_val.transpose(0, 2, 3, 1)
    x_train, x_val = _to_float(x_train), _to_float(x_val)
    if standardize:
        mean, std = _channel_stats(x_train)
        for x in (x_train, x_val):
            x -= mean
            x /= std
    y_train = np.asarray(y_train).reshape(-1).astype(np.int32)
    y_val = np.asarray(y_val).reshape(-1).astype(np.int32)
    return Dataset(name, x_train, y_train, x_val, y_val, "classification", 10,
                   prior_baselines(y_train, y_val, 10))


def _register(name: str, description: str) -> None:
    def build(*, standardize, n_train, n_val):
        return load_keras_images(name, standardize=standardize, n_train=n_train, n_val=n_val)

    build.__name__ = f"load_{name}"
    build.__doc__ = description
    DATASETS.register(name, schema=KerasImageConfig, input_kind="image",
                      description=description)(build)


_register("mnist", "MNIST handwritten digits, 28x28x1, 10 classes (downloaded by Keras)")
_register("fashion_mnist", "Fashion-MNIST clothing, 28x28x1, 10 classes (downloaded by Keras)")
_register("cifar10", "CIFAR-10 colour images, 32x32x3, 10 classes (downloaded by Keras)")
