"""Batches drawn from arrays, or from lists / dicts of arrays (several inputs or outputs):
what zoo.compare and zoo.diagnose measure on, and what their argument checks draw a batch with."""
from __future__ import annotations

import numpy as np


def take(tree, index):
    """Rows ``index`` of an array, or of every array in a list / dict of them."""
    if isinstance(tree, dict):
        return {k: take(v, index) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(take(v, index) for v in tree)
    return np.asarray(tree)[index]


def examples(tree) -> int:
    """Number of examples (the first axis) of an array or a list / dict of arrays."""
    if isinstance(tree, dict):
        return examples(next(iter(tree.values())))
    if isinstance(tree, (list, tuple)):
        return examples(tree[0])
    return len(tree)


def batches_of(x, y, batches: int, batch_size: int, seed: int) -> tuple[list, list]:
    """``batches`` batches of ``batch_size`` examples drawn without replacement with ``seed``
    (fewer, and a last smaller one, when the data has fewer examples)."""
    order = np.random.RandomState(seed).permutation(examples(x))
    take_n = min(batches * batch_size, len(order))
    idx = [order[i:i + batch_size] for i in range(0, take_n, batch_size)]
    return [take(x, i) for i in idx], [take(y, i) for i in idx]
