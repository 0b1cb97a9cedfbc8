"""``data=arrays``: the user's own .npz as a zoo dataset. What the arrays hold is read from their
shapes and dtypes; every fault in the file is refused in one line before TensorFlow is imported."""
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo.data import DATASETS, constant_baseline
from zoo.config.schema import SpecError
from zoo.training.spec import compose_spec, validate_section
from conftest import run_cli, runs_of
from test_validation import refuse

N_TRAIN, N_VAL = 40, 16
X_SHAPES = {"flat": (5,), "sequence": (6, 3), "image": (4, 4, 2)}


def save(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def make_arrays(kind: str, task: str, seed: int = 0, per_step: bool = False) -> dict:
    """x of ``kind`` (float64 with uneven feature scales), y of ``task``: 3 classes, or 2 targets."""
    rng = np.random.default_rng(seed)
    shape = X_SHAPES[kind]
    scale = np.arange(1, shape[-1] + 1) * 3.0  # feature f: mean 10 f, std 3 (f + 1)
    x = {s: rng.normal(size=(n, *shape)) * scale + 10 * np.arange(shape[-1])
         for s, n in (("train", N_TRAIN), ("val", N_VAL))}
    time = (shape[0],) if per_step else ()
    if task == "classification":
        y = {s: rng.integers(0, 3, size=(n, *time)) for s, n in (("train", N_TRAIN), ("val", N_VAL))}
    else:
        y = {s: rng.normal(size=(n, *time, 2)) for s, n in (("train", N_TRAIN), ("val", N_VAL))}
    return {"x_train": x["train"], "y_train": y["train"], "x_val": x["val"], "y_val": y["val"]}


def section(path, **options):
    return validate_section("data", DATASETS.get("arrays"), {"name": "arrays", "path": str(path), **options})


@pytest.mark.parametrize("kind", ["flat", "sequence", "image"])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_inputs_and_targets_are_read_from_the_shapes_and_dtypes(tmp_path, kind, task):
    a = make_arrays(kind, task)
    path = save(tmp_path / "data.npz", **a)
    config = section(path)
    assert config.input_kind == kind
    assert config.target == ("last" if kind == "sequence" else None)
    ds = zoo.load_dataset("arrays", path=str(path))
    assert ds.task == task and ds.input_shape == X_SHAPES[kind]
    assert ds.x_train.shape == (N_TRAIN, *X_SHAPES[kind]) and ds.x_val.shape == (N_VAL, *X_SHAPES[kind])
    assert ds.x_train.dtype == np.float32 and ds.x_val.dtype == np.float32
    # standardized per feature (last axis) by the training split's statistics, both splits
    axes = tuple(range(a["x_train"].ndim - 1))
    mean, std = a["x_train"].mean(axis=axes), a["x_train"].std(axis=axes)
    np.testing.assert_allclose(ds.x_train, (a["x_train"] - mean) / std, atol=1e-5)
    np.testing.assert_allclose(ds.x_val, (a["x_val"] - mean) / std, atol=1e-5)
    if task == "classification":
        assert ds.y_train.dtype == np.int32 and ds.num_outputs == 3
        np.testing.assert_array_equal(ds.y_val, a["y_val"])
        prior = np.bincount(a["y_train"], minlength=3) / N_TRAIN
        assert ds.baselines["val_loss"] == pytest.approx(-np.mean(np.log(prior[a["y_val"]])))
        assert ds.baselines["val_accuracy"] == pytest.approx(np.mean(a["y_val"] == np.argmax(prior)))
        assert constant_baseline(ds) == pytest.approx(-np.sum(prior * np.log(prior)))
    else:
        assert ds.y_train.dtype == np.float32 and ds.y_train.shape == (N_TRAIN, 2) and ds.num_outputs == 2
        mse = np.mean((a["y_val"] - a["y_train"].mean(axis=0)) ** 2)
        assert ds.baselines == {"val_loss": pytest.approx(mse)}
        assert constant_baseline(ds) == pytest.approx(np.mean(a["y_train"].var(axis=0)), rel=1e-5)


def test_standardize_off_keeps_the_values_and_a_constant_feature_is_centred_only(tmp_path):
    a = make_arrays("flat", "regression")
    a["x_train"][:, 2] = 7.0
    path = save(tmp_path / "data.npz", **a)
    raw = zoo.load_dataset("arrays", path=str(path), standardize=False)
    np.testing.assert_array_equal(raw.x_train, a["x_train"].astype(np.float32))
    np.testing.assert_array_equal(raw.x_val, a["x_val"].astype(np.float32))
    scaled = zoo.load_dataset("arrays", path=str(path))
    assert np.all(scaled.x_train[:, 2] == 0) and np.all(np.isfinite(scaled.x_val))
    np.testing.assert_allclose(scaled.x_val[:, 2], a["x_val"][:, 2] - 7.0, atol=1e-5)


def test_regression_targets_of_one_value_get_an_output_axis(tmp_path):
    a = make_arrays("flat", "regression")
    a["y_train"], a["y_val"] = a["y_train"][:, 0], a["y_val"][:, 0]
    np.savez_compressed(tmp_path / "d.npz", **a)  # compressed members read the same
    ds = zoo.load_dataset("arrays", path=str(tmp_path / "d.npz"))
    assert ds.y_train.shape == (N_TRAIN, 1) and ds.num_outputs == 1
    np.testing.assert_allclose(ds.y_val[:, 0], a["y_val"], rtol=1e-6)


@pytest.mark.parametrize("task, y_shape, outputs", [
    ("classification", (6,), 3),        # labels [n, steps]
    ("regression", (6, 2), 2),           # targets [n, steps, k]
])
def test_sequence_targets_per_step(tmp_path, task, y_shape, outputs):
    a = make_arrays("sequence", task, per_step=True)
    path = save(tmp_path / "d.npz", **a)
    assert section(path).target == "sequence"
    ds = zoo.load_dataset("arrays", path=str(path))
    assert ds.y_train.shape == (N_TRAIN, *y_shape) and ds.num_outputs == outputs
    spec = compose_spec(["data=arrays", f"data.path={path}", "model=lstm", "model.head=sequence",
                         "tracking.uri=null"])
    assert spec.data.target == "sequence"
    with pytest.raises(SpecError, match="model.head: dataset 'arrays' has one target per time "
                                        "step; use model.head=sequence, got last"):
        compose_spec(["data=arrays", f"data.path={path}", "model=lstm", "tracking.uri=null"])


def test_one_value_per_step_is_a_per_step_regression(tmp_path):
    a = make_arrays("sequence", "regression", per_step=True)
    a["y_train"], a["y_val"] = a["y_train"][..., 0], a["y_val"][..., 0]  # [n, steps]
    ds = zoo.load_dataset("arrays", path=str(save(tmp_path / "d.npz", **a)))
    assert ds.y_train.shape == (N_TRAIN, 6, 1) and ds.num_outputs == 1


def test_task_auto_follows_the_dtype_and_can_be_set(tmp_path):
    a = make_arrays("flat", "classification")
    whole = {**a, "y_train": a["y_train"].astype(np.float32), "y_val": a["y_val"].astype(np.float32)}
    path = save(tmp_path / "whole.npz", **whole)
    with pytest.raises(SpecError, match="labels or values"):  # whole numbers as floats: asked, not guessed
        zoo.load_dataset("arrays", path=str(path))
    assert zoo.load_dataset("arrays", path=str(path), task="regression").task == "regression"
    fractional = {**whole, "y_train": whole["y_train"] + 0.5}
    assert zoo.load_dataset("arrays", path=str(save(tmp_path / "f.npz", **fractional))).task == "regression"
    ds = zoo.load_dataset("arrays", path=str(path), task="classification")
    assert ds.task == "classification" and ds.y_train.dtype == np.int32 and ds.num_outputs == 3
    ds = zoo.load_dataset("arrays", path=str(save(tmp_path / "int.npz", **a)), task="regression")
    assert ds.task == "regression" and ds.y_train.dtype == np.float32 and ds.num_outputs == 1


def test_labels_count_classes_over_both_splits(tmp_path):
    a = make_arrays("flat", "classification")
    a["y_train"][0] = 5  # classes 3 and 4 appear nowhere: K is still the largest label + 1
    ds = DATASETS.build("arrays", path=str(save(tmp_path / "d.npz", **a)), task="auto", standardize=True)
    assert ds.num_outputs == 6


def test_relative_path_is_from_where_the_user_started(tmp_path, monkeypatch):
    save(tmp_path / "mine.npz", **make_arrays("flat", "classification"))
    monkeypatch.chdir(tmp_path)
    spec = compose_spec(["data=arrays", "data.path=mine.npz", "tracking.uri=null"])
    assert spec.data.path == str(tmp_path / "mine.npz") and spec.resolved["data"]["path"] == "mine.npz"
    # a job that runs in its output folder (hydra.job.chdir=true) still reads the file from
    # where zoo-train was started: validation passes data and fails on the next section
    message = refuse(["data=arrays", "data.path=mine.npz", "hydra.job.chdir=true",
                      "tracking.uri=postgresql://db/x"], tmp_path)
    assert message.startswith("tracking.uri: unsupported MLflow store")


def test_memory_estimate_reads_the_file_shapes(tmp_path):
    from zoo.config import budget
    from zoo import models

    path = save(tmp_path / "d.npz", **make_arrays("sequence", "classification"))
    spec = compose_spec(["data=arrays", f"data.path={path}", "model=lstm", "model.width=8",
                         "tracking.uri=null"])
    assert budget.DATASETS["arrays"](spec.data) == budget.Data(N_TRAIN + N_VAL, (6, 3), 3, train=N_TRAIN)
    assert models.estimate("lstm", spec.model, "arrays", spec.data).data_floats == (N_TRAIN + N_VAL) * 18


# --------------------------------------------------------------------- faults, before TensorFlow
def _fault(tmp_path: Path, case: str) -> list[str]:
    """Write the file for ``case``; the overrides that point zoo-train at it."""
    a = make_arrays("flat", "classification")
    path, options = tmp_path / "bad.npz", []
    if case == "missing_path":
        return ["data=arrays"]
    if case == "no_such_file":
        path = tmp_path / "absent.npz"
    elif case == "folder":
        path = tmp_path
    elif case == "not_npz":
        path.write_text("x,y\n1,2\n")
    elif case == "single_npy":
        np.save(tmp_path / "bad.npy", a["x_train"])
        path = tmp_path / "bad.npy"
    elif case == "corrupt":
        save(path, **a)
        blob = bytearray(path.read_bytes())
        at = blob.index(b"x_train.npy") + 400  # inside x_train's values, past its header
        blob[at:at + 8] = b"\xff" * 8
        path.write_bytes(bytes(blob))
    else:
        edits = {
            "missing_key": lambda: a.pop("y_val"),
            "lengths_differ": lambda: a.update(y_train=a["y_train"][:-1]),
            "feature_shapes_differ": lambda: a.update(x_val=np.zeros((N_VAL, 6))),
            "object_array": lambda: a.update(x_train=np.array([[1, "a"]] * N_TRAIN, dtype=object)),
            "strings": lambda: a.update(y_train=np.array(["cat"] * N_TRAIN)),
            "nan_in_x": lambda: a["x_val"].__setitem__((2, 3), np.nan),
            "inf_in_y": lambda: a.update(y_train=np.where(np.arange(N_TRAIN) == 4, np.inf, 0.5),
                                         y_val=np.full(N_VAL, 0.5)),
            "negative_label": lambda: a["y_val"].__setitem__(1, -1),
            "fractional_label": lambda: (a.update(y_train=np.full(N_TRAIN, 0.5)),
                                         options.append("data.task=classification")),
            "empty_split": lambda: a.update(x_val=np.zeros((0, 5)), y_val=np.zeros(0, int)),
            "rank_1": lambda: a.update(x_train=np.zeros(N_TRAIN), x_val=np.zeros(N_VAL)),
            "rank_5": lambda: a.update(x_train=np.zeros((N_TRAIN, 2, 2, 2, 2)), x_val=np.zeros((N_VAL, 2, 2, 2, 2))),
            "label_shape": lambda: a.update(y_train=np.zeros((N_TRAIN, 3), int), y_val=np.zeros((N_VAL, 3), int)),
            "mixed_label_types": lambda: a.update(y_val=a["y_val"].astype(float)),
            "labels_as_floats": lambda: a.update(y_train=a["y_train"].astype(float), y_val=a["y_val"].astype(float)),
            "label_only_in_val": lambda: a["y_val"].__setitem__(0, 7),
        }
        edits[case]()
        np.savez(path, **a)
    return ["data=arrays", f"data.path={path}", *options]


FAULTS = {  # case: what the one line says
    "missing_path": "data.path is missing: give data.path=FILE.npz (x_train, y_train, x_val, y_val)",
    "no_such_file": "data.path: no such file '{tmp}/absent.npz'; give data.path=FILE.npz",
    "folder": "data.path: '{tmp}' is a folder, not an .npz file",
    "not_npz": "data.path: '{tmp}/bad.npz' is not an .npz archive (File is not a zip file); save the four arrays with numpy.savez(",
    "single_npy": "data.path: '{tmp}/bad.npy' is a single .npy array; save the four arrays with numpy.savez(",
    "corrupt": "data.path: '{tmp}/bad.npz': cannot read x_train (Bad CRC-32",
    "missing_key": "data.path: '{tmp}/bad.npz' has no y_val; it must hold x_train, y_train, x_val and y_val",
    "lengths_differ": "data.path: x_train has 40 examples but y_train has 39; give one target per example",
    "feature_shapes_differ": "data.path: x_train's examples are [5] but x_val's are [6]; both splits need the same shape",
    "object_array": "data.path: x_train holds Python objects (dtype object); the arrays must be numeric",
    "strings": "data.path: y_train holds strings (dtype <U3); the arrays must be numeric",
    "nan_in_x": "data.path: x_val holds 1 NaN or infinite values (the first at [2, 3]); drop or fill them",
    "inf_in_y": "data.path: y_train holds 1 NaN or infinite values (the first at [4])",
    "negative_label": "data.path: y_val holds label -1; classification labels must be integers in [0, K)",
    "fractional_label": "data.path: y_train holds 0.5; classification labels must be whole numbers",
    "empty_split": "data.path: x_val holds no examples",
    "rank_1": "data.path: x_train has shape [40]; give x as [n, features], [n, steps, features] or [n, height, width, channels]",
    "rank_5": "data.path: x_train has shape [40, 2, 2, 2, 2]; give x as [n, features],",
    "label_shape": "data.path: y_train has shape [40, 3] for x_train [40, 5] (flat inputs, classification); give y as [n] labels",
    "mixed_label_types": "data.task is auto but y_train is int64 and y_val is float64",
    "labels_as_floats": "data.task is auto, and y_train is float but holds only 3 whole numbers (0, 1, 2): "
                        "labels or values? Set data.task=classification or data.task=regression",
    "label_only_in_val": "data.path: y_val holds label(s) 7 that y_train never has: no model can learn them",
}


@pytest.mark.parametrize("case", FAULTS)
def test_a_faulty_file_is_refused_in_one_line_before_tensorflow(tmp_path, case):
    message = refuse(_fault(tmp_path, case), tmp_path)
    assert message.startswith(FAULTS[case].format(tmp=tmp_path)), message


# --------------------------------------------------------------------- end to end
def test_zoo_train_sweeps_over_the_users_files(tmp_path):
    save(tmp_path / "labels.npz", **make_arrays("flat", "classification"))
    save(tmp_path / "targets.npz", **make_arrays("flat", "regression", seed=1))
    out = run_cli("-m", "data=arrays", "data.path=labels.npz,targets.npz", "model=mlp",
                  "model.depth=2", "model.width=8", "trainer.epochs=1", "trainer.batch_size=16",
                  f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    _, _, jobs = runs_of(tmp_path)
    by_path = {r.data.params["data.path"]: r for r in jobs}
    assert set(by_path) == {"labels.npz", "targets.npz"}
    assert all(r.info.status == "FINISHED" for r in jobs)
    labels, targets = by_path["labels.npz"].data.metrics, by_path["targets.npz"].data.metrics
    assert "baseline/val_accuracy" in labels and "final/val_accuracy" in labels
    assert "baseline/val_loss" in targets and "final/val_accuracy" not in targets


@pytest.mark.parametrize("per_step", [False, True])
def test_an_lstm_trains_on_the_users_sequences(tmp_path, per_step):
    path = save(tmp_path / "seq.npz", **make_arrays("sequence", "regression", per_step=per_step))
    result = zoo.train(["data=arrays", f"data.path={path}", "model=lstm", "model.width=8",
                        f"model.head={'sequence' if per_step else 'last'}", "trainer.epochs=1",
                        "trainer.batch_size=16", "tracking.uri=null"])
    assert result.outcome == "finished" and np.isfinite(result.final["final/val_loss"])
    assert result.model.output_shape == ((None, 6, 2) if per_step else (None, 2))


# --------------------------------------------------------------------- seq_digits.standardize
def test_seq_digits_standardize_false_gives_the_raw_ink_counts():
    raw = zoo.load_dataset("seq_digits", standardize=False)
    scaled = zoo.load_dataset("seq_digits")
    for x in (raw.x_train, raw.x_val):
        assert x.dtype == np.float32 and x.min() == 0 and x.max() == 16
        np.testing.assert_array_equal(x, np.round(x))
    mean, std = raw.x_train.mean(), raw.x_train.std()  # standardize=true: unchanged
    np.testing.assert_array_equal(scaled.x_train, (raw.x_train - mean) / std)
    np.testing.assert_array_equal(scaled.x_val, (raw.x_val - mean) / std)
    np.testing.assert_allclose(scaled.x_train.reshape(-1, 64), zoo.load_dataset("digits").x_train, atol=1e-6)
    assert compose_spec(["data=seq_digits", "data.standardize=false", "model=lstm",
                         "tracking.uri=null"]).data.standardize is False
