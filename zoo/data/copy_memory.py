"""The copy-memory task (Hochreiter & Schmidhuber 1997; as set up by Arjovsky et al. 2016).

Alphabet: symbols 1..8 to remember, 0 = blank, 9 = delimiter (10 classes). With delay
``length`` an input sequence has ``length + 20`` steps::

    input : s1 .. s10 | 0 x (length - 1) | 9 | 0 x 10
    target: 0 x (length + 10)                 | s1 .. s10

where ``s1..s10`` are drawn uniformly from 1..8. The delimiter sits at step ``length + 9``; after
it the network must reproduce the ten symbols it saw ``length + 10`` steps earlier. Inputs are
one-hot, ``(N, length + 20, 10)`` float32; targets are per-step class ids ``(N, length + 20)``
int32.

What "learned nothing" scores: the memoryless strategy predicts blank (with certainty) up to and
including the delimiter step, then the uniform distribution over the 8 symbols for the last 10
steps. Its cross-entropy is 0 on the first ``length + 10`` steps and ``log 8`` on each of the
last 10, so averaged over all steps it is ``10 * log(8) / (length + 20)`` (``val_loss_memoryless``).
A model beats it only if it actually remembers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zoo.data import DATASETS, Dataset
from zoo.config.schema import Section, at_least

N_SYMBOLS = 8     # symbols 1..8
N_REMEMBER = 10   # symbols to copy
BLANK, DELIMITER, N_CLASSES = 0, 9, 10


@dataclass
class CopyMemoryConfig(Section):
    length: int = 100     # the delay between the last symbol and the delimiter, plus one
    n_train: int = 10000  # training sequences
    n_val: int = 1000     # validation sequences
    seed: int = 0         # the data's own seed: same seed -> bit-identical arrays

    def __post_init__(self):
        at_least(1, length=self.length, n_train=self.n_train, n_val=self.n_val)
        at_least(0, seed=self.seed)


def memoryless_loss(length: int) -> float:
    """Mean per-step cross-entropy of predicting blank, then uniform symbols after the delimiter."""
    return N_REMEMBER * math.log(N_SYMBOLS) / (length + 2 * N_REMEMBER)


def make_copy_arrays(n: int, length: int, rng: np.random.Generator):
    """Input class ids ``(n, length + 20)`` and targets ``(n, length + 20)``, both int32."""
    steps = length + 2 * N_REMEMBER
    symbols = rng.integers(1, N_SYMBOLS + 1, size=(n, N_REMEMBER), dtype=np.int32)
    inputs = np.full((n, steps), BLANK, dtype=np.int32)
    inputs[:, :N_REMEMBER] = symbols
    inputs[:, length + N_REMEMBER - 1] = DELIMITER
    targets = np.full((n, steps), BLANK, dtype=np.int32)
    targets[:, -N_REMEMBER:] = symbols
    return inputs, targets


@DATASETS.register("copy_memory", schema=CopyMemoryConfig, input_kind="sequence", target="sequence",
                   description="copy memory: recall 10 symbols after a long blank delay")
def make_copy_memory(*, length, n_train, n_val, seed):
    rng = np.random.default_rng(seed)
    ids, y = make_copy_arrays(n_train + n_val, length, rng)
    x = np.eye(N_CLASSES, dtype=np.float32)[ids]
    x_train, x_val, y_train, y_val = x[:n_train], x[n_train:], y[:n_train], y[n_train:]
    return Dataset("copy_memory", x_train, y_train, x_val, y_val, "classification", N_CLASSES,
                   {"val_loss_memoryless": memoryless_loss(length)})
