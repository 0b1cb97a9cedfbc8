"""The ill-posed rule (zoo.records.posedness): numpy only, from the losses' definitions.

Every kind of target a loss cannot read is named in one line, well-posed targets are not; a loss
value below the loss's floor is named; the best constant predictor's loss in closed form equals
a brute-force search over constant predictions (the second way); and the progress label never
says "learning" for an ill-posed loss.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from zoo.records import posedness
from zoo.records.summary import describe_progress, headline, progress

RNG = np.random.default_rng(0)
ONE_HOT = np.eye(4)[RNG.integers(0, 4, 50)]


def test_the_module_imports_no_tensorflow():
    code = "import sys, zoo.records.posedness, zoo.records.summary; print('tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


@pytest.mark.parametrize("loss, targets, classes, reason", [
    ("binary_crossentropy", np.arange(10.0), None, "binary cross-entropy read targets outside [0, 1]: 0 … 9"),
    ("binary_crossentropy", np.array([-1.0, 0.0, 1.0]), None, "outside [0, 1]: -1 … 1"),
    ("binary_focal_crossentropy", np.array([0.0, 2.0]), None, "outside [0, 1]"),
    ("sparse_categorical_crossentropy", np.array([0, 1, 7]), 3, "read targets outside [0, 3): 0 … 7"),
    ("sparse_categorical_crossentropy", np.array([-1, 0, 1]), 3, "outside [0, 3): -1 … 1"),
    ("sparse_categorical_crossentropy", np.array([0.0, 0.5, 2.0]), 3, "not integers (0 … 2): Keras casts them"),
    ("categorical_crossentropy", np.ones((5, 3)), None, "rows that are not distributions (entries 1 … 1, row sums 3 … 3"),
    ("categorical_crossentropy", np.array([[1.5, -0.5], [0.5, 0.5]]), None, "entries -0.5 … 1.5"),
    ("categorical_crossentropy", np.array([0, 1, 2]), None, "one target per example"),
    ("kl_divergence", np.array([[0.2, 0.2]]), None, "row sums 0.4 … 0.4"),
    ("hinge", np.array([-1.0, 0.0, 1.0]), None, "other than -1 and 1 (or 0 and 1)"),
    ("squared_hinge", np.array([2.0, -2.0]), None, "other than -1 and 1"),
    ("poisson", np.array([-1.0, 3.0]), None, "Poisson read targets below 0"),
    ("mean_squared_logarithmic_error", np.array([-2.0, 1.0]), None, "Keras reads them as 0"),
    ("mean_absolute_percentage_error", np.array([0.0, 1.0, 0.0]), None, "read 2 targets equal to 0"),
    ("mse", np.array([1.0, np.nan]), None, "mean squared error read targets that are not finite"),
    ("binary_crossentropy", np.array([0.0, np.inf]), None, "not finite"),
])
def test_every_kind_of_target_a_loss_cannot_read_is_one_line(loss, targets, classes, reason):
    got = posedness.ill_posed(loss, targets, classes=classes)
    assert got and reason in got and "\n" not in got, got
    assert posedness.ill_posed(loss, posedness.Targets.of(targets), classes=classes) == got  # from a summary too


@pytest.mark.parametrize("loss, targets, classes", [
    ("binary_crossentropy", np.array([0.0, 1.0, 1.0]), None),
    ("binary_crossentropy", np.array([[0.0, 1.0, 0.25]]), None),           # multi-label, soft labels
    ("BinaryCrossentropy", np.array([0, 1]), None),
    ("sparse_categorical_crossentropy", np.array([0, 1, 2]), 3),
    ("sparse_categorical_crossentropy", np.array([[0.0], [2.0]]), 3),       # float labels that are integers
    ("categorical_crossentropy", ONE_HOT, None),
    ("categorical_crossentropy", np.full((3, 4), 0.25), None),              # label smoothing-like rows
    ("hinge", np.array([-1.0, 1.0]), None),
    ("hinge", np.array([0, 1]), None),                                      # Keras converts 0/1
    ("poisson", np.array([0.0, 3.0]), None),
    ("mse", np.array([-1e9, 1e9]), None),                                   # any finite number
    ("huber", np.array([-5.0]), None),
    ("a_custom_loss", np.array([-5.0]), None),                              # unknown: never ill-posed
])
def test_targets_a_loss_reads_are_well_posed(loss, targets, classes):
    assert posedness.ill_posed(loss, targets, classes=classes) is None


@pytest.mark.parametrize("loss, values, targets, reason", [
    ("binary_crossentropy", [0.3, -433.0], None, "binary cross-entropy fell to -433, below its floor 0"),
    ("mse", -1e-3, None, "below its floor 0"),
    ("categorical_crossentropy", [-1e-4], None, "below its floor 0"),
    ("cosine_similarity", [-1.5], None, "cosine similarity fell to -1.5, below its floor -1"),
    ("poisson", [-6.0], np.array([0.0, 5.0, 10.0]), "below its floor -5.358"),
])
def test_a_loss_below_its_floor_is_ill_posed(loss, values, targets, reason):
    got = posedness.ill_posed(loss, targets, values)
    assert got and reason in got, got


@pytest.mark.parametrize("loss, values, targets", [
    ("binary_crossentropy", [0.0, 0.69], None),
    ("cosine_similarity", [-1.0], None),             # its floor, reached
    ("cosine_similarity", [-1.0 - 1e-7], None),      # float32 rounding below -1
    ("mse", [0.0], None),
    ("poisson", [-5.0], np.array([0.0, 5.0, 10.0])),  # above its floor -5.36 for these targets
    ("poisson", [-100.0], None),                      # its floor needs the targets: not judged
])
def test_a_loss_at_or_above_its_floor_is_not(loss, values, targets):
    assert posedness.ill_posed(loss, targets, values) is None


def test_loss_names_configs_and_aliases_resolve_to_one_kind():
    names = {"mse": "mean_squared_error", "MSE": "mean_squared_error", "MeanSquaredError": "mean_squared_error",
             "bce": "binary_crossentropy", "BinaryCrossentropy": "binary_crossentropy", "kld": "kl_divergence",
             "KLDivergence": "kl_divergence", "huber_loss": "huber", "LogCosh": "log_cosh",
             "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy", "nope": None}
    for name, kind in names.items():
        assert posedness.kind_of(name) == kind, name
    serialized = {"module": "keras.losses", "class_name": "BinaryCrossentropy",
                  "config": {"name": "my_bce", "from_logits": True}}
    assert posedness.kind_of(serialized) == "binary_crossentropy"
    assert posedness.kind_of({"name": "categorical_crossentropy", "from_logits": False}) == "categorical_crossentropy"
    assert posedness.kind_of(None) is None and posedness.floor("nope") is None


def _brute_force(loss: str, y: np.ndarray) -> float:
    """The least mean loss over constant predictions, searched on a grid (per output column)."""
    eps = 1e-12
    cols = y.reshape(-1, y.shape[-1]) if y.ndim > 1 else y.reshape(-1, 1)
    if loss == "categorical_crossentropy":  # predictions on the simplex: a Dirichlet-ish grid over 3 classes
        grid = np.linspace(0.001, 0.998, 400)
        best = np.inf
        for a in grid:
            b = np.linspace(0.0005, 1 - a - 0.0005, 200)
            q = np.stack([np.full_like(b, a), b, 1 - a - b], axis=1)
            best = min(best, float(np.min(-(y @ np.log(q).T).mean(axis=0))))
        return best
    if loss == "sparse_categorical_crossentropy":
        return _brute_force("categorical_crossentropy", np.eye(3)[y])
    grid = {"binary_crossentropy": np.linspace(1e-4, 1 - 1e-4, 20001), "poisson": np.linspace(1e-3, 10, 20001)}.get(
        loss, np.linspace(cols.min() - 1, cols.max() + 1, 20001))
    total = 0.0
    for c in cols.T:
        if loss == "binary_crossentropy":
            values = -(c[:, None] * np.log(grid + eps) + (1 - c[:, None]) * np.log(1 - grid + eps)).mean(axis=0)
        elif loss == "mean_squared_error":
            values = ((c[:, None] - grid) ** 2).mean(axis=0)
        elif loss == "mean_absolute_error":
            values = np.abs(c[:, None] - grid).mean(axis=0)
        elif loss == "poisson":
            values = (grid - c[:, None] * np.log(grid)).mean(axis=0)
        elif loss in ("hinge", "squared_hinge"):
            signed = np.where(c > 0, 1.0, -1.0)[:, None]
            margin = np.maximum(0.0, 1 - signed * np.linspace(-3, 3, 20001))
            values = (margin if loss == "hinge" else margin ** 2).mean(axis=0)
        total += values.min()
    return total / cols.shape[1]


@pytest.mark.parametrize("loss, y", [
    ("binary_crossentropy", (RNG.random(200) < 0.3).astype(float)),
    ("binary_crossentropy", (RNG.random((200, 3)) < [0.1, 0.5, 0.8]).astype(float)),  # multi-label
    ("sparse_categorical_crossentropy", RNG.choice(3, 300, p=[0.6, 0.3, 0.1])),
    ("categorical_crossentropy", np.eye(3)[RNG.choice(3, 300, p=[0.2, 0.3, 0.5])]),
    ("mean_squared_error", RNG.normal(3, 2, (100, 2))),
    ("mean_absolute_error", RNG.exponential(2, (101, 1))),
    ("poisson", RNG.poisson(2.5, 200).astype(float)),
    ("hinge", np.where(RNG.random(100) < 0.3, 1.0, -1.0)),
    ("squared_hinge", (RNG.random(100) < 0.7).astype(float)),
])
def test_the_constant_predictors_loss_is_the_least_a_constant_can_score(loss, y):
    closed = posedness.constant_loss(loss, y)
    assert closed == pytest.approx(_brute_force(loss, y), rel=2e-3, abs=2e-4)


def test_no_constant_baseline_for_targets_the_loss_cannot_read_or_no_closed_form():
    assert posedness.constant_loss("binary_crossentropy", np.arange(10.0)) is None
    assert posedness.constant_loss("huber", np.arange(10.0)) is None
    assert posedness.constant_loss("mse", None) is None


def test_ill_posed_replaces_every_other_progress_label():
    reason = "binary cross-entropy read targets outside [0, 1]: 0 … 9"
    for loss, baseline in ((-1.4e4, 1.0), (0.5, 1.0), (1.0, 1.0), (3.0, 1.0), (float("nan"), 1.0), (0.5, float("nan"))):
        label, _ = progress(loss, baseline, reason)
        assert label == "ill-posed" == posedness.LABEL
    # a negative loss is never learning, with no reason too (a loss written as minus something)
    assert progress(-1.4e4, 1.0)[0] == "ill-posed" and progress(0.0, 1.0)[0] == "learning"
    assert describe_progress("ill-posed", -0.777) == ("ill-posed (final train loss below 0, -0.777× the baseline: "
                                                      "no fraction of a constant predictor's)")
    assert describe_progress("ill-posed", -1.4e4, reason) == f"ill-posed ({reason})"
    assert headline("exploding", "ill-posed") == "exploding · ill-posed"
    assert describe_progress("stalled", 1.0) == "stalled (final train loss 1.00× the best constant predictor's)"


def test_summaries_of_batches_merge_to_the_summary_of_the_whole():
    y = np.concatenate([np.zeros(5), np.arange(10.0), np.full(3, 0.5)])
    parts = [posedness.Targets.of(y[:5]), posedness.Targets.of(y[5:15]), posedness.Targets.of(y[15:])]
    merged = parts[0].merged(parts[1]).merged(parts[2])
    assert merged == posedness.Targets.of(y)
    rows = np.eye(3)[RNG.integers(0, 3, 20)]
    assert posedness.Targets.of(rows[:7]).merged(posedness.Targets.of(rows[7:])) == posedness.Targets.of(rows)
    wide = posedness.Targets.of(np.arange(10.0)).merged(posedness.Targets.of(np.arange(10.0, 20.0)))
    assert wide.distinct is None and wide.high == 19  # more than DISTINCT values: no longer kept
