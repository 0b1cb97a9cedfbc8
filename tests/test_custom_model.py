"""``model=custom``: the user's own Keras builder, named by ``model.target``, its knobs from the
config. Builders are written the way a user would, into a package on PYTHONPATH or a file."""
import subprocess
import sys
import textwrap

import pytest
from mlflow import MlflowClient

from conftest import EVENT_SECONDS, run_cli, runs_of
from test_validation import ABLATE, refuse
from zoo.instruments.layout import LOG10_ZERO
from zoo.config.schema import SpecError

MLP = """
    import keras


    def build_mlp(input_shape, num_outputs, width=32, depth=3, activation="relu"):
        inputs = keras.Input(shape=input_shape)
        h = keras.layers.Flatten(name="flatten")(inputs)
        for i in range(1, depth):
            h = keras.layers.Dense(width, activation=activation, name=f"dense{i}")(h)
        return keras.Model(inputs, keras.layers.Dense(num_outputs, name="head")(h), name="user_mlp")
"""
CNN = """
    import keras


    def build(input_shape, num_outputs, *, filters=8):
        return keras.Sequential([
            keras.Input(shape=input_shape),
            keras.layers.Conv2D(filters, 3, activation="relu", padding="same", name="conv1"),
            keras.layers.Conv2D(filters, 3, activation="relu", padding="same", name="conv2"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.Dense(num_outputs, name="head"),
        ], name="user_cnn")
"""
SUBCLASSED = """
    import keras


    class Net(keras.Model):
        def __init__(self, num_outputs, width):
            super().__init__(name="user_subclassed")
            self.hidden = keras.layers.Dense(width, activation="tanh", name="hidden")
            self.out = keras.layers.Dense(num_outputs, name="head")

        def call(self, x):
            return self.out(self.hidden(x))


    def build(input_shape, num_outputs, width=16):
        return Net(num_outputs, width)
"""
NARROW = """
    import keras


    def build(input_shape, num_outputs, width=16, depth=3):
        inputs = keras.Input(shape=input_shape)
        h = inputs
        for _ in range(depth - 1):
            h = keras.layers.Dense(width, activation="relu")(h)
        return keras.Model(inputs, keras.layers.Dense(num_outputs)(h))


    def needs_width(input_shape, num_outputs, *, width):
        return build(input_shape, num_outputs, width)


    def one_argument(input_shape):
        return None


    def anything(input_shape, num_outputs, **knobs):
        return build(input_shape, num_outputs)
"""
BAD_AT_BUILD = """
    import functools

    import keras


    def not_a_model(input_shape, num_outputs):
        return [input_shape, num_outputs]


    def wrong_input(input_shape, num_outputs):
        inputs = keras.Input(shape=(32,))
        return keras.Model(inputs, keras.layers.Dense(num_outputs)(inputs))


    def wrong_outputs(input_shape, num_outputs):
        inputs = keras.Input(shape=input_shape)
        return keras.Model(inputs, keras.layers.Dense(num_outputs + 1)(inputs))


    def softmax_head(input_shape, num_outputs):
        inputs = keras.Input(shape=input_shape)
        return keras.Model(inputs, keras.layers.Dense(num_outputs, activation="softmax", name="probs")(inputs))


    def softmax_layer(input_shape, num_outputs):
        return keras.Sequential([keras.layers.Dense(num_outputs, name="logits"), keras.layers.Softmax(name="probs")])


    def unbuilt_conv(input_shape, num_outputs):
        return keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.Dense(num_outputs)])


    def _dense(input_shape, num_outputs, width=8):
        inputs = keras.Input(shape=input_shape)
        return keras.Model(inputs, keras.layers.Dense(num_outputs)(inputs))


    assigned = functools.partial(_dense)  # no plain def: its parameters are read when it is built


    def hidden(input_shape, num_outputs, width=8):
        inputs = keras.Input(shape=input_shape)
        return keras.Model(inputs, keras.layers.Dense(num_outputs)(keras.layers.Dense(width)(inputs)))


    def recurrent(input_shape, num_outputs, width=8):  # takes sequences; given flat data it raises
        inputs = keras.Input(shape=input_shape)
        return keras.Model(inputs, keras.layers.Dense(num_outputs)(keras.layers.LSTM(width)(inputs)))
"""


def write(path, source):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    """A package ``userpkg.nets`` on PYTHONPATH (not the working directory), files beside it."""
    site = tmp_path / "site"
    write(site / "userpkg" / "__init__.py", "")
    write(site / "userpkg" / "nets.py", MLP)
    write(tmp_path / "cnn.py", CNN)
    write(tmp_path / "subclassed.py", SUBCLASSED)
    write(tmp_path / "narrow.py", NARROW)
    write(tmp_path / "broken.py", "def build(input_shape, num_outputs:\n    pass\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    return tmp_path


def only_run(uri):
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("gradzoo").experiment_id])
    assert len(runs) == 1, runs
    return client, runs[0]


def assert_trained_and_measured(client, run, layers):
    """FINISHED, and every named layer's gradient norm logged as a series of positive numbers."""
    assert run.info.status == "FINISHED" and run.data.tags["zoo.outcome"] == "finished"
    assert run.data.tags["zoo.verdict"] and int(run.data.tags["zoo.steps"]) == 23  # 1437 / 64
    for layer in layers:
        history = client.get_metric_history(run.info.run_id, f"log10_grad_norm/{layer}")
        assert history and all(LOG10_ZERO < m.value < 3 for m in history), layer
    assert {k for k in run.data.metrics if k.startswith("log10_grad_norm/")} == {f"log10_grad_norm/{x}" for x in layers}


# --- training: functional, Sequential, subclassed; a package and a file; a sweep ----------------
def test_a_functional_builder_in_a_package_trains_with_its_knobs_logged(user_code, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = run_cli("model=custom", "model.target=userpkg.nets:build_mlp", "model.width=16", "model.depth=4",
                  "model.activation=tanh", "data=digits", "trainer.epochs=1", f"tracking.uri={uri}",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    client, run = only_run(uri)
    params = run.data.params
    assert (params["model.name"], params["model.target"]) == ("custom", "userpkg.nets:build_mlp")
    assert (params["model.width"], params["model.depth"], params["model.activation"]) == ("16", "4", "tanh")
    assert_trained_and_measured(client, run, ["dense1", "dense2", "dense3", "head"])
    assert run.data.tags["zoo.model"] == "custom"
    # its tanh layers found as the monitor finds them: their saturation is measured
    assert {f"saturated_fraction/dense{i}" for i in (1, 2, 3)} <= set(run.data.metrics)


def test_a_sequential_cnn_given_as_a_file_trains(user_code, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = run_cli("model=custom", "model.target=cnn.py:build", "model.filters=4", "data=digits",
                  "data.layout=image", "trainer.epochs=1", "tracking.log_model=false", f"tracking.uri={uri}",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    client, run = only_run(uri)
    assert run.data.params["model.filters"] == "4" and run.data.params["model.target"] == "cnn.py:build"
    assert_trained_and_measured(client, run, ["conv1", "conv2", "head"])


def test_a_subclassed_model_trains(user_code, tmp_path):
    """Needs the train step to take models without symbolic inputs (zoo/training/step.py)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = run_cli("model=custom", "model.target=subclassed.py:build", "model.width=8", "data=digits",
                  "trainer.epochs=1", "tracking.log_model=false", f"tracking.uri={uri}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    client, run = only_run(uri)
    assert run.data.params["model.width"] == "8"
    assert_trained_and_measured(client, run, ["hidden", "head"])
    assert "Net is not a functional or Sequential model" in run.data.tags["zoo.monitor_skipped"]  # named
    assert run.data.tags["zoo.model_sha256"] and "saturated_fraction/hidden" not in run.data.metrics


def test_a_sweep_over_a_knob_makes_a_parent_and_a_child_per_value(user_code, tmp_path):
    out = run_cli("-m", "model=custom", "model.target=userpkg.nets:build_mlp", "model.width=8,16",
                  "model.depth=2", "data=digits", "trainer.epochs=1", "tracking.log_model=false",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    _, parents, children = runs_of(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(c.data.params["model.width"] for c in children) == ["16", "8"]
    for child in children:
        assert child.info.status == "FINISHED", child.data.tags.get("zoo.error")
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert {"log10_grad_norm/dense1", "log10_grad_norm/head"} <= set(child.data.metrics)


# --- the config: knobs in, knobs out, no memory estimate, the help ------------------------------
def test_every_extra_key_is_a_knob_handed_to_the_builder_by_name(user_code, monkeypatch):
    from zoo import models
    from zoo.training.spec import compose_spec
    from zoo.tracking.runs import flat_params

    monkeypatch.chdir(user_code)
    spec = compose_spec(["model=custom", "model.target=narrow.py:anything", "model.width=16",
                         "model.depth=50", "model.sizes=[1,2]", "tracking.uri=null"])
    assert spec.model.kwargs() == {"target": "narrow.py:anything", "width": 16, "depth": 50, "sizes": [1, 2]}
    params = flat_params(spec.resolved)
    assert (params["model.width"], params["model.depth"], params["model.sizes"]) == ("16", "50", "[1, 2]")
    assert "model.knobs" not in params
    # no estimator guesses at a user's model, whatever its knobs are called
    assert models.estimate("custom", spec.model, "digits", spec.data) is None
    # and the model takes whatever data there is: no input kind to refuse
    assert compose_spec(["model=custom", "model.target=cnn.py:build", "data=digits", "data.layout=image",
                         "tracking.uri=null"]).model.kwargs() == {"target": "cnn.py:build"}


def test_a_module_in_the_launch_folder_is_found_as_python_m_would(tmp_path, monkeypatch):
    from zoo.training.spec import compose_spec

    write(tmp_path / "mybuilders.py", MLP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    spec = compose_spec(["model=custom", "model.target=mybuilders:build_mlp", "model.width=8", "tracking.uri=null"])
    assert spec.model.kwargs() == {"target": "mybuilders:build_mlp", "width": 8}
    assert sys.path[-1] == str(tmp_path)  # searched last: it never shadows an installed module


def test_an_edited_builder_or_data_file_is_another_config(tmp_path, monkeypatch):
    """Resume skips a job whose config hash has a FINISHED run: the hash covers the user's files,
    so editing the builder or the arrays makes the same overrides a new job."""
    import numpy as np

    from zoo.training.spec import compose_spec

    monkeypatch.chdir(tmp_path)
    write(tmp_path / "net.py", MLP)
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.normal(size=(40, 5)), "y_train": rng.integers(0, 2, 40),
              "x_val": rng.normal(size=(10, 5)), "y_val": rng.integers(0, 2, 10)}
    np.savez(tmp_path / "mine.npz", **arrays)
    overrides = ["model=custom", "model.target=net.py:build_mlp", "data=arrays", "data.path=mine.npz",
                 "tracking.uri=null"]
    first = compose_spec(overrides)
    assert set(first.fingerprints) == {"model", "data"}
    assert compose_spec(overrides).config_hash == first.config_hash  # the same files: the same run
    write(tmp_path / "net.py", MLP.replace("width=32", "width=33"))
    edited = compose_spec(overrides)
    assert edited.config_hash != first.config_hash and edited.fingerprints["data"] == first.fingerprints["data"]
    np.savez(tmp_path / "mine.npz", **{**arrays, "y_train": 1 - arrays["y_train"]})
    relabelled = compose_spec(overrides)
    assert relabelled.fingerprints["data"] != edited.fingerprints["data"]
    assert relabelled.config_hash != edited.config_hash


def test_help_lists_the_custom_model_and_its_keys(tmp_path):
    out = run_cli("--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line.strip() for line in out.stdout.splitlines()]
    assert any(line.startswith("model=custom: your own Keras builder") for line in lines)
    assert any(line.startswith("model.target=??? ") and "PKG.MODULE:FUNCTION or FILE.py:FUNCTION" in line
               for line in lines)
    assert any(line.startswith("model.KNOB=VALUE ") for line in lines)
    assert "zoo_open_knobs" not in out.stdout  # Hydra's node behind the open knobs is not an option


# --- refused with the config: one line, exit 2, no TensorFlow -----------------------------------
FORM = "PKG.MODULE:FUNCTION or FILE.py:FUNCTION"


@pytest.mark.parametrize("kind, args, message", [
    ("target missing", [], f"model.target is missing: give model.target={FORM}"),
    ("target malformed", ["model.target=userpkg.nets"],
     f"model.target: 'userpkg.nets' is not {FORM} (e.g. mypkg.models:build, or models.py:build)"),
    ("file path without .py", ["model.target=lib/nets:build"], f"model.target: 'lib/nets:build' is not {FORM}"),
    ("function not an identifier", ["model.target=userpkg.nets:build-mlp"],
     f"model.target: 'userpkg.nets:build-mlp' is not {FORM}"),
    ("module not found", ["model.target=nosuch.nets:build"],
     "model.target: cannot find module 'nosuch.nets' (No module named 'nosuch'); put its folder on "
     "PYTHONPATH, or give its file: model.target=path/to/nets.py:build"),
    ("module not found in its package", ["model.target=userpkg.nosuch:build"],
     "model.target: cannot find module 'userpkg.nosuch' on the Python path; put its folder on PYTHONPATH"),
    ("file not found", ["model.target=missing.py:build"], "model.target: file 'missing.py' does not exist "
                                                          "(relative paths are from "),
    ("file is a folder", ["model.target=site.py:build"], "model.target: file 'site.py' is a folder"),
    ("file does not parse", ["model.target=broken.py:build"], "model.target: broken.py does not parse: line 1: "),
    ("function not defined", ["model.target=userpkg.nets:build_mpl"],
     "model.target: userpkg.nets defines no 'build_mpl'; its top-level functions and classes: build_mlp"),
    ("knob not accepted", ["model.target=userpkg.nets:build_mlp", "model.widht=8"],
     "model.widht: userpkg.nets:build_mlp has no parameter 'widht'; its knobs: width, depth, activation"),
    ("knobs not accepted, file", ["model.target=narrow.py:build", "model.activation=relu", "model.init=he_normal"],
     "model.activation: narrow.py:build has no parameters 'activation', 'init'; its knobs: width, depth"),
    ("required knob not given", ["model.target=narrow.py:needs_width"],
     "model.width is missing: narrow.py:needs_width has no default for width; give model.width=VALUE"),
    ("too few positional parameters", ["model.target=narrow.py:one_argument"],
     "model.target: narrow.py:one_argument must take (input_shape, num_outputs, **knobs); it takes (input_shape)"),
    ("knob that the data gives", ["model.target=narrow.py:build", "model.input_shape=[8]"],
     "model.input_shape is not a knob: the zoo gives narrow.py:build the data's input_shape and "
     "num_outputs as its first two arguments (input_shape, num_outputs)"),
    ("knob value is a mapping", ["model.target=narrow.py:build", "model.width={a:1}"],
     "model.width must be a scalar or a list, got {'a': 1}"),
])
def test_a_bad_target_or_knob_is_refused_before_tensorflow(user_code, kind, args, message):
    (user_code / "site.py").mkdir()
    assert refuse(["model=custom", *args], user_code).startswith(message), kind


def test_a_study_varying_a_key_the_builder_lacks_is_refused_before_the_sweep(user_code):
    """activation_depth sweeps model.activation and sets model.init: a builder with neither stops
    zoo-ablate before its first job, as any bad override does."""
    out = subprocess.run([sys.executable, "-c", ABLATE, "activation_depth", "--scale", "quick", "model=custom",
                          "model.target=narrow.py:build"], cwd=user_code, capture_output=True, text=True, timeout=EVENT_SECONDS)
    assert out.stdout.split()[-2:] == ["TF_NOT_IMPORTED", "2"], out.stdout + out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "zoo-ablate: config error: model.init: narrow.py:build has no parameters 'init', 'activation'; its "
        "knobs: width, depth (job 1 of 3: "), out.stderr  # the first job of the sweep that has the fault
    assert not (user_code / "multirun").exists() and not (user_code / "mlflow.db").exists()


# --- refused when built, before training: what only the model can tell --------------------------
@pytest.mark.parametrize("kind, function, knobs, message", [
    ("not a keras.Model", "not_a_model", {}, "model.target: bad.py:not_a_model returned a list, not a keras.Model"),
    ("input shape", "wrong_input", {}, "model.target: the model bad.py:wrong_input built takes inputs of shape "
                                       "(32,) but the data's input_shape is (64,); build it on keras.Input(shape=input_shape)"),
    ("outputs", "wrong_outputs", {}, "model.target: the model bad.py:wrong_outputs built gives 11 outputs per "
                                     "example (its output's last dimension) but the data has num_outputs=10; "
                                     "end it with Dense(num_outputs)"),
    ("softmax activation", "softmax_head", {}, "model.target: the model bad.py:softmax_head built ends in a softmax "
                                               "(probs); drop it and return logits: the zoo's loss applies the "
                                               "softmax itself (from logits)"),
    ("softmax layer", "softmax_layer", {}, "model.target: the model bad.py:softmax_layer built ends in a softmax (probs)"),
    ("unbuilt Sequential that cannot take the data", "unbuilt_conv", {},
     "model.target: the model bad.py:unbuilt_conv built does not take the data's input_shape (64,): ValueError: "),
    ("a knob of the wrong kind, which the builder raises on", "hidden", {"width": "abc"},
     "model.target: bad.py:hidden((64,), 10, width='abc') raised ValueError: Received an invalid value for `units`"),
    ("layers that do not take the data's rank", "recurrent", {},
     "model.target: bad.py:recurrent((64,), 10) raised ValueError: Input 0 with name 'None' of layer 'lstm"),
    # (the layer's name ends here: Keras numbers it, lstm_20 after twenty others in one process)
    ("knob of a builder that is not a plain def", "assigned", {"depth": 3},
     "model.depth: bad.py:assigned has no parameter 'depth'; its knobs: width"),
    ("no such function", "nothing", {}, "model.target: bad.py defines no 'nothing'; its top-level functions"),
])
def test_what_only_the_built_model_tells_is_refused_in_one_line(tmp_path, monkeypatch, kind, function, knobs, message):
    import zoo

    write(tmp_path / "bad.py", BAD_AT_BUILD)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as err:
        zoo.build_model("custom", (64,), 10, target=f"bad.py:{function}", **knobs)
    assert str(err.value).startswith(message) and "\n" not in str(err.value), (kind, str(err.value))


def test_a_module_that_fails_on_import_is_refused_in_one_line(tmp_path, monkeypatch):
    import zoo

    write(tmp_path / "raises.py", "import nosuch_dependency\n\n\ndef build(input_shape, num_outputs):\n    pass\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError, match=r"^model.target: importing raises.py failed: ModuleNotFoundError: "
                                        r"No module named 'nosuch_dependency'$"):
        zoo.build_model("custom", (64,), 10, target="raises.py:build")


def test_a_model_refused_when_built_ends_the_cli_with_one_line_and_a_failed_run(tmp_path):
    write(tmp_path / "bad.py", BAD_AT_BUILD)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = run_cli("model=custom", "model.target=bad.py:softmax_head", "data=digits", f"tracking.uri={uri}",
                  cwd=tmp_path)
    _, run = only_run(uri)
    assert run.info.status == "FAILED" and "ends in a softmax (probs)" in run.data.tags["zoo.error"]
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith("zoo-train")]
    assert lines == [out.stderr.strip().splitlines()[-1]] and "ends in a softmax (probs)" in lines[0]
    assert not (tmp_path / "outputs").exists()  # Hydra's run folder goes with the refused config
