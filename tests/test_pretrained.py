"""Pretrained entries: every file verifies, loads in safe mode with its builder's roles and
predicts; damaged files are refused before Keras sees them; remote entries go through the cache;
a recipe reproduces its metrics; MLflow holds registered and per-run models; zoo.compare measures
what runs measure."""
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from zoo.pretrained import IntegrityError, integrity
from zoo.pretrained import read_manifest
from zoo.pretrained.manifest import Manifest

MANIFEST = read_manifest()
NAMES = MANIFEST.names()
SMALL = "linear20-normal-digits"  # the fastest recipe (deep linear chain, 5 epochs)


def _cli(*args, cwd, timeout=600):
    return subprocess.run([sys.executable, "-m", "zoo.cli.pretrained", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def test_listing_and_verifying_import_no_tensorflow(tmp_path):
    code = ("import sys, zoo\n"
            "from zoo.cli import pretrained as cli\n"
            "names = zoo.list_pretrained()\n"
            "assert cli.main(['list']) == 0 and cli.main(['verify']) == 0\n"
            "assert cli.main(['show', names[0]]) == 0\n"
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert all(f"{n}: ok" in done.stdout for n in NAMES)


def test_manifest_entries_are_complete_and_pairs_differ_by_their_knob():
    assert len(MANIFEST.pairs) >= 4 and len(NAMES) >= 8
    for e in MANIFEST.entries:
        assert e.description and e.recipe and e.sha256 and e.size and e.verdict, e.name
        assert e.shipped_path.stat().st_size == e.size, e.name
        assert {"final/train_loss", "final/val_loss", "summary/grad_first_init",
                "summary/grad_last_init", "summary/flow_init"} <= set(e.metrics), e.name
        assert e.gradzoo_version.startswith("0.") and e.keras_version and e.tensorflow_version
        assert e.pairs and all(MANIFEST.pair(p) for p in e.pairs)
    for pair in MANIFEST.pairs:
        a, b = MANIFEST.get(pair.a), MANIFEST.get(pair.b)
        knobs = set(a.knob) | set(b.knob)
        overrides = lambda e: dict(o.split("=", 1) for o in e.overrides())  # noqa: E731
        differing = {k for k in overrides(a).keys() | overrides(b).keys()
                     if overrides(a).get(k) != overrides(b).get(k)}
        assert differing and differing <= knobs, (pair.name, differing)
        assert a.seed == b.seed and a.data == b.data, pair.name


@pytest.mark.parametrize("name", NAMES)
def test_every_entry_loads_verifies_predicts_and_has_its_builders_roles(name):
    import zoo
    from zoo.models.roles import roles_of

    entry = MANIFEST.get(name)
    model = zoo.load_pretrained(name)
    shape = tuple(entry.data["input_shape"])
    x = np.random.RandomState(0).normal(size=(3, *shape)).astype("float32")
    out = model(x, training=False)
    main = out[0] if isinstance(out, (list, tuple)) else out
    assert tuple(main.shape) == (3, entry.data["num_outputs"])
    assert np.all(np.isfinite(np.asarray(main)))
    knobs = {k: v for k, v in entry.model.items() if k != "name"}
    fresh = zoo.build_model(entry.model["name"], shape, entry.data["num_outputs"], **knobs)
    assert roles_of(model) == roles_of(fresh)
    assert roles_of(model).activations or entry.model["name"] in ("deep_linear", "gru", "simple_rnn")
    if entry.model.get("aux_heads"):
        assert len(roles_of(model).aux_heads) == entry.model["aux_heads"]


def _damaged_copy(tmp_path, monkeypatch, damage):
    """The shipped weights copied to tmp_path with one file damaged; entries read from there."""
    from zoo.pretrained import manifest as manifest_module

    entry = MANIFEST.get(SMALL)
    data = bytearray(entry.shipped_path.read_bytes())
    (tmp_path / entry.file).write_bytes(bytes(damage(data)))
    monkeypatch.setattr(manifest_module, "WEIGHTS", tmp_path)
    import keras

    def never(*args, **kwargs):
        raise AssertionError("Keras was asked to load an unverified file")
    monkeypatch.setattr(keras.saving, "load_model", never)
    return entry


def _flip(data: bytearray) -> bytearray:
    data[len(data) // 2] ^= 0x01
    return data


def test_a_flipped_byte_is_refused_naming_the_file_and_both_hashes(tmp_path, monkeypatch):
    import zoo

    entry = _damaged_copy(tmp_path, monkeypatch, _flip)
    with pytest.raises(IntegrityError) as err:
        zoo.load_pretrained(SMALL)
    message = str(err.value)
    assert str(tmp_path / entry.file) in message and entry.sha256 in message
    assert integrity.sha256_file(tmp_path / entry.file) in message


def test_a_truncated_file_is_refused(tmp_path, monkeypatch):
    import zoo

    entry = _damaged_copy(tmp_path, monkeypatch, lambda d: d[: len(d) - 1000])
    with pytest.raises(IntegrityError, match=rf"{entry.size - 1000} bytes, expected {entry.size}"):
        zoo.load_pretrained(SMALL)
    assert _cli("verify", cwd=tmp_path).returncode == 0  # the shipped files are untouched


def _remote(monkeypatch, tmp_path, sha256=None) -> Path:
    """SMALL as a remote entry served from a file:// URL, with the cache in tmp_path."""
    from zoo.pretrained import load as load_module

    entry = MANIFEST.get(SMALL)
    served = tmp_path / "server" / entry.file
    served.parent.mkdir()
    served.write_bytes(entry.shipped_path.read_bytes())
    remote = replace(entry, url=served.as_uri(), sha256=sha256 or entry.sha256)
    patched = Manifest(tuple(remote if e.name == SMALL else e for e in MANIFEST.entries), MANIFEST.pairs)
    monkeypatch.setattr(load_module, "load_manifest", lambda: patched)
    monkeypatch.setenv("GRADZOO_CACHE", str(tmp_path / "cache"))
    return served


def test_a_remote_entry_is_fetched_into_the_cache_and_reused(tmp_path, monkeypatch):
    import zoo

    served = _remote(monkeypatch, tmp_path)
    model = zoo.load_pretrained(SMALL)
    cached = tmp_path / "cache" / "pretrained" / served.name
    assert cached.read_bytes() == served.read_bytes() and model.count_params() > 0
    served.unlink()  # the second load needs no server
    assert zoo.load_pretrained(SMALL).count_params() == model.count_params()
    cached.write_bytes(b"damaged")  # a damaged cache is fetched again, not loaded
    served.write_bytes(MANIFEST.get(SMALL).shipped_path.read_bytes())
    zoo.load_pretrained(SMALL)
    assert integrity.sha256_file(cached) == MANIFEST.get(SMALL).sha256


def test_a_remote_file_with_the_wrong_hash_is_refused_and_not_cached(tmp_path, monkeypatch):
    import zoo

    _remote(monkeypatch, tmp_path, sha256="0" * 64)
    with pytest.raises(IntegrityError, match="0{64}"):
        zoo.load_pretrained(SMALL)
    assert not any((tmp_path / "cache" / "pretrained").iterdir())  # no partial file left behind


def test_zoo_pretrained_train_reproduces_the_manifest_metrics(tmp_path):
    done = _cli("train", SMALL, "--threads", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| NO |" not in done.stdout and "| summary/grad_first_init |" in done.stdout


def test_registered_model_loads_back_from_the_registry(tmp_path):
    import mlflow

    import zoo.models._layers  # noqa: F401  the zoo's layers, for Keras to deserialize

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = _cli("train", SMALL, "--threads", "1", "--register", "--tracking-uri", uri, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.keras.load_model(f"models:/{SMALL}@zoo")
        version = mlflow.MlflowClient().get_model_version_by_alias(SMALL, "zoo")
    finally:
        mlflow.set_tracking_uri(None)
    x = np.zeros((2, *MANIFEST.get(SMALL).data["input_shape"]), "float32")
    assert np.asarray(model(x)).shape == (2, 10)
    assert version.tags["zoo.shipped_sha256"] == MANIFEST.get(SMALL).sha256


def test_zoo_train_logs_a_model_that_mlflow_loads(tmp_path, sqlite_uri):
    import mlflow

    import zoo.models._layers  # noqa: F401
    from conftest import run_cli

    done = run_cli("model.depth=3", "model.width=8", "trainer.epochs=1", f"tracking.uri={sqlite_uri}",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    client = mlflow.MlflowClient(sqlite_uri)
    run = client.search_runs([client.get_experiment_by_name("gradzoo").experiment_id])[0]
    assert float(run.data.tags["zoo.model_log_seconds"]) < 30
    model_uri = run.data.tags["zoo.model_uri"]
    assert [m.model_id for m in run.outputs.model_outputs] == [model_uri.split("/")[-1]]
    mlflow.set_tracking_uri(sqlite_uri)
    try:
        model = mlflow.keras.load_model(model_uri)
        info = mlflow.models.get_model_info(model_uri)
    finally:
        mlflow.set_tracking_uri(None)
    assert np.asarray(model(np.zeros((2, 64), "float32"))).shape == (2, 10)
    assert info.signature is not None and info.saved_input_example_info is not None


def test_a_runs_logged_model_is_in_the_runs_experiment_and_named_after_the_run(tmp_path, sqlite_uri):
    """The experiment's *Models* tab and a run's *Logged models* list what
    ``search_logged_models`` finds: the model belongs to the run's experiment (not Default),
    named ``<model family>-<dataset>``, with the run's params and verdict."""
    import mlflow
    from mlflow.entities import LoggedModelStatus

    from conftest import run_cli

    done = run_cli("model.depth=3", "model.width=8", "trainer.epochs=1", f"tracking.uri={sqlite_uri}",
                   "tracking.experiment=mine", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    client = mlflow.MlflowClient(sqlite_uri)
    experiment = client.get_experiment_by_name("mine").experiment_id
    run = client.search_runs([experiment])[0]
    mlflow.set_tracking_uri(sqlite_uri)
    try:
        ours = mlflow.search_logged_models(experiment_ids=[experiment], output_format="list")
        default = mlflow.search_logged_models(experiment_ids=["0"], output_format="list")
    finally:
        mlflow.set_tracking_uri(None)
    assert default == [] and len(ours) == 1
    model = ours[0]
    assert (model.name, model.source_run_id, model.status) == ("mlp-digits", run.info.run_id, LoggedModelStatus.READY)
    assert f"models:/{model.model_id}" == run.data.tags["zoo.model_uri"]
    assert model.params["model.depth"] == "3" and model.tags["zoo.verdict"] == run.data.tags["zoo.verdict"]


def test_tracking_log_model_false_logs_no_model(tmp_path):
    import zoo

    from zoo.tracking.memory import MemorySink

    sink = MemorySink()
    zoo.train(["model.depth=2", "model.width=4", "trainer.epochs=1", "tracking.log_model=false"], sink=sink)
    assert sink.models == {}
    result = zoo.train(["model.depth=2", "model.width=4", "trainer.epochs=1"], sink=(sink := MemorySink()))
    assert sink.models["mlp-digits"]["model"] is result.model and "zoo.model_uri" in sink.tags


def test_model_logging_survives_nan_weights_and_a_failing_store(sqlite_uri):
    """A diverged run's NaN weights still log; a sink that cannot log leaves a tag, not a crash."""
    import keras

    from zoo.report.run_report import log_model
    from zoo.tracking.mlflow_sink import MlflowSink

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    for v in model.weights:
        v.assign(np.full(v.shape, np.nan, "float32"))
    sink = MlflowSink(sqlite_uri, "nan")
    sink.start("nan", {}, {})
    tags = log_model(sink, model, np.zeros((5, 4), "float32"), {"zoo.outcome": "diverged"})
    sink.finish("FINISHED")
    assert tags["zoo.model_uri"].startswith("models:/")

    class Broken:
        def log_model(self, *args, **kwargs):
            raise OSError("disk full")
    tags = log_model(Broken(), model, np.zeros((5, 4), "float32"), {"zoo.outcome": "finished"})
    assert tags == {"zoo.model_error": "OSError: disk full"}


# -- zoo.compare -----------------------------------------------------------------------------

def test_compare_tables_both_models_per_layer_numbers(tmp_path):
    import zoo

    c = zoo.compare("mlp20-sigmoid-digits", "mlp20-relu-digits", batches=2, batch_size=32)
    assert len(c.table) == 20 and c.knob.startswith("model.activation")
    first, last = c.table[0], c.table[-1]
    assert first["layer_a"] == first["layer_b"] == c.a.layers[0]
    assert first["median_a"] < 1e-6 * first["median_b"]  # sigmoid's first layer starves
    assert last["median_a"] > 0 and last["median_b"] > 0 and first["ratio"] > 1e6
    assert c.a.grad_norm.shape == (2, 20)
    assert c.a.headline == "vanishing · stalled" and c.b.headline == "healthy · learning"
    md = c.save(tmp_path / "flow.md").read_text()
    assert "mlp20-sigmoid-digits" in md and "mlp20-relu-digits" in md
    assert md.startswith("- a = mlp20-sigmoid-digits: vanishing · stalled; verdict vanishing (")
    assert c.save(tmp_path / "flow.png").stat().st_size > 10_000


def test_compare_measures_what_a_plain_gradient_tape_measures_and_changes_nothing():
    """A second way agrees: the first kernel's gradient norm by a bare GradientTape; and the
    probe leaves every variable (batch-norm moving statistics included) as it was."""
    import keras
    import tensorflow as tf

    import zoo
    from zoo.analysis.comparison import probe

    model = zoo.load_pretrained("mlp20-sigmoid-bn-digits")
    data = zoo.load_dataset("digits")
    x, y = data.x_train[:64], data.y_train[:64]
    before = [v.numpy().copy() for v in model.variables]
    measured = probe(model, [x], [y], "classification", "bn")
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, model.variables))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        value = loss(y, model(x, training=True))
    kernels = [v for v in model.trainable_variables if v.path.endswith("kernel")]
    expected = [float(tf.norm(g)) for g in tape.gradient(value, kernels)]
    for v in model.variables:  # the tape's forward pass moved the statistics: put them back
        v.assign(before[[w.path for w in model.variables].index(v.path)])
    np.testing.assert_allclose(measured.grad_norm[0], expected, rtol=1e-4)


def test_compare_of_recurrent_models_has_the_gradient_through_time():
    import zoo

    c = zoo.compare("rnn-tanh-adding100", "gru-adding100", batches=2, batch_size=32)
    assert c.a.time_grad.shape == (2, 1, 100) and c.b.time_grad.shape == (2, 1, 100)
    tanh_ratio = np.median(c.a.time_grad[:, 0, 0]) / np.median(c.a.time_grad[:, 0, -1])
    gru_ratio = np.median(c.b.time_grad[:, 0, 0]) / np.median(c.b.time_grad[:, 0, -1])
    assert gru_ratio > 1e3 * tanh_ratio
    assert c.a.verdict.label == "vanishing" and c.a.verdict.reason.startswith("through time")
    assert c.b.verdict.label == "healthy"


@pytest.mark.parametrize("text, message", [
    ('{"format": 1, "entries": [', "not valid JSON: Expecting value (line 1, column 27); restore it"),
    ('{"format": 1,\n "entries": [}\n', "not valid JSON: Expecting value (line 2, column 14)"),
    ("", "not valid JSON: Expecting value (line 1, column 1)"),
    ("\xff\xfe", "cannot be read: 'utf-8' codec can't decode byte 0xff in position 0"),
    ("[]", "must hold a JSON object with 'format', 'pairs' and 'entries', got list"),
    ('{"format": 2}', "format 2, expected 1"),
    ('{"format": 1, "entries": [{"name": "a"}]}', "an entry lacks the field 'recipe'"),
    ('{"format": 1, "entries": [{"name": "a", "recipe": [], "nosuch": 1}]}', "unexpected keyword argument 'nosuch'"),
    ('{"format": 1, "entries": [], "pairs": [{"name": "p", "a": "x", "b": "y", "knob": "k", "shows": "s"}]}',
     "unknown pretrained model 'x'; choose one of: "),
])
def test_a_corrupt_manifest_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys, text, message):
    """Before: a raw JSONDecodeError (or KeyError, TypeError) traceback from zoo-pretrained."""
    from zoo.cli import pretrained as cli
    from zoo.pretrained import manifest

    path = tmp_path / "manifest.json"
    path.write_text(text, encoding="latin-1")
    with pytest.raises(manifest.ManifestError) as caught:
        manifest.load(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)
    monkeypatch.setattr(manifest, "MANIFEST", path)
    assert cli.main(["list"]) == 2
    assert capsys.readouterr().err.splitlines() == [f"zoo-pretrained: {caught.value}"]


def test_a_missing_manifest_is_one_line_naming_the_file(tmp_path):
    from zoo.pretrained import manifest

    with pytest.raises(manifest.ManifestError, match=rf"^{tmp_path}/nope.json: cannot be read: No such file"):
        manifest.load(tmp_path / "nope.json")
