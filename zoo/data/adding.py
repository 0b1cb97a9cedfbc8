"""The adding problem (Hochreiter & Schmidhuber 1997), in the variant of Le et al. (2015).

Each input is a sequence of ``length`` steps with two channels. Channel 0 holds values drawn
uniformly from [0, 1]; channel 1 is a marker that is 0 everywhere except at exactly two steps,
one in the first half of the sequence (steps ``[0, length // 2)``) and one in the second half
(steps ``[length // 2, length)``). The target is the sum of the two marked values, so a network
must carry the first marked value across up to ``length`` steps: a long-range credit-assignment
problem where vanilla RNNs' gradients vanish.

What "learned nothing" scores: the target ``S = U1 + U2`` with ``U1, U2 ~ U(0, 1)`` independent
has mean 1 and variance ``Var(U1) + Var(U2) = 1/12 + 1/12 = 1/6``. Always predicting 1 (the
best constant) therefore has expected MSE ``E[(S - 1)^2] = Var(S) = 1/6 ~= 0.167``; a model has
learned something only once its validation MSE falls clearly below that. The baselines are
computed from the generated data rather than the formula: ``val_mse_predict_1`` (always 1) and
``val_mse_mean`` (always the training targets' mean), both ~= 1/6.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.data import DATASETS, Dataset
from zoo.config.schema import Section, at_least


@dataclass
class AddingConfig(Section):
    length: int = 50      # T, steps per sequence
    n_train: int = 10000  # training sequences
    n_val: int = 1000     # validation sequences
    seed: int = 0         # the data's own seed: same seed -> bit-identical arrays

    def __post_init__(self):
        at_least(2, length=self.length)
        at_least(1, n_train=self.n_train, n_val=self.n_val)
        at_least(0, seed=self.seed)


def make_adding_arrays(n: int, length: int, rng: np.random.Generator):
    """``n`` sequences ``(n, length, 2)`` float32 and their targets ``(n, 1)`` float32."""
    half = length // 2
    values = rng.uniform(0.0, 1.0, size=(n, length)).astype(np.float32)
    first = rng.integers(0, half, size=n)
    second = rng.integers(half, length, size=n)
    rows = np.arange(n)
    marker = np.zeros((n, length), dtype=np.float32)
    marker[rows, first] = 1.0
    marker[rows, second] = 1.0
    x = np.stack([values, marker], axis=-1)
    y = (values[rows, first] + values[rows, second]).astype(np.float32)[:, None]
    return x, y


@DATASETS.register("adding", schema=AddingConfig, input_kind="sequence", target="last",
                   description="adding problem: sum the two marked values of a long sequence")
def make_adding(*, length, n_train, n_val, seed):
    rng = np.random.default_rng(seed)
    x, y = make_adding_arrays(n_train + n_val, length, rng)
    x_train, x_val, y_train, y_val = x[:n_train], x[n_train:], y[:n_train], y[n_train:]
    y_val64 = y_val.astype(np.float64)
    baselines = {
        "val_mse_predict_1": float(np.mean((y_val64 - 1.0) ** 2)),
        "val_mse_mean": float(np.mean((y_val64 - y_train.astype(np.float64).mean()) ** 2)),
    }
    return Dataset("adding", x_train, y_train, x_val, y_val, "regression", 1, baselines)
