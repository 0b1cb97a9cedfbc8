"""The target_scaling study's dataset: one task, its targets in the units asked for."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import yaml

import zoo
from zoo.config.schema import SpecError

REPO = Path(__file__).resolve().parents[1]


def test_the_same_task_at_every_scale_and_seed_for_seed_the_same_bits():
    one, hundred = (zoo.load_dataset("synthetic_regression", target_scale=s, n_train=512, n_val=128) for s in (1.0, 100.0))
    np.testing.assert_array_equal(one.x_train, hundred.x_train)
    np.testing.assert_allclose(hundred.y_train, 100 * one.y_train, rtol=1e-5)
    np.testing.assert_allclose(one.y_train.std(axis=0, dtype=np.float64), 1.0, rtol=1e-5)  # train split's std
    np.testing.assert_allclose(one.y_train.mean(axis=0, dtype=np.float64), 0.0, atol=1e-6)
    assert hundred.baselines["val_loss"] == pytest.approx(1e4 * one.baselines["val_loss"], rel=1e-4)
    again = zoo.load_dataset("synthetic_regression", target_scale=100.0, n_train=512, n_val=128)
    assert again.y_val.tobytes() == hundred.y_val.tobytes() and again.task == "regression"
    other = zoo.load_dataset("synthetic_regression", n_train=512, n_val=128, seed=1)
    assert not np.array_equal(other.y_train, one.y_train)


@pytest.mark.parametrize("options, message", [({"target_scale": 0.0}, "data.target_scale must be > 0, got 0"),
                                              ({"n_outputs": 0}, "data.n_outputs must be >= 1, got 0")])
def test_bad_options_are_refused(options, message):
    with pytest.raises(SpecError) as err:
        zoo.load_dataset("synthetic_regression", **options)
    assert str(err.value) == message


def test_the_group_file_mirrors_the_schema_and_the_budget_knows_its_shape():
    from zoo.config import budget
    from zoo.data import DATASETS

    values = yaml.safe_load((REPO / "conf" / "data" / "synthetic_regression.yaml").read_text())
    schema = DATASETS.get("synthetic_regression").schema
    assert set(values) == {f.name for f in fields(schema)} | {"name"}
    assert values == {**schema().__dict__, "name": "synthetic_regression"}
    assert budget.DATASETS["synthetic_regression"](schema()) == budget.Data(5120, (16,), 1, 4096)
