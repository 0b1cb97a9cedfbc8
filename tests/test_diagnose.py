"""zoo-diagnose and zoo.compare on models built outside the zoo (issue 19).

Saved user-style models (a deep sigmoid MLP that vanishes, an LSTM(16) last-output regression
net saved without compile, a healthy CNN with batch norm) are diagnosed through the command:
exit codes, the report's contents, the advice only from reproduced studies. The numbers equal a
bare GradientTape; no variable changes (batch-norm statistics included); every kind of bad input
is one line and exit 2, and what the files can say is refused before TensorFlow loads.
"""
from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import EVENT_SECONDS, swallowed_signal

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import sys\nfrom zoo.cli.diagnose import main\ncode = main(sys.argv[1:])\n"
         "print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_NOT_IMPORTED', code)\n")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Saved models and their data, made as a user would with plain Keras."""
    import keras

    folder = tmp_path_factory.mktemp("user")
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    x = rng.normal(size=(256, 20)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")
    sigmoid = keras.Sequential([keras.Input((20,))] + [keras.layers.Dense(32, activation="sigmoid") for _ in range(20)]
                               + [keras.layers.Dense(2)], name="sigmoid_mlp")
    sigmoid.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer="sgd")
    sigmoid.save(folder / "sigmoid.keras")
    np.savez(folder / "flat.npz", x=x, y=y)
    xs = rng.normal(size=(256, 30, 1)).astype("float32")
    lstm = keras.Sequential([keras.Input((30, 1)), keras.layers.LSTM(16, name="lstm"), keras.layers.Dense(1)],
                           name="lstm_last")
    lstm.save(folder / "lstm.keras")  # no compile(): the loss must be given
    np.savez(folder / "seq.npz", x=xs, y=xs[:, -5:, 0].mean(axis=1, keepdims=True))
    xi = rng.normal(size=(256, 8, 8, 1)).astype("float32")
    cnn = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3, activation="relu", padding="same", name="conv1"),
                            keras.layers.BatchNormalization(), keras.layers.Conv2D(16, 3, activation="relu", padding="same", name="conv2"),
                            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)], name="cnn")
    cnn.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer="adam")
    cnn.save(folder / "cnn.keras")
    np.savez(folder / "img.npz", x_train=xi, y_train=rng.integers(0, 10, 256).astype("int32"))
    (folder / "text.npz").write_text("not a zip")
    np.savez(folder / "nokeys.npz", a=x)
    np.savez(folder / "short.npz", x=x, y=y[:10])
    np.savez(folder / "nan.npz", x=np.where(x > 2.5, np.nan, x), y=y)
    (folder / "text.keras").write_text("not a model")
    one_unit = keras.Sequential([keras.Input((20,)), keras.layers.Dense(8, activation="relu"),
                                 keras.layers.Dense(1, activation="sigmoid", name="out")])
    one_unit.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])  # a common mistake
    one_unit.save(folder / "one_unit.keras")
    np.savez(folder / "img_labels_12.npz", x=xi, y=np.arange(256) % 12)
    return folder


def diagnose_cli(folder: Path, *args: str, capsys) -> tuple[int, str, str]:
    from zoo.cli.diagnose import main

    code = main([*args, "--out", str(folder / f"out-{len(list(folder.iterdir()))}")])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_vanishing_sigmoid_mlp_is_diagnosed_with_the_reproduced_remedies(files, capsys):
    code, out, err = diagnose_cli(files, str(files / "sigmoid.keras"), "--data", str(files / "flat.npz"), capsys=capsys)
    assert code == 1, err
    assert "**Verdict: vanishing** (first/last layer gradient ratio fell to" in out
    remedies = out.split("## What the zoo's reproduced studies support")[1].split("## Gradient norm")[0]
    for study in ("activation_depth", "normalization"):  # the issue's example, each with its numbers
        assert f"study `{study}` (reproduced)" in remedies
    assert "sigmoid's first-layer gradient 2.5e-12 vs ReLU+He 2.0" in remedies
    assert "not a remedy: L1 / L2 weight penalties" in remedies
    assert "`gated_cells`" not in remedies and "`input_scaling`" not in remedies  # not what was found
    table = out.split("| layer | ‖∂L/∂W‖ median [min, max]")[1].split("## Activations")[0]
    assert table.count("\n| dense") == 21 and out.count("| sigmoid |") == 20  # every kernel, every activation
    wrote = next(line for line in out.splitlines() if line.startswith("zoo-diagnose: wrote "))
    assert all(Path(p).stat().st_size > 0 for p in wrote.removeprefix("zoo-diagnose: wrote ").split(", "))


def test_an_lstm_that_returns_its_last_output_is_diagnosed_through_time(files, capsys):
    code, out, err = diagnose_cli(files, str(files / "lstm.keras"), "--data", str(files / "seq.npz"), "--loss", "mse",
                                  capsys=capsys)
    assert code in (0, 1), err
    assert "loss: mean_squared_error (given)" in out
    row = re.search(r"\| lstm \| 30 \| (\S+) \[(\S+), (\S+)\] \|", out)
    assert row, out
    assert "forget gate: lstm: return_sequences=False" in out  # named, not fatal


def test_a_healthy_cnn_exits_0_and_gets_no_advice(files, capsys):
    code, out, err = diagnose_cli(files, str(files / "cnn.keras"), "--data", str(files / "img.npz"), capsys=capsys)
    assert code == 0, out + err
    assert "**Verdict: healthy**" in out and "no reproduced study speaks to these findings" in out
    assert "| conv1 | relu |" in out and "| conv2 | relu |" in out


@pytest.mark.parametrize("args, message", [
    (["missing.keras", "--data", "flat.npz"], "missing.keras: no such file"),
    (["text.keras", "--data", "flat.npz"], "not a Keras .keras model file"),
    (["sigmoid.keras", "--data", "missing.npz"], "missing.npz: no such file"),
    (["sigmoid.keras", "--data", "text.npz"], "not a readable .npz"),
    (["sigmoid.keras", "--data", "nokeys.npz"], "needs arrays named x and y"),
    (["sigmoid.keras", "--data", "short.npz"], "x has 256 examples but y has 10"),
    (["sigmoid.keras", "--data", "nan.npz"], "values that are not finite"),
    (["cnn.keras", "--data", "flat.npz"], "x has examples of shape (20,) but the model takes (8, 8, 1)"),
    (["lstm.keras", "--data", "seq.npz"], "no loss known"),
    (["sigmoid.keras", "--data", "flat.npz", "--batches", "0"], "--batches must be >= 1"),
    (["sigmoid.keras", "--data", "flat.npz", "--mlflow", "--tracking-uri", "ftp://x"], "--tracking-uri"),
    (["sigmoid.keras"], "the following arguments are required: --data"),
    (["sigmoid.keras", "--data", "flat.npz", "--out", "flat.npz"], "--out flat.npz: is a file, not a folder"),
])
def test_bad_input_is_one_line_exit_2_before_tensorflow(files, args, message):
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=files, capture_output=True, text=True, timeout=EVENT_SECONDS)
    err = [line for line in done.stderr.splitlines() if line.startswith("zoo-diagnose")]
    assert done.stdout.strip().splitlines()[-1] == "TF_NOT_IMPORTED 2", done.stdout + done.stderr
    assert len(err) == 1 and message in err[0], done.stderr


@pytest.mark.parametrize("args, message", [
    (["sigmoid.keras", "--data", "flat.npz", "--loss", "nosuch"], "loss 'nosuch': not a Keras loss"),
    (["sigmoid.keras", "--data", "flat.npz", "--loss", "mse"], "y does not fit the model's output and its loss"),
    (["one_unit.keras", "--data", "flat.npz"],  # what only the loaded model tells: a loss that does not fit the head
     "loss sparse_categorical_crossentropy does not fit output out, which has 1 unit: a softmax over one value is 1"),
    (["cnn.keras", "--data", "img_labels_12.npz"],  # labels the 10-unit head has no class for
     "y does not fit the model's output and its loss: sparse categorical cross-entropy read targets outside [0, 10): 0 … 11"),
])
def test_a_loss_that_does_not_fit_is_one_line_exit_2(files, capsys, args, message):
    from zoo.cli.diagnose import main

    assert main([str(files / a) if a.endswith((".keras", ".npz")) else a for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


@pytest.mark.parametrize("hook", ["log_artifact", "finish"])
def test_a_signal_whose_raise_a_callback_swallowed_still_stops_the_command(files, tmp_path, monkeypatch, hook):
    """Stop 39's CI: a SIGINT while the diagnosis was logged ran its handler inside JAX's gc
    callback, which dropped the raise; the run ended FINISHED and the command exited 0. Now a
    stop swallowed before the run is FINISHED ends it KILLED with its tags; one swallowed after
    leaves the complete run FINISHED; the command exits 130 either way."""
    from mlflow import MlflowClient

    from zoo.runtime import stopping
    from zoo.tracking import repair
    from zoo.tracking.mlflow_sink import MlflowSink

    original, sent = getattr(MlflowSink, hook), []

    def then_signalled(self, *args, **kwargs):
        done = original(self, *args, **kwargs)
        if not sent:  # once: a third signal exits at once
            sent.append(hook)
            swallowed_signal(signal.SIGINT)
        return done

    monkeypatch.setattr(MlflowSink, hook, then_signalled)
    monkeypatch.setattr(stopping, "leave", sys.exit)  # in-process: no exit watchdog, finalization kept
    monkeypatch.setattr(repair, "_stores", set())  # only this test's store is this process's to close
    uri, handler = f"sqlite:///{tmp_path}/mlflow.db", signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's (a background job's is SIG_IGN)
    try:
        with pytest.raises(SystemExit) as ended:
            from zoo.cli.diagnose import main

            main([str(files / "sigmoid.keras"), "--data", str(files / "flat.npz"), "--mlflow",
                  "--tracking-uri", uri, "--out", str(tmp_path / "d")])
    finally:
        stopping.reset()
        signal.signal(signal.SIGINT, handler)
    assert sent and ended.value.code == 130
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("gradzoo").experiment_id])[0]
    if hook == "finish":
        assert run.info.status == "FINISHED" and run.data.tags["zoo.outcome"] == "finished"
    else:
        assert run.info.status == "KILLED", run.data.tags
        assert run.data.tags["zoo.outcome"] == "killed" and run.data.tags["zoo.killed"] == "SIGINT"


def test_the_command_logs_the_diagnosis_to_mlflow(files, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    done = subprocess.run([sys.executable, "-m", "zoo.cli.diagnose", str(files / "sigmoid.keras"), "--data",
                           str(files / "flat.npz"), "--mlflow", "--tracking-uri", uri, "--out", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("gradzoo").experiment_id])[0]
    assert run.info.status == "FINISHED" and run.data.tags["zoo.verdict"] == "vanishing"
    assert run.data.tags["zoo.kind"] == "diagnosis" and "activation_depth" in run.data.tags["mlflow.note.content"]
    assert run.data.tags["zoo.findings"] == "vanishing_depth"  # every finding a tag
    assert run.data.tags["zoo.finding.vanishing_depth"].startswith("first/last layer gradient ratio ")
    assert {a.path for a in client.list_artifacts(run.info.run_id, "diagnosis")} == {
        "diagnosis/report.md", "diagnosis/gradient_flow.png", "diagnosis/stats.npz"}


# --- the numbers, and nothing changed --------------------------------------------------------------
def _models():
    import keras

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__(name="subclassed")
            self.a, self.b = keras.layers.Dense(12, activation="tanh"), keras.layers.Dense(3)

        def call(self, x):
            return self.b(self.a(x))

    inner = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu")], name="inner")
    i = keras.Input((6,))
    nested = keras.Model(i, keras.layers.Dense(3)(keras.layers.BatchNormalization()(inner(i))), name="nested")
    a, b = keras.Input((6,), name="a"), keras.Input((4,), name="b")
    h = keras.layers.Concatenate()([keras.layers.Dense(5, activation="relu")(a), keras.layers.Dense(5)(b)])
    multi = keras.Model([a, b], [keras.layers.Dense(3, name="cls")(h), keras.layers.Dense(1, name="reg")(h)], name="multi")
    multi.compile(loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True), "mse"], loss_weights=[1.0, 0.5])
    seq = keras.Sequential([keras.Input((10, 6)), keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True)),
                            keras.layers.GRU(4), keras.layers.Dense(3)], name="bidirectional")
    sub = Subclassed()
    sub(np.zeros((1, 6), np.float32))
    return [sub, nested, multi, seq]


def _data(model, rng):
    if model.name == "multi":
        return [rng.normal(size=(96, 6)).astype("float32"), rng.normal(size=(96, 4)).astype("float32")], \
            [rng.integers(0, 3, 96).astype("int32"), rng.normal(size=(96, 1)).astype("float32")]
    shape = (96, 10, 6) if model.name == "bidirectional" else (96, 6)
    return rng.normal(size=shape).astype("float32"), rng.integers(0, 3, 96).astype("int32")


@pytest.mark.parametrize("which", range(4), ids=["subclassed", "nested + batch norm", "two inputs, two outputs",
                                                 "bidirectional lstm + gru"])
def test_the_numbers_equal_a_bare_tape_and_nothing_changes(which):
    import keras
    import tensorflow as tf

    import zoo
    from zoo.data.batches import batches_of
    from zoo.training.step import data_loss

    keras.utils.set_random_seed(1)
    model = _models()[which]
    x, y = _data(model, np.random.default_rng(which))
    before = [v.numpy().copy() for v in model.variables]
    d = zoo.diagnose(model, (x, y, "classification"), batches=3, batch_size=32)
    assert all(np.array_equal(b, v.numpy()) for b, v in zip(before, model.variables))  # moving stats too
    loss_fn = data_loss(model, "classification")[0]
    xs, ys = batches_of(x, y, 3, 32, 0)
    kernels = [v for v in model.trainable_variables if v.path.endswith(("kernel", "embeddings"))]
    for k, (xb, yb) in enumerate(zip(xs, ys)):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, kernels)
        bare = np.array([np.linalg.norm(g.numpy().astype(np.float64)) for g in grads])
        np.testing.assert_allclose(d.stats.grad_norm[k], bare, rtol=1e-5)
        np.testing.assert_allclose(d.stats.loss[k], float(loss), rtol=1e-5)
    for v, b in zip(model.variables, before):  # the bare tape's forward pass moved them: put back
        v.assign(b)
    assert d.markdown().count("\n| ") >= len(d.stats.layers)


def test_compare_takes_any_model_the_issues_lstm_included():
    import keras

    import zoo

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 30, 1)).astype("float32")
    y = x[:, -5:, 0].mean(axis=1, keepdims=True)
    a = keras.Sequential([keras.Input((30, 1)), keras.layers.LSTM(16, name="lstm"), keras.layers.Dense(1, name="dense")],
                         name="lstm")
    b = keras.Sequential([keras.Input((30, 1)), keras.layers.SimpleRNN(16), keras.layers.Dense(1)], name="rnn")
    c = zoo.compare(a, b, data=(x, y, "regression"), batches=2)
    assert [r["layer_a"] for r in c.table] == ["lstm", "lstm/recurrent", "dense"]
    assert c.a.time_grad.shape == (2, 1, 30) and c.b.time_grad.shape == (2, 1, 30)
    assert "lstm: not measured: forget gate: lstm (return_sequences=False" in c.markdown()


# --- the advice is the docs' results -------------------------------------------------------------------
def test_each_piece_of_evidence_is_the_docs_result_for_its_study():
    from zoo.analysis.diagnosis.remedies import EVIDENCE, claim_text

    results = (ROOT / "docs" / "results" / "studies.md").read_text().split("## Results on this machine")[1]
    for e in EVIDENCE:
        row = next(line for line in results.splitlines() if line.startswith(f"| `{e.study}`"))
        assert f"| {e.verdict} |" in row, (e.study, row)
        assert e.numbers in row, (e.study, e.numbers)
        assert claim_text(e.study)
        assert e.advice or not e.reproduced  # a reproduced study gives advice; others none


# --- the Python entry point: the same checks, advice that fits the model -----------------------------
def test_zoo_diagnose_refuses_what_the_command_refuses_in_one_line():
    import keras

    import zoo
    from zoo.analysis.diagnosis.arrays import InputError

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    x, y = np.zeros((32, 6), np.float32), np.zeros(32, np.int32)
    cases = [((np.zeros((32, 5), np.float32), y, "classification"), "x has examples of shape (5,) but the model takes (6,)"),
             ((x, y, "regresion"), "task must be one of classification, regression, got 'regresion'"),
             ((x, np.full(32, 7, np.int32), "classification"), "y does not fit the model's output and its loss: ")]
    for data, message in cases:
        with pytest.raises(InputError) as err:
            zoo.diagnose(model, data)
        assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_advice_the_model_already_follows_or_that_the_data_makes_moot_is_withheld():
    import keras

    import zoo

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(128, 16)).astype("float32"), rng.integers(0, 2, 128).astype("int32")
    deep = keras.Sequential([keras.Input((16,))] + [keras.layers.Dense(32, activation="sigmoid") for _ in range(15)]
                            + [keras.layers.Dense(2)])
    deep.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    d = zoo.diagnose(deep, (x, y))
    assert d.verdict.label == "vanishing" and "activation_depth" in [e.study for e in d.remedies]
    assert "optimizer" not in [e.study for e in d.evidence]  # it trains with Adam already
    relu = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu", kernel_initializer="he_normal"),
                             keras.layers.Dense(2)])
    d = zoo.diagnose(relu, (np.zeros_like(x), y, "classification"))
    assert d.findings[0].kind == "constant_inputs" and d.problem and not d.evidence
    assert "check the data" in d.markdown() and "no reproduced study speaks" in d.markdown()


def test_a_cross_entropy_given_by_name_is_taken_from_logits_unless_the_model_ends_in_probabilities():
    """`--loss sparse_categorical_crossentropy` (what the CLI suggests for a model saved without
    compile()) on a model ending in logits: Keras' function of that name reads the outputs as
    probabilities, which gave 10.3 where the loss is 2.33 (ln 10) for an untrained 10-class net."""
    import keras

    from zoo.training.step import data_loss

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(32, 5)).astype("float32")
    y = np.arange(32) % 3
    for activation, binary in ((None, False), ("softmax", False), ("sigmoid", True)):
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1 if binary else 3, activation=activation)])
        name = "binary_crossentropy" if binary else "sparse_categorical_crossentropy"
        target = (y % 2).reshape(-1, 1).astype("float32") if binary else y
        fn, words = data_loss(model, "classification", name)
        reference = (keras.losses.BinaryCrossentropy if binary else keras.losses.SparseCategoricalCrossentropy)(
            from_logits=activation is None)
        out = model(x)
        assert float(fn(target, out)) == pytest.approx(float(reference(target, out)), rel=1e-6), activation
        assert ("from logits" in words) == (activation is None), words
    logits = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    fn, words = data_loss(logits, "classification", "categorical_crossentropy")
    one_hot = keras.utils.to_categorical(y, 3)
    assert float(fn(one_hot, logits(x))) == pytest.approx(float(
        keras.losses.CategoricalCrossentropy(from_logits=True)(one_hot, logits(x))), rel=1e-6)
    fn, words = data_loss(logits, "regression", "mse")  # not a cross-entropy: as Keras reads the name
    assert words == "mean_squared_error (given)"
