"""Datasets: generated tasks are reproducible and score their baselines; Keras datasets load
from a local cache without ever touching the network.

How the Keras cache is redirected (Keras 3.15): ``keras.utils.get_file`` resolves its cache as
``keras.src.backend.config.keras_home()``, which returns the module constant ``_KERAS_DIR``,
set from ``$KERAS_HOME`` once, when Keras is *imported*. Setting the env var in a test is too late
if any earlier test imported Keras, so the ``keras_home`` fixture sets ``KERAS_HOME`` (for any
fresh interpreter) *and* monkeypatches ``config._KERAS_DIR`` (for this one). The fixtures are
written where ``load_data`` looks: ``<home>/datasets/mnist.npz``,
``<home>/datasets/fashion-mnist/*-idx?-ubyte.gz`` and
``<home>/datasets/cifar-10-batches-py-target_archive`` (the tar.gz, extracted by ``get_file``).

Hashes: MNIST and CIFAR-10 pass a published SHA-256 to ``get_file``, which re-downloads on a
mismatch, and a tiny fixture cannot match it. The fixture swaps ``file_utils.validate_file`` for
a wrapper that records the requested hash and runs the *real* ``validate_file`` against the
fixture's own SHA-256, so Keras' cache-hit, hashing and extraction code all run unchanged.
Any download attempt (``urlretrieve`` in ``file_utils`` or ``urllib``, or a socket connect)
raises :class:`NetworkBlocked`, so a wrong cache path fails loudly instead of downloading.
"""
import gzip
import hashlib
import io
import math
import pickle
import socket
import struct
import tarfile
import urllib.request
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

import zoo
from zoo.config.schema import SpecError
from conftest import EVENT_SECONDS

# ---------------------------------------------------------------------------- generated tasks


def _arrays(ds):
    return (ds.x_train, ds.y_train, ds.x_val, ds.y_val)


@pytest.mark.parametrize("name, small", [
    ("adding", {"length": 12, "n_train": 64, "n_val": 32}),
    ("copy_memory", {"length": 5, "n_train": 64, "n_val": 32}),
])
def test_generated_data_is_bit_identical_for_a_seed(name, small):
    a = zoo.load_dataset(name, seed=3, **small)
    b = zoo.load_dataset(name, seed=3, **small)
    c = zoo.load_dataset(name, seed=4, **small)
    for x, y in zip(_arrays(a), _arrays(b)):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()
    assert a.baselines == b.baselines
    assert not np.array_equal(a.x_train, c.x_train)
    assert not np.array_equal(a.y_val, c.y_val)


def test_adding_structure_and_baselines():
    length = 21  # odd: first half is steps 0..9, second half 10..20
    ds = zoo.load_dataset("adding", length=length, n_train=2000, n_val=20000, seed=0)
    assert ds.task == "regression" and ds.num_outputs == 1
    assert ds.input_shape == (length, 2)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.float32
    assert ds.y_train.shape == (2000, 1) and ds.y_val.shape == (20000, 1)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val)):
        values, marker = x[..., 0], x[..., 1]
        assert values.min() >= 0 and values.max() <= 1
        assert set(np.unique(marker)) == {0.0, 1.0}
        half = length // 2
        assert (marker[:, :half].sum(axis=1) == 1).all()
        assert (marker[:, half:].sum(axis=1) == 1).all()
        np.testing.assert_allclose(y[:, 0], (values * marker).sum(axis=1), rtol=1e-6)
    # Always predicting 1 scores Var(U1 + U2) = 1/6; so does the training mean (~1).
    assert abs(ds.baselines["val_mse_predict_1"] - 1 / 6) < 0.02
    assert abs(ds.baselines["val_mse_mean"] - 1 / 6) < 0.02
    assert ds.baselines["val_mse_predict_1"] == pytest.approx(float(np.mean((ds.y_val - 1.0) ** 2)))


def test_copy_memory_structure():
    length, n = 7, 50
    ds = zoo.load_dataset("copy_memory", length=length, n_train=n, n_val=10, seed=1)
    steps = length + 20
    assert ds.task == "classification" and ds.num_outputs == 10
    assert ds.x_train.shape == (n, steps, 10) and ds.x_train.dtype == np.float32
    assert ds.y_train.shape == (n, steps) and ds.y_train.dtype == np.int32
    assert (ds.x_train.sum(axis=-1) == 1).all()  # one-hot
    ids = ds.x_train.argmax(axis=-1)
    symbols = ids[:, :10]
    assert symbols.min() >= 1 and symbols.max() <= 8
    assert (ids[:, 10:length + 9] == 0).all()          # length - 1 blanks
    assert (ids[:, length + 9] == 9).all()              # the delimiter
    assert ((ids == 9).sum(axis=1) == 1).all()
    assert (ids[:, length + 10:] == 0).all()            # 10 blanks
    assert (ds.y_train[:, :length + 10] == 0).all()
    np.testing.assert_array_equal(ds.y_train[:, length + 10:], symbols)


def _memoryless_cross_entropy(x_onehot, y):
    """Per-step cross-entropy of: blank until a delimiter has been seen, then uniform over 1..8."""
    ids = x_onehot.argmax(axis=-1)
    seen = np.cumsum(ids == 9, axis=1) - (ids == 9)  # delimiters strictly before step t
    probs = np.zeros(ids.shape + (10,))
    probs[seen == 0, 0] = 1.0
    probs[seen > 0, 1:9] = 1.0 / 8
    p_target = np.take_along_axis(probs, y[..., None].astype(np.int64), axis=-1)[..., 0]
    return float(-np.mean(np.log(p_target)))


@pytest.mark.parametrize("length", [1, 30])
def test_copy_memory_baseline_is_the_memoryless_strategy(length):
    ds = zoo.load_dataset("copy_memory", length=length, n_train=20, n_val=200, seed=2)
    formula = 10 * math.log(8) / (length + 20)
    assert ds.baselines["val_loss_memoryless"] == pytest.approx(formula, abs=1e-12)
    assert abs(_memoryless_cross_entropy(ds.x_val, ds.y_val) - formula) < 1e-6


@pytest.mark.parametrize("mode, shape", [("pixel", (64, 1)), ("row", (8, 8))])
def test_seq_digits_shapes(mode, shape):
    ds = zoo.load_dataset("seq_digits", mode=mode)
    assert ds.input_shape == shape and ds.task == "classification" and ds.num_outputs == 10
    assert ds.x_train.shape[0] == 1437 and ds.x_val.shape[0] == 360  # stratified 80/20
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert set(np.unique(ds.y_val)) == set(range(10))
    assert set(ds.baselines) == {"val_loss", "val_accuracy"}
    # standardized from the training split, one mean and std over all pixels
    assert abs(ds.x_train.mean()) < 1e-5 and abs(ds.x_train.std() - 1) < 1e-5
    assert np.abs(ds.x_train).max() <= 1.85 and np.abs(ds.x_val).max() <= 1.85


def test_seq_digits_modes_hold_the_same_pixels():
    pixel, row = zoo.load_dataset("seq_digits", mode="pixel"), zoo.load_dataset("seq_digits", mode="row")
    np.testing.assert_array_equal(pixel.x_train.reshape(-1, 64), row.x_train.reshape(-1, 64))
    np.testing.assert_array_equal(pixel.y_val, row.y_val)
    # the same split and values as digits (standardized over all pixels)
    flat = zoo.load_dataset("digits")
    np.testing.assert_allclose(pixel.x_train.reshape(-1, 64), flat.x_train, atol=1e-6)
    np.testing.assert_array_equal(pixel.y_train, flat.y_train)


def test_digits_are_standardized_over_all_pixels_and_stay_bounded():
    """One mean and std over every training pixel, for both layouts (the CIFAR per-channel
    convention): no rarely inked pixel is blown up to tens of standard deviations, as per-pixel
    statistics do (38 on train, 54 on val). Raw pixels are ink counts 0..16, so the largest
    standardized value is (16 - mean) / std = 1.85, the bound the docstring states."""
    raw = zoo.load_dataset("digits", standardize=False)
    assert raw.x_train.min() == 0 and raw.x_train.max() == 16
    image = zoo.load_dataset("digits", layout="image")
    assert image.x_train.shape == (1437, 8, 8, 1)
    np.testing.assert_allclose(image.x_train.mean(), 0, atol=1e-5)
    np.testing.assert_allclose(image.x_train.std(), 1, atol=1e-5)
    np.testing.assert_allclose(image.x_val, (raw.x_val.reshape(-1, 8, 8, 1) - raw.x_train.mean())
                               / raw.x_train.std(), atol=1e-5)  # val uses the training statistics
    bound = (16 - raw.x_train.mean()) / raw.x_train.std()
    assert 1.8 < bound < 1.9
    flat = zoo.load_dataset("digits")
    big = zoo.load_dataset("digits", layout="image", image_size=32)
    for x in (image.x_train, image.x_val, flat.x_train, flat.x_val, big.x_train, big.x_val):
        assert np.abs(x).max() <= bound + 1e-5 < 5
    np.testing.assert_array_equal(flat.x_train, image.x_train.reshape(-1, 64))


@pytest.mark.parametrize("name, options, message", [
    ("adding", {"length": 1}, "data.length must be >= 2, got 1"),
    ("adding", {"n_train": 0}, "data.n_train must be >= 1, got 0"),
    ("copy_memory", {"length": 0}, "data.length must be >= 1, got 0"),
    ("copy_memory", {"n_val": 0}, "data.n_val must be >= 1, got 0"),
    ("seq_digits", {"mode": "column"}, "data.mode must be one of pixel, row, got 'column'"),
    ("mnist", {"n_train": -1}, "data.n_train must be >= 0, got -1"),
    ("cifar10", {"standardize": "maybe"}, None),
])
def test_bad_options_are_refused(name, options, message):
    with pytest.raises(SpecError) as err:
        zoo.load_dataset(name, **options)
    if message:
        assert str(err.value) == message


def test_sequence_datasets_fail_the_flat_model_fit_check():
    from zoo.training.spec import compose_spec

    with pytest.raises(SpecError, match="model 'mlp' takes flat inputs but dataset 'adding' is sequence"):
        compose_spec(["data=adding"])


def test_new_group_files_mirror_schemas():
    import yaml

    from zoo.data import DATASETS

    repo = Path(__file__).resolve().parents[1]
    for name in ("adding", "copy_memory", "seq_digits", "mnist", "fashion_mnist", "cifar10"):
        values = yaml.safe_load((repo / "conf" / "data" / f"{name}.yaml").read_text())
        schema = DATASETS.get(name).schema
        assert set(values) == {f.name for f in fields(schema)}
        assert values == {**schema().__dict__, "name": name}


def test_importing_datasets_does_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys, zoo.data.keras_datasets, zoo.data.adding, zoo.data.copy_memory, "
            "zoo.data.seq_digits\nprint(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=EVENT_SECONDS)
    assert out.stdout.strip() == "[]", out.stderr[-500:]


# ------------------------------------------------------------------ keras.datasets, offline


class NetworkBlocked(RuntimeError):
    """A test tried to download: the cache fixture is not where Keras looks."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """A temporary Keras cache, the network blocked, and hash checks run against fixtures.

    Returns ``(home, fixture_hashes, checked)``: register a fixture file's path in
    ``fixture_hashes`` (path -> its sha256); ``checked`` collects ``(path, requested_hash)``.
    """
    zoo._lazy.pin_backend()
    import keras  # noqa: F401  (import first, so the patches below land on live modules)
    from keras.src.backend import config as keras_config
    from keras.src.utils import file_utils

    home = tmp_path / "keras_home"
    (home / "datasets").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(home))                   # read at import: fresh processes
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(home))    # this process: keras_home()
    assert keras_config.keras_home() == str(home)

    def blocked(*args, **kwargs):
        raise NetworkBlocked(f"test tried to reach the network: {args[:1]}")

    monkeypatch.setattr(file_utils, "urlretrieve", blocked)
    monkeypatch.setattr(urllib.request, "urlretrieve", blocked)
    monkeypatch.setattr(socket.socket, "connect", blocked)
    monkeypatch.setattr(socket, "create_connection", blocked)

    fixture_hashes, checked = {}, []
    real_validate = file_utils.validate_file

    def validate_against_fixture(fpath, file_hash, algorithm="auto", chunk_size=65535):
        checked.append((str(fpath), file_hash))
        # The official hash cannot match a tiny fixture; check the fixture's own, for real.
        return real_validate(fpath, fixture_hashes.get(str(fpath), file_hash), algorithm, chunk_size)

    monkeypatch.setattr(file_utils, "validate_file", validate_against_fixture)
    return home, fixture_hashes, checked


def _images(n, shape, rng):
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def _labels(n):
    return (np.arange(n) % 10).astype(np.uint8)


def write_mnist(home: Path, rng):
    data = {"x_train": _images(30, (28, 28), rng), "y_train": _labels(30),
            "x_test": _images(12, (28, 28), rng), "y_test": _labels(12)}
    path = home / "datasets" / "mnist.npz"
    np.savez(path, **data)
    return path, data


def _idx(path: Path, array: np.ndarray):
    """IDX format (yann.lecun.com/exdb/mnist): magic, big-endian dims, then the raw uint8 bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def write_fashion_mnist(home: Path, rng):
    folder = home / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True)
    data = {"x_train": _images(25, (28, 28), rng), "y_train": _labels(25),
            "x_test": _images(9, (28, 28), rng), "y_test": _labels(9)}
    _idx(folder / "train-labels-idx1-ubyte.gz", data["y_train"])
    _idx(folder / "train-images-idx3-ubyte.gz", data["x_train"])
    _idx(folder / "t10k-labels-idx1-ubyte.gz", data["y_test"])
    _idx(folder / "t10k-images-idx3-ubyte.gz", data["x_test"])
    return folder, data


def write_cifar10(home: Path, rng):
    """cifar-10-python.tar.gz's layout: cifar-10-batches-py/{data_batch_1..5,test_batch}, each a
    pickle of ``{b"data": uint8 (n, 3072) channel-major rows, b"labels": [int]}``. The original
    is a Python 2 pickle; protocol 3 is the closest Python 3 writes whose ``bytes`` need no
    ``_codecs.encode`` global, which Keras' ``RestrictedUnpickler`` refuses.

    Keras' loader allocates 50,000 training rows and assigns batch i to rows
    ``[(i-1)*10000, i*10000)``; a one-image batch broadcasts over its slice, which keeps the
    fixture tiny while the real loader runs unchanged. Batch i's image is filled with i * 40.
    """
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        def add(name, data, labels):
            blob = pickle.dumps({b"batch_label": name.encode(), b"data": data,
                                 b"labels": labels}, protocol=3)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))

        for i in range(1, 6):
            add(f"data_batch_{i}", np.full((1, 3072), i * 40, np.uint8), [i])
        test = _images(8, (3, 32, 32), rng)
        add("test_batch", test.reshape(8, 3072), list(range(8)))
    path = home / "datasets" / "cifar-10-batches-py-target_archive"
    path.write_bytes(buf.getvalue())
    return path, test.transpose(0, 2, 3, 1)


def test_mnist_loads_from_the_redirected_cache(keras_home):
    home, fixture_hashes, checked = keras_home
    rng = np.random.default_rng(0)
    path, data = write_mnist(home, rng)
    fixture_hashes[str(path)] = _sha256(path)

    raw = zoo.load_dataset("mnist", standardize=False)
    assert [p for p, _ in checked] == [str(path)] and len(checked[0][1]) == 64  # sha256 checked
    assert raw.x_train.shape == (30, 28, 28, 1) and raw.x_val.shape == (12, 28, 28, 1)
    assert raw.x_train.dtype == np.float32 and raw.y_train.dtype == np.int32
    assert raw.y_train.shape == (30,) and raw.input_shape == (28, 28, 1)
    np.testing.assert_allclose(raw.x_train[..., 0], data["x_train"] / 255.0, rtol=1e-6)
    assert 0 <= raw.x_val.min() and raw.x_val.max() <= 1
    np.testing.assert_array_equal(raw.y_val, data["y_test"])

    std = zoo.load_dataset("mnist")  # standardize=True by default, stats from train
    np.testing.assert_allclose(std.x_train.mean(), 0, atol=1e-5)
    np.testing.assert_allclose(std.x_train.std(), 1, atol=1e-4)
    mean, sd = raw.x_train.mean(), raw.x_train.std()
    np.testing.assert_allclose(std.x_val, (raw.x_val - mean) / sd, atol=1e-4)

    sub = zoo.load_dataset("mnist", n_train=10, n_val=4, standardize=False)
    np.testing.assert_array_equal(sub.x_train, raw.x_train[:10])
    np.testing.assert_array_equal(sub.y_val, raw.y_val[:4])
    with pytest.raises(SpecError, match="data.n_train must be <= 30 for mnist, got 31"):
        zoo.load_dataset("mnist", n_train=31)


def test_fashion_mnist_loads_from_the_redirected_cache(keras_home):
    home, _, checked = keras_home
    folder, data = write_fashion_mnist(home, np.random.default_rng(1))
    ds = zoo.load_dataset("fashion_mnist", standardize=False, n_val=5)
    assert checked == []  # Keras publishes no hash for these files
    assert ds.x_train.shape == (25, 28, 28, 1) and ds.x_val.shape == (5, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    np.testing.assert_allclose(ds.x_val[..., 0], data["x_test"][:5] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_train, data["y_train"])
    assert ds.baselines.keys() == {"val_loss", "val_accuracy"}


def test_cifar10_loads_from_the_redirected_cache(keras_home):
    home, fixture_hashes, checked = keras_home
    path, test_images = write_cifar10(home, np.random.default_rng(2))
    fixture_hashes[str(path)] = _sha256(path)

    ds = zoo.load_dataset("cifar10", standardize=False, n_train=10001)
    assert [p for p, _ in checked] == [str(path)]
    assert (home / "datasets" / "cifar-10-batches-py-target" / "cifar-10-batches-py"
            / "test_batch").is_file()  # extracted by get_file, in the redirected cache
    assert ds.x_train.shape == (10001, 32, 32, 3) and ds.x_val.shape == (8, 32, 32, 3)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32 and ds.y_val.shape == (8,)
    np.testing.assert_allclose(ds.x_train[0], 40 / 255.0, rtol=1e-6)      # batch 1
    np.testing.assert_allclose(ds.x_train[10000], 80 / 255.0, rtol=1e-6)  # batch 2
    assert ds.y_train[0] == 1 and ds.y_train[10000] == 2
    np.testing.assert_allclose(ds.x_val, test_images / 255.0, rtol=1e-6)  # channels last
    np.testing.assert_array_equal(ds.y_val, np.arange(8))

    std = zoo.load_dataset("cifar10", n_train=10001, n_val=3)  # per-channel standardization
    np.testing.assert_allclose(std.x_train.mean(axis=(0, 1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(std.x_train.std(axis=(0, 1, 2)), 1, atol=1e-3)
    assert std.x_val.shape == (3, 32, 32, 3)


def test_missing_cache_fails_loudly_instead_of_downloading(keras_home):
    home, _, _ = keras_home
    for name in ("mnist", "fashion_mnist", "cifar10"):
        with pytest.raises(NetworkBlocked):
            zoo.load_dataset(name)
    assert not [p for p in (home / "datasets").rglob("*") if p.is_file()]
