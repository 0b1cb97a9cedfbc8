"""The newer doors hold like zoo-train's (issue 31): every kind of bad input to ``zoo-diagnose``,
``data=arrays``, ``model=custom``, a study file of your own, ``zoo-pretrained`` and the Python
entry points is one line and exit 2 (from Python one zoo.InputError naming the argument), before
TensorFlow when the files can tell; a custom builder is sized before anything is allocated and
stopped when it outgrows the memory or the time; a signal is a stop wherever it lands.

The fixtures are benchmarks/bad_inputs.py's, which measures the same kinds as a user meets them.
"""
from __future__ import annotations

import importlib.util
import re
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

import zoo
from conftest import EVENT_SECONDS
from test_user_study import ablate, write_project
from test_validation import refuse
from zoo.data import npz
from zoo.errors import InputError
from zoo.config.schema import SpecError

ROOT = Path(__file__).resolve().parents[1]


def _bad_inputs():
    spec = importlib.util.spec_from_file_location("bad_inputs", ROOT / "benchmarks/bad_inputs.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


B = _bad_inputs()
PROBE = ("import sys\nfrom zoo.cli.{cli} import main\ncode = main(sys.argv[1:])\n"
         "print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_NOT_IMPORTED', code)\n")


def cli(command: str, *args: str, cwd: Path) -> tuple[int, bool, list[str]]:
    """``zoo-<command> ARGS`` in a process of its own: (exit code, TensorFlow imported?, stderr lines)."""
    done = subprocess.run([sys.executable, "-c", PROBE.format(cli=command), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=EVENT_SECONDS)
    *_, tf, code = done.stdout.split()
    return int(code), tf == "TF_IMPORTED", [line for line in done.stderr.splitlines() if line.startswith("zoo-")]


# --- .npz headers: read without loading, never trusted for an allocation ----------------------------
HEADERS = {  # a kind of header: what the one line says
    "garbage": (B.GARBAGE, "the .npy header of x cannot be read (TokenError"),
    "not_a_dict": (B.NOT_A_DICT, "the .npy header of x cannot be read (ValueError: Header is not a dictionary"),
    "unknown_dtype": (B.BAD_DESCR, "the .npy header of x cannot be read (ValueError: descr is not a valid dtype"),
    "negative_shape": (B.NEGATIVE, "the .npy header of x has shape (-64, 8), not a shape"),
    "bad_magic": (B.BAD_MAGIC, "the .npy header of x cannot be read (ValueError: the magic string is not correct"),
    "claims_1e11_rows": (B.claimed((10**11, 8)), "the header of x claims [100000000000, 8] float32 (2.9 TiB) but the "
                                                  "member holds 64 B of data"),
    "claims_more_than_it_holds": (B.claimed((1000, 8)), "the header of x claims [1000, 8] float32 (31.2 KiB) but the "
                                                         "member holds 64 B"),
}


@pytest.mark.parametrize("kind", HEADERS)
def test_every_kind_of_bad_header_is_one_line_and_nothing_is_loaded(tmp_path, kind, monkeypatch):
    member, says = HEADERS[kind]
    path = B.diag_file(tmp_path, x=member)
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load was called"))
    with pytest.raises(npz.NpzError) as err:
        npz.read_headers(path)
    assert says in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_arrays_that_fit_the_file_but_not_the_memory_are_refused_before_loading(tmp_path, monkeypatch):
    path = B.diag_file(tmp_path)
    monkeypatch.setattr(npz, "available_bytes", lambda: 1000)  # a machine with 1000 bytes free
    headers = npz.read_headers(path)
    with pytest.raises(npz.NpzError, match=r"loading its arrays needs about 2\.2 KiB of memory but 1000 B is "
                                           r"available; the largest is x \(\[64, 8\] float32, 2\.0 KiB\)"):
        npz.check_memory(path, list(headers.values()))


@pytest.mark.parametrize("kind", ["garbage", "claims_1e11_rows"])
def test_zoo_diagnose_and_data_arrays_refuse_a_bad_header_before_tensorflow(tmp_path, kind):
    member, says = HEADERS[kind]
    B.model_file(tmp_path)
    B.diag_file(tmp_path, x=member)
    code, tf, lines = cli("diagnose", "model.keras", "--data", "data.npz", cwd=tmp_path)
    assert (code, tf, len(lines)) == (2, False, 1) and says in lines[0], lines
    B.arrays_file(tmp_path, "arrays.npz", x_train=member)
    message = refuse(["data=arrays", f"data.path={tmp_path}/arrays.npz", "tracking.uri=null"], tmp_path)
    assert message.startswith(f"data.path: '{tmp_path}/arrays.npz': {says.replace(' x ', ' x_train ')}"), message


# --- .keras archives, the options, the values only the model can judge ---------------------------
KERAS = {
    "config_is_a_list": (lambda f: B.keras_with(f, [1, 2]), "its config.json is not a Keras model's config"),
    "no_config": (lambda f: zipfile.ZipFile(f / "model.keras", "w").close(), "not a Keras .keras model file"),
    "no_weights": (lambda f: B.keras_with(f, B.config_of_model(), weights=False), "holds no weights (model.weights.h5"),
    "not_json": (lambda f: B.keras_with(f, b"{oops"), "not a Keras .keras model file (JSONDecodeError)"),
    "cut_in_half": (lambda f: (f / "model.keras").write_bytes(B.model_bytes()[:len(B.model_bytes()) // 2]),
                    "not a Keras .keras model file (BadZipFile)"),
    "a_folder": (lambda f: (f / "model.keras").mkdir(), "is a folder, not a .keras model file"),
}
OPTIONS = {
    "seed_negative": (["--seed", "-1"], "--seed must be an integer in [0, 2**32), got -1"),
    "seed_too_large": (["--seed", str(2**40)], "--seed must be an integer in [0, 2**32), got 1099511627776"),
    "out_under_proc": (["--out", "/proc/zoo-out"], "--out /proc/zoo-out: folder '/proc' does not take new files"),
    "out_under_sys": (["--out", "/sys/zoo-out"], "--out /sys/zoo-out: folder '/sys' does not take new files"),
    "empty_experiment": (["--mlflow", "--experiment", ""], "--experiment: must not be empty"),
}
VALUES = {  # what the file says about the values, before TensorFlow
    "one_example": (dict(x=B.rng_data()[0][:1], y=B.rng_data()[1][:1]), "x holds 1 example; a diagnosis needs at least 2"),
    "beyond_float32": (dict(x=B.rng_data(scale=1e300, dtype="float64")[0]),
                       "x holds values up to 3.9e+300, beyond float32's range"),
}


@pytest.mark.parametrize("case", [*(f"keras:{k}" for k in KERAS), *(f"option:{k}" for k in OPTIONS),
                                  *(f"values:{k}" for k in VALUES)])
def test_zoo_diagnose_refuses_what_its_files_and_options_tell_before_tensorflow(tmp_path, case):
    group, kind = case.split(":")
    args = []
    if group == "keras":
        KERAS[kind][0](tmp_path)
        B.diag_file(tmp_path)
        says = KERAS[kind][1]
    else:
        B.model_file(tmp_path)
        B.diag_file(tmp_path, **(VALUES[kind][0] if group == "values" else {}))
        args, says = OPTIONS[kind] if group == "option" else ([], VALUES[kind][1])
    code, tf, lines = cli("diagnose", "model.keras", "--data", "data.npz", *args, cwd=tmp_path)
    assert (code, tf, len(lines)) == (2, False, 1) and says in lines[0], lines


def test_zoo_diagnose_refuses_inputs_whose_loss_overflows_once_the_model_is_loaded(tmp_path):
    """Inputs of magnitude 1e30 are finite in float32, but a ReLU net's squared error of them is
    not: only the loaded model can tell, in one line (it was a traceback from drawing NaNs)."""
    B.model_file(tmp_path, kind="relu")
    B.diag_file(tmp_path, x=B.rng_data(scale=1e30)[0], y=B.rng_data(scale=1e30)[0][:, 0])
    code, tf, lines = cli("diagnose", "model.keras", "--data", "data.npz", cwd=tmp_path)
    assert (code, tf, len(lines)) == (2, True, 1), lines
    assert "data: the model's loss overflows (inf) in float32 on the first batch (x up to 3.9e+30, y up to " in lines[0]
    assert "and not with the data scaled to unit RMS" in lines[0]


# --- the Python entry points: one type, one line, the argument named ------------------------------------
@pytest.fixture(scope="module")
def models():
    import keras

    m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    n = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    bn = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), keras.layers.BatchNormalization(), keras.layers.Dense(3)])
    relu = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    x, y = B.rng_data()
    return m, n, bn, relu, x, y


CALLS = {  # a kind of wrong argument: the call, and what the one line names
    "data_one_item_tuple": (lambda m, n, bn, relu, x, y: zoo.diagnose(m, (x,)), "data as a tuple must be (x, y) or (x, y, task)"),
    "data_dict_without_y": (lambda m, n, bn, relu, x, y: zoo.diagnose(m, {"x": x}), "data as a dict takes 'x', 'y'"),
    "data_dict_unknown_key": (lambda m, n, bn, relu, x, y: zoo.diagnose(m, {"x": x, "y": y, "w": y}), "keys it does not take: 'w'"),
    "data_a_number": (lambda m, n, bn, relu, x, y: zoo.diagnose(m, 3), "data must be (x, y), (x, y, task)"),
    "data_unknown_name": (lambda m, n, bn, relu, x, y: zoo.diagnose(m, "digitz"), "'digitz' is neither an .npz file nor a dataset"),
    "lengths_differ": (lambda m, n, bn, relu, x, y: zoo.diagnose(m, (x, y[:10])), "they hold x 64, y 10"),
    "strings": (lambda m, n, bn, relu, x, y: zoo.diagnose(m, (x, np.array(["a"] * 64))), "y holds <U1 values, not numbers"),
    "not_finite": (lambda m, n, bn, relu, x, y: zoo.diagnose(m, (np.where(x > 2, np.nan, x), y)), "values that are not finite"),
    "one_example": (lambda m, n, bn, relu, x, y: zoo.diagnose(m, (x[:1], y[:1])), "data holds 1 example; at least 2"),
    "batches_0": (lambda m, n, bn, relu, x, y: zoo.diagnose(m, (x, y), batches=0), "batches must be an integer >= 1, got 0"),
    "batch_size_0": (lambda m, n, bn, relu, x, y: zoo.diagnose(m, (x, y), batch_size=0), "batch_size must be an integer >= 1"),
    "batch_size_float": (lambda m, n, bn, relu, x, y: zoo.diagnose(m, (x, y), batch_size=2.5), "batch_size must be an integer, got 2.5"),
    "seed_negative": (lambda m, n, bn, relu, x, y: zoo.diagnose(m, (x, y), seed=-1), "seed must be an integer in [0, 2**32)"),
    "seed_bool": (lambda m, n, bn, relu, x, y: zoo.diagnose(m, (x, y), seed=True), "seed must be an integer, got True"),
    "loss_a_number": (lambda m, n, bn, relu, x, y: zoo.diagnose(m, (x, y), loss=3), "loss must be a Keras loss name or object"),
    "model_a_path": (lambda m, n, bn, relu, x, y: zoo.diagnose("model.keras", (x, y)), "model must be a keras.Model, got the path"),
    "batch_norm_batch_of_one": (lambda m, n, bn, relu, x, y: zoo.diagnose(bn, (x[:5], y[:5]), batch_size=2),
                                "the batches hold 2, 2, 1 example(s), and the model has batch normalization"),
    "overflowing_data": (lambda m, n, bn, relu, x, y: zoo.diagnose(relu, (x * 1e30, x[:, 0] * 1e30)),
                         "the model's loss overflows (inf) in float32 on the first batch (x up to 3.9e+30, y up to "),
    "compare_input_shapes": (lambda m, n, bn, relu, x, y: zoo.compare(m, n, (x, y, "classification")),
                             "b takes inputs of shape (5,) but a takes (8,)"),
    "compare_without_task": (lambda m, n, bn, relu, x, y: zoo.compare(m, m, (x, y)), "data as a tuple must be (x, y, task); got 2"),
    "compare_without_data": (lambda m, n, bn, relu, x, y: zoo.compare(m, m), "data is missing"),
    "compare_unknown_name": (lambda m, n, bn, relu, x, y: zoo.compare("mlp20-relu", m), "a: unknown pretrained model 'mlp20-relu'"),
    "compare_data_shape": (lambda m, n, bn, relu, x, y: zoo.compare(m, m, (x[:, :5], y, "classification")),
                           "data: x has examples of shape (5,) but the models take (8,)"),
    "build_model_outputs": (lambda m, n, bn, relu, x, y: zoo.build_model("mlp", (8,), 0), "num_outputs must be an integer >= 1"),
    "build_model_shape": (lambda m, n, bn, relu, x, y: zoo.build_model("mlp", 8, 3), "input_shape must be a tuple of positive"),
    "build_model_name": (lambda m, n, bn, relu, x, y: zoo.build_model("mlq", (8,), 3), "name must be one of: custom, deep_linear"),
    "build_model_knob": (lambda m, n, bn, relu, x, y: zoo.build_model("mlp", (8,), 3, depth=0), "model.depth must be >= 1"),
    "train_a_string": (lambda m, n, bn, relu, x, y: zoo.train("model.depth=3"), "overrides must be a list of strings"),
    "train_a_sink": (lambda m, n, bn, relu, x, y: zoo.train([], sink=object()), "sink must be a zoo.tracking.sink.Sink"),
    "pretrained_a_number": (lambda m, n, bn, relu, x, y: zoo.load_pretrained(3), "name must be a pretrained entry's name"),
    "pretrained_unknown": (lambda m, n, bn, relu, x, y: zoo.load_pretrained("nope"), "unknown pretrained model 'nope'"),
    "dataset_unknown": (lambda m, n, bn, relu, x, y: zoo.load_dataset("nope"), "name must be one of: adding, arrays"),
}


@pytest.mark.parametrize("kind", CALLS)
def test_a_wrong_argument_is_one_input_error_naming_it(models, kind):
    call, says = CALLS[kind]
    with pytest.raises(zoo.InputError) as err:
        call(*models)
    assert says in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_model_that_overflows_by_itself_is_diagnosed_not_refused(models):
    """Data of ordinary magnitude that the model itself overflows (weights of 1e20), or a weight
    that is not finite: the model is the cause, and the diagnosis says so (the finding diverged)."""
    import keras

    _, _, _, _, x, y = models
    for scale in (1e20, np.nan):
        model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
        model.layers[0].kernel.assign(np.full((8, 16), scale, "float32"))
        d = zoo.diagnose(model, (x, x[:, 0]), batches=1, batch_size=16)
        assert d.verdict.label == "diverged", d.verdict


def test_the_doors_types_are_one_type():
    from zoo.analysis.diagnosis.arrays import InputError as diagnosis_error
    from zoo.pretrained import UnknownPretrainedError

    assert diagnosis_error is zoo.InputError and issubclass(SpecError, zoo.InputError)
    assert issubclass(UnknownPretrainedError, zoo.InputError) and issubclass(UnknownPretrainedError, KeyError)
    assert issubclass(zoo.InputError, ValueError)  # what every one of them was
    assert str(InputError("a\n  b\n")) == "a; b"  # one line, whoever wrote it


def test_a_diagnosis_on_good_arrays_still_runs(models):
    m, _, bn, _, x, y = models
    assert zoo.diagnose(m, (x, y), batches=2, batch_size=16).verdict.label
    assert zoo.diagnose(bn, (x, y), batches=2, batch_size=16).verdict.label  # batches of 16: no batch of one


# --- a study file of your own -------------------------------------------------------------------------
def study(project: Path, edit) -> None:
    path = project / "mystudy.yaml"
    path.write_text(edit(path.read_text()))


STUDIES = {  # a kind of bad study file: the edit, and what the one line says
    "alias_bomb": (lambda text: text + textwrap.dedent(B.alias_bomb()).replace("defaults: [config, _self_]\n", "")
                   .replace("study: {name: x}\n", ""), "expands to more than 100,000 YAML nodes once its aliases"),
    "alias_to_itself": (lambda text: text + "loop: &loop [1, *loop]\n", "an alias inside the node it names"),
    "too_large": (lambda text: "# " + "x" * (2**20) + "\n" + text, "bytes, more than a study file (1,048,576)"),
    "empty_name": (lambda text: text.replace("name: my_activation", "name: ''"), "study.name must be a non-empty string, got ''"),
    "name_a_number": (lambda text: text.replace("name: my_activation", "name: 12"), "study.name must be a non-empty string, got 12 (int)"),
    "no_name": (lambda text: text.replace("  name: my_activation\n", ""), "study.name is missing; a study names name, description"),
    "empty_description": (lambda text: text.replace('description: "sigmoid vs relu in my depth-8 MLP, on my data"',
                                                    'description: " "'), "study.description must be a non-empty string"),
    "no_metrics": (lambda text: text.replace("metrics: [summary/grad_first_init, final/train_loss, final/val_accuracy]",
                                             "metrics: []"), "study.metrics must name at least one metric"),
    "metrics_a_string": (lambda text: text.replace("metrics: [summary/grad_first_init, final/train_loss, final/val_accuracy]",
                                                   "metrics: final/train_loss"), "study.metrics must be a list of non-empty strings"),
    "claim_a_string": (lambda text: text.replace("  claim:\n", "  claim: yes\n  claim_was:\n"), "study.claim"),
    "unknown_field": (lambda text: text.replace("  name: my_activation\n", "  name: my_activation\n  nmae: x\n"),
                      "study.nmae is not a study field"),
}


@pytest.mark.parametrize("kind", STUDIES)
def test_every_kind_of_bad_study_file_is_one_line_before_anything_runs(tmp_path, kind):
    from zoo.studies.load import load_study

    project = write_project(tmp_path)
    edit, says = STUDIES[kind]
    study(project, edit)
    with pytest.raises(SpecError) as err:
        load_study(str(project / "mystudy.yaml"))
    assert says in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_zoo_ablate_refuses_an_alias_bomb_in_one_line_before_tensorflow(tmp_path):
    project = write_project(tmp_path)
    study(project, STUDIES["alias_bomb"][0])
    code, tf, lines = ablate(["mystudy.yaml", "--scale", "quick"], project)
    assert (code, tf, len(lines)) == (2, False, 1), lines
    assert "expands to more than 100,000 YAML nodes" in lines[0]


# --- zoo-pretrained ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, says", [
    (["--register", "--tracking-uri", "http://127.0.0.1:9"], "--tracking-uri: no MLflow server answers at "
                                                               "http://127.0.0.1:9 within 3 s"),
    (["--register", "--tracking-uri", "sqlite:////proc/x.db"], "--tracking-uri: cannot create '/proc/x.db': folder"),
    (["--register", "--experiment", ""], "--experiment: must not be empty"),
    (["--threads", "-1"], "--threads must be in [0, 1024]"),
    (["--rtol", "nan"], "--rtol must be a finite number >= 0, got nan"),
    (["--no-such-option"], "unrecognized arguments: --no-such-option (zoo-pretrained --help)"),
])
def test_zoo_pretrained_train_refuses_before_tensorflow(tmp_path, args, says):
    code, tf, lines = cli("pretrained", "train", "mlp20-relu-digits", *args, cwd=tmp_path)
    assert (code, tf, len(lines)) == (2, False, 1) and says in lines[0], lines


# --- custom builders: sized by a symbolic build, bounded in memory and time -----------------------------
BUILDERS = {
    "net.py": B.CUSTOM,
    "stubborn.py": "import time\ndef build(input_shape, num_outputs):\n    while True:\n        try:\n"
                   "            time.sleep(0.05)\n        except Exception:\n            pass\n",
    "exits.py": "import sys\nsys.exit(0)\ndef build(input_shape, num_outputs):\n    pass\n",
    "exits_in_build.py": "import sys\ndef build(input_shape, num_outputs):\n    sys.exit(3)\n",
    "from_a_value.py": "import keras, numpy as np\ndef build(input_shape, num_outputs):\n"  # a variable made from a value
                       "    keras.Variable(np.ones(num_outputs, 'float32'), trainable=False)\n"
                       "    return keras.Sequential([keras.Input(input_shape), keras.layers.Dense(num_outputs)])\n",
}


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    for name, source in BUILDERS.items():
        (tmp_path / name).write_text(source)
    monkeypatch.chdir(tmp_path)  # relative targets are from the launch folder: here
    return tmp_path


def _sized(target: str, **knobs):
    from zoo.data import Dataset
    from zoo.models.custom import CustomConfig, size_by_building

    x, y = B.rng_data(n=64, features=8)
    data = Dataset("arrays", x, y, x[:16], y[:16], "classification", 3)
    section = CustomConfig(name="custom", target=target, knobs=knobs)
    return size_by_building(section, data, 32)


def test_a_custom_model_too_wide_is_refused_without_allocating_it(user_code):
    import resource

    _sized("net.py:build", width=4)  # TensorFlow and Keras loaded, a model built: the peak so far
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SpecError) as err:
        _sized("net.py:build", width=10**6)
    # refused by the whole estimate once built, or while it builds if the trial looked then
    assert re.search(r"model: this run needs about 14\.6 TiB of memory \(1e\+12 parameters.*sized by building "
                     r"net\.py:build symbolically\).*lower model\.width", str(err.value)) or \
        "alone outgrow the memory left while it is still building" in str(err.value), str(err.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 256 * 1024  # KiB: nothing near 14.6 TiB


def test_a_custom_model_too_deep_is_stopped_while_it_builds(user_code, monkeypatch):
    import zoo.config.budget as budget

    monkeypatch.setattr(budget, "available_bytes", lambda: budget.PROCESS_BASE + 200 * 2**20)  # room for ~100 layers
    with pytest.raises(SpecError, match=r"model\.target: net\.py:build with model\.depth=100000 is refused: its "
                                        r"parameters and weight layers alone outgrow the memory left while it is still "
                                        r"building \(at least .* parameters in \d+ weight layers so far\)"):
        _sized("net.py:build", depth=100000)


def test_a_builder_that_never_returns_is_stopped_after_the_bound(user_code, monkeypatch):
    from zoo.models import custom

    monkeypatch.setattr(custom, "TRIAL_SECONDS", 1.0)
    with pytest.raises(SpecError, match=r"stubborn\.py:build with its defaults is refused: it was still building "
                                        r"after 1 s"):
        _sized("stubborn.py:build")  # its own `except Exception: pass` does not swallow the stop


@pytest.mark.parametrize("target, says", [
    ("exits.py:build", "model.target: importing exits.py called sys.exit(0)"),
    ("exits_in_build.py:build", "model.target: exits_in_build.py:build((8,), 3) called sys.exit(3)"),
])
def test_a_builder_that_exits_is_refused_not_obeyed(user_code, target, says):
    from zoo.models import custom

    with pytest.raises(SpecError) as err:
        custom.build_custom((8,), 3, target=target)
    assert str(err.value).startswith(says), str(err.value)


def test_the_trial_build_leaves_the_real_one_as_it_would_be(user_code):
    """Same seed, with and without the trial: the same weights and the same layer names."""
    import keras

    from zoo.models.custom import build_custom
    from zoo.runtime.job import setup_tensorflow

    built = []
    for trial in (False, True):
        setup_tensorflow(7, True)
        if trial:
            _sized("net.py:build", depth=3)
        model = build_custom((8,), 3, target="net.py:build", depth=3)
        built.append(([layer.name for layer in model.layers], [w.numpy() for w in model.weights]))
        keras.backend.clear_session()
    (names_a, weights_a), (names_b, weights_b) = built
    assert names_a == names_b
    assert all(np.array_equal(a, b) for a, b in zip(weights_a, weights_b))


def test_a_builder_that_cannot_build_symbolically_is_built_as_before(user_code, caplog):
    """A variable made from a value cannot be deferred (Keras refuses it in a stateless scope):
    such a builder is not sized, says so, and builds as it did."""
    import logging

    from zoo.models.custom import build_custom

    with caplog.at_level(logging.WARNING, logger="zoo"):
        _sized("from_a_value.py:build")
        assert build_custom((8,), 3, target="from_a_value.py:build").count_params() == 27
    assert "model.target from_a_value.py:build: its memory was not checked: it could not be built symbolically " \
           "first (ValueError: You are attempting to create a variable while in a stateless scope" in caplog.text


def test_zoo_train_refuses_a_custom_model_too_wide_in_one_line(tmp_path):
    (tmp_path / "net.py").write_text(B.CUSTOM)
    done = subprocess.run([sys.executable, "-m", "zoo.cli.train", "model=custom", "model.target=net.py:build",
                           "model.width=1000000", "tracking.uri=null", f"hydra.run.dir={tmp_path}/out"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=EVENT_SECONDS)
    lines = [line for line in done.stderr.splitlines() if line.startswith("zoo-")]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert "14.6 TiB" in lines[0] or "outgrow the memory left" in lines[0], lines


# --- a signal is a stop wherever it lands ------------------------------------------------------------------
def test_an_error_a_library_made_of_a_stop_is_the_stop():
    from zoo.runtime import stopping

    stopping.reset()
    try:
        assert stopping.stop_behind(SystemError("bad argument to internal function")) is None  # no stop asked
        try:
            stopping._on_sigterm(None, None)
        except KeyboardInterrupt:
            pass  # raised inside TensorFlow's tracing, which made a SystemError of it
        stop = stopping.stop_behind(SystemError("bad argument to internal function"))
        assert isinstance(stop, stopping.Terminated) and stopping.name_of(stop) == "SIGTERM"
        assert stopping.stop_behind(stop) is None  # the stop itself needs no stand-in
    finally:
        stopping.reset()


TINY = ["trainer.epochs=1", "model.depth=2", "model.width=8", "data=synthetic", "data.n_train=64", "data.n_val=32"]


def test_sigterm_during_tracing_ends_the_run_killed_not_failed(monkeypatch):
    """A SIGTERM that TensorFlow turned into ``SystemError: bad argument to internal function``
    while it traced the step: the run is KILLED by SIGTERM (it was FAILED, exit 1)."""
    from zoo.training import run
    from zoo.runtime import stopping
    from zoo.tracking.memory import MemorySink

    def traced(*args):  # the first step's tracing, where the signal landed
        try:
            stopping._on_sigterm(None, None)
        except KeyboardInterrupt:
            pass
        raise SystemError("<built-in function ...> returned a result with an exception set")

    monkeypatch.setattr(run, "train_loop", traced)
    sink = MemorySink()
    stopping.reset()
    try:
        with pytest.raises(stopping.Terminated):
            zoo.train(TINY, sink=sink)
    finally:
        stopping.reset()
    assert sink.status == "KILLED" and sink.tags["zoo.outcome"] == "killed" and sink.tags["zoo.killed"] == "SIGTERM"
    assert "zoo.error" not in sink.tags


def test_a_run_stopped_while_its_plots_are_drawn_keeps_its_verdict(monkeypatch):
    from zoo.report import plots
    from zoo.tracking.memory import MemorySink

    def stop(*args, **kwargs):
        raise KeyboardInterrupt()

    monkeypatch.setattr(plots, "gradient_flow_figure", stop)  # what write_records draws first
    sink = MemorySink()
    with pytest.raises(KeyboardInterrupt):
        zoo.train(TINY, sink=sink)
    assert sink.status == "KILLED" and sink.tags["zoo.outcome"] == "killed"
    assert sink.tags["zoo.verdict"] and sink.tags["zoo.verdict_reason"] and sink.tags["zoo.headline"]


@pytest.mark.slow
@pytest.mark.parametrize("moment, sig", [("diagnose", "SIGTERM"), ("diagnose_mlflow", "SIGINT")])
def test_zoo_diagnose_stops_as_zoo_train_does(tmp_path, moment, sig):
    """The replay's trials (benchmarks/interrupts.py): exit 130/143 in one line, the MLflow run
    KILLED with its tags, nothing RUNNING, the store usable, the signal not lost."""
    from test_interrupts import replay_module

    replay = replay_module()
    trial = replay.run_trial(moment, signal.Signals[sig], replay.MOMENTS[moment].offsets[0], tmp_path)
    log = "\n".join(trial.lines[-30:])
    assert trial.signalled, f"{trial.note}\n{log}"
    assert trial.code == (143 if sig == "SIGTERM" else 130), log
    assert f"zoo-diagnose: stopped by {sig}" in log and "Traceback" not in log, log
    assert (trial.finished_without_outcome, trial.running_after_repair, trial.unusable, trial.lost_signal,
            trial.killed_without_tags, trial.repaired) == (0, 0, 0, 0, 0, 0), (trial.note, log)
