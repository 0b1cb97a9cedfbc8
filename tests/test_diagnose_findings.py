"""zoo-diagnose on user-style Keras models (issue 30): every head and loss, every finding kind.

Each model is written the way the public bug reports write them (Sequential, ``Dense(1,
activation="sigmoid")``, ``compile("adam", "binary_crossentropy", metrics=["accuracy"])``, raw
unscaled inputs, a Transformer on a 1-feature sequence as in Keras' time-series example). Per
finding kind: the finding with its numbers and layer or time step, the cause named when the
zoo sees it, and the advice of every reproduced study that speaks to it. Per head and loss: no
crash, and the accuracy equal to Keras' own metric on the same outputs.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import zoo  # noqa: E402
from zoo.analysis.diagnosis.arrays import InputError  # noqa: E402



@pytest.fixture
def rng():
    """The same draws in every test, whatever runs before it."""
    return np.random.default_rng(0)


def _kinds(d) -> list[str]:
    return [f.kind for f in d.problems]


def _finding(d, kind: str):
    return next(f for f in d.problems if f.kind == kind)


def _studies(finding) -> dict[str, str]:
    return {e.study: e.verdict for e in finding.evidence}


# --- heads and losses ---------------------------------------------------------------------------
def _binary_classifier(units=1, activation="sigmoid", loss="binary_crossentropy"):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="hidden"),
                              keras.layers.Dense(units, activation=activation, name="out")])
    model.compile("adam", loss, metrics=["accuracy"])
    return model


def _keras_metric(metric, model, x, y):
    metric.update_state(y, model(x, training=True))
    return float(metric.result())


def test_a_binary_classifier_with_float_labels_is_diagnosed_with_thresholded_accuracy(rng):
    """The issue's crash: TypeError from the accuracy's argmax of a float label."""
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("float32")
    model = _binary_classifier()
    for labels in (y, y.astype("int32"), y[:, None]):
        d = zoo.diagnose(model, (x, labels, "classification"), batches=2, batch_size=64)
        head = d.heads[0]
        assert (head.loss, head.activation, head.units, head.metric) == ("binary_crossentropy", "sigmoid", 1,
                                                                          "binary_accuracy")
        from zoo.data.batches import batches_of

        xs, ys = batches_of(x, labels, 2, 64, 0)
        for k in range(2):
            expected = _keras_metric(keras.metrics.BinaryAccuracy(), model, xs[k], ys[k].reshape(-1, 1))
            assert d.stats.metric[k] == pytest.approx(expected, abs=1e-6)
        assert d.probed.progress[0] in ("learning", "stalled", "unstable")
        p = np.mean(y)  # the best constant predictor of binary cross-entropy: the labels' binary entropy
        assert d.probed.progress[1] * -(p * math.log(p) + (1 - p) * math.log(1 - p)) == pytest.approx(
            float(np.median(d.stats.loss)), rel=1e-6)
        assert "Binary accuracy of out on these batches" in d.markdown()


@pytest.mark.parametrize("case", ["multi-label sigmoid", "softmax + sparse", "softmax + one-hot", "logits + sparse"])
def test_each_classification_head_gets_the_accuracy_keras_computes(case, rng):
    x = rng.normal(size=(128, 8)).astype("float32")
    labels = rng.integers(0, 4, 128)
    if case == "multi-label sigmoid":
        model, y, metric = _binary_classifier(4), (rng.random((128, 4)) < 0.4).astype("float32"), keras.metrics.BinaryAccuracy()
    elif case == "softmax + sparse":
        model, y = _binary_classifier(4, "softmax", "sparse_categorical_crossentropy"), labels
        metric = keras.metrics.SparseCategoricalAccuracy()
    elif case == "softmax + one-hot":
        model, y = _binary_classifier(4, "softmax", "categorical_crossentropy"), np.eye(4, dtype="float32")[labels]
        metric = keras.metrics.CategoricalAccuracy()
    else:
        model, y = _binary_classifier(4, None, keras.losses.SparseCategoricalCrossentropy(from_logits=True)), labels
        metric = keras.metrics.SparseCategoricalAccuracy()
    d = zoo.diagnose(model, (x, y, "classification"), batches=1, batch_size=128)
    assert d.stats.metric[0] == pytest.approx(_keras_metric(metric, model, x, y), abs=1e-6)
    assert d.probed.progress is not None and not d.ill_posed


def test_regression_has_no_accuracy_and_several_outputs_keep_their_own_heads(rng):
    a, b = keras.Input((6,), name="a"), keras.Input((4,), name="b")
    h = keras.layers.Concatenate()([keras.layers.Dense(8, activation="relu")(a), b])
    model = keras.Model([a, b], {"kind": keras.layers.Dense(3, activation="softmax", name="cls")(h),
                                 "price": keras.layers.Dense(1, name="reg")(h)})
    model.compile("adam", {"kind": "sparse_categorical_crossentropy", "price": "mse"})
    x = [rng.normal(size=(96, 6)).astype("float32"), rng.normal(size=(96, 4)).astype("float32")]
    y = {"kind": rng.integers(0, 3, 96), "price": rng.normal(size=(96, 1)).astype("float32")}
    d = zoo.diagnose(model, (x, y, "classification"), batches=2, batch_size=48)
    assert [(h.name, h.loss, h.metric) for h in d.heads] == [("kind", "sparse_categorical_crossentropy", "accuracy"),
                                                             ("price", "mean_squared_error", None)]
    assert np.all((d.stats.metric >= 0) & (d.stats.metric <= 1))  # the first output's accuracy
    reg = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
    reg.compile("sgd", "mse")
    d = zoo.diagnose(reg, (x[0], y["price"]), batches=1)
    assert np.isnan(d.stats.metric).all() and "accuracy of" not in d.markdown().lower()


def test_a_loss_that_does_not_fit_the_head_is_one_line(rng):
    """A sparse cross-entropy on one sigmoid unit: softmax over one value is 1, the loss 0 always."""
    model = _binary_classifier(1, "sigmoid", "sparse_categorical_crossentropy")
    x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 2, 64)
    with pytest.raises(InputError) as err:
        zoo.diagnose(model, (x, y))
    assert "does not fit output out, which has 1 unit" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(InputError, match="read targets outside \\[0, 3\\): 0 … 5"):  # labels the head has no class for
        zoo.diagnose(_binary_classifier(3, "softmax", "sparse_categorical_crossentropy"),
                     (x, np.arange(64) % 6, "classification"))


# --- each finding kind ---------------------------------------------------------------------------
def test_ill_posed_binary_cross_entropy_on_labels_0_to_9_is_never_learning(rng):
    """The issue's case: BCE on digits' labels 0..9 trains to a negative loss at chance accuracy."""
    model = _binary_classifier()
    model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy", metrics=["accuracy"])
    x, y = rng.normal(size=(512, 8)).astype("float32"), rng.integers(0, 10, 512).astype("float32")
    history = model.fit(x, y, epochs=6, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < 0  # what the user saw: a falling, negative loss
    assert progress_ratio_without_the_rule(model, x, y) < 0  # read as "learning" before the rule
    d = zoo.diagnose(model, (x, y, "classification"))
    assert d.problems[0].kind == "ill_posed" and d.headline.endswith("· ill-posed")
    assert "binary cross-entropy read targets outside [0, 1]: 0 … 9" in d.ill_posed
    assert d.probed.progress[0] == "ill-posed" and "**Progress: ill-posed**" in d.markdown()
    assert d.tags()["zoo.progress"] == "ill-posed" and "outside [0, 1]" in d.tags()["zoo.finding.ill_posed"]
    assert np.all(d.stats.loss < 0) and "the loss on these batches is -" in d.problems[0].text


def progress_ratio_without_the_rule(model, x, y) -> float:
    """The ratio progress read before the rule: the loss against the targets' variance (the issue's -1.4e4x)."""
    from zoo.records.summary import progress

    loss = float(keras.losses.BinaryCrossentropy()(y, model(x)))
    return progress(loss, float(np.var(y)))[1]


def test_probabilities_fed_to_a_from_logits_loss_name_their_floor(rng):
    model = _binary_classifier(10, "softmax", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = rng.normal(size=(128, 8)).astype("float32"), rng.integers(0, 10, 128)
    d = zoo.diagnose(model, (x, y), batches=2)
    f = _finding(d, "double_activation")
    floor = math.log(1 + 9 / math.e)
    assert f"cannot fall below {floor:.3g}" in f.text and "e / (e + 9) = 0.232" in f.text
    assert float(np.min(d.stats.loss)) >= floor


def test_a_model_whose_training_diverged_is_diverged_with_the_broken_weights(rng, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu", name="dense"),
                              keras.layers.Dense(1, name="dense_1")])
    model.compile(keras.optimizers.SGD(1e6), "mse")
    x = rng.normal(size=(128, 8)).astype("float32")
    model.fit(x, x[:, :1], epochs=2, verbose=0)
    d = zoo.diagnose(model, (x, x[:, :1]), batches=2)
    f = d.problems[0]
    assert f.kind == "diverged" and "are not finite: dense, dense_1" in f.text
    assert {"clipping": "reproduced", "learning_rate": "reproduced"}.items() <= _studies(f).items()
    assert (tmp_path / "report.md") in d.save(tmp_path).values()  # the figure copes with NaN norms


def test_a_transformer_on_one_feature_names_the_layer_norm_as_the_cause(rng):
    """Keras' time-series Transformer example on a 1-feature sequence: LayerNorm over one value."""
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = keras.Input((24, 1))
    x = inputs
    for _ in range(2):
        h = layers.LayerNormalization(epsilon=1e-6)(x)
        h = layers.MultiHeadAttention(key_dim=8, num_heads=2, dropout=0.1)(h, h)
        res = h + x
        h = layers.LayerNormalization(epsilon=1e-6)(res)
        h = layers.Conv1D(filters=4, kernel_size=1, activation="relu")(h)
        x = layers.Conv1D(filters=1, kernel_size=1)(h) + res
    x = layers.GlobalAveragePooling1D()(x)
    outputs = layers.Dense(2, activation="softmax")(layers.Dense(8, activation="relu")(x))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["sparse_categorical_accuracy"])
    xs = rng.normal(size=(128, 24, 1)).astype("float32")
    d = zoo.diagnose(model, (xs, (xs.mean((1, 2)) > 0).astype("int64")), batches=2)
    norm = _finding(d, "norm_size1")
    assert norm.layer == "layer_normalization" and "normalize over 1 value (axis -1 of the input has size 1)" in norm.text
    assert "exactly 0 in the 12 kernels after layer_normalization" in norm.text
    vanishing = _finding(d, "vanishing_depth")
    assert vanishing.cause == "layer_normalization: normalization over one value"
    assert _kinds(d).index("norm_size1") < _kinds(d).index("vanishing_depth")


def test_a_relu_layer_dead_on_every_example_is_the_cause_of_the_zero_gradients(rng):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu", name="dense"),
                              keras.layers.Dense(32, activation="relu", name="collapsed"), keras.layers.Dense(3)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.get_layer("collapsed").bias.assign(np.full(32, -100.0, np.float32))  # after a too-large step
    x, y = rng.normal(size=(128, 16)).astype("float32"), rng.integers(0, 3, 128)
    d = zoo.diagnose(model, (x, y), batches=2)
    dead = _finding(d, "dead_layer")
    assert dead.layer == "collapsed" and "exactly 0 in the 2 kernels up to it: dense, collapsed" in dead.text
    assert _finding(d, "vanishing_scale").cause == "collapsed: a layer dead on every example"
    assert "dead" not in _kinds(d)  # the partial-dead finding is not repeated


def test_closed_lstm_forget_gates_are_named(rng):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((30, 2)), keras.layers.LSTM(8, return_sequences=True, name="memory"),
                              keras.layers.LSTM(4), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    bias = model.get_layer("memory").cell.bias.numpy()
    bias[8:16] = -10.0  # Keras' gate order i, f, c, o: the forget gates shut
    model.get_layer("memory").cell.bias.assign(bias)
    x = rng.normal(size=(96, 30, 2)).astype("float32")
    d = zoo.diagnose(model, (x, x[:, :3, 0].mean(1, keepdims=True)), batches=2)
    f = _finding(d, "forget_closed")
    assert f.layer == "memory" and "memory: mean forget gate 4." in f.text and "e-05 < 0.1" in f.text  # sigmoid(-10)
    assert all(v.cause.startswith("memory") for v in d.problems if v.kind == "vanishing_time")


def test_a_relu_lstm_on_raw_inputs_explodes_across_layers_and_through_time_and_gets_clipping(rng):
    """The issue's 3-layer ReLU LSTM on inputs of std 10, its recurrent weights grown 5x by training."""
    keras.utils.set_random_seed(0)
    x = (10 * rng.normal(size=(128, 20, 3))).astype("float32")
    model = keras.Sequential([keras.Input((20, 3))] + [keras.layers.LSTM(16, activation="relu", return_sequences=i < 2,
                                                                          name=f"lstm{i}") for i in range(3)]
                             + [keras.layers.Dense(1)])
    model.compile("adam", "mse")
    for layer in model.layers[:3]:
        layer.cell.recurrent_kernel.assign(layer.cell.recurrent_kernel * 5.0)
    d = zoo.diagnose(model, (x, x[:, -5:, 0].sum(1, keepdims=True)), batches=2)
    assert {"exploding_depth", "exploding_time", "exploding_scale", "input_scale", "target_scale"} <= set(_kinds(d))
    through_time = _finding(d, "exploding_time")
    assert "lstm0: ‖∂L/∂x_0‖ / ‖∂L/∂x_19‖ = " in through_time.text and through_time.layer == "lstm0"
    assert _studies(through_time)["clipping"] == "reproduced"
    assert _studies(_finding(d, "exploding_depth"))["clipping"] == "reproduced"  # a recurrent net exploding
    assert "no reproduced study speaks" not in d.markdown()
    assert _finding(d, "exploding_depth").cause.startswith("unscaled targets")


def test_vanishing_through_time_in_a_tanh_rnn(rng):
    keras.utils.set_random_seed(0)
    x = rng.normal(size=(64, 100, 1)).astype("float32")
    model = keras.Sequential([keras.Input((100, 1)), keras.layers.SimpleRNN(16, name="simple_rnn"), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    d = zoo.diagnose(model, (x, x[:, :5, 0].mean(1, keepdims=True)), batches=1)
    f = _finding(d, "vanishing_time")
    assert "simple_rnn: ‖∂L/∂x_0‖ / ‖∂L/∂x_99‖ = " in f.text
    assert _studies(f) == {"gated_init": "inconclusive", "gated_cells": "not reproduced"}  # "not shown"
    assert "not shown: study `gated_init` is inconclusive" in d.markdown()


def test_every_gradient_tiny_next_to_its_weights_gets_the_init_advice(rng):
    keras.utils.set_random_seed(0)
    tiny = keras.initializers.RandomNormal(0, 0.01)
    model = keras.Sequential([keras.Input((16,))] + [keras.layers.Dense(32, activation="relu", kernel_initializer=tiny)
                                                     for _ in range(8)] + [keras.layers.Dense(3, kernel_initializer=tiny)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    d = zoo.diagnose(model, (rng.normal(size=(128, 16)).astype("float32"), rng.integers(0, 3, 128)), batches=2)
    f = _finding(d, "vanishing_scale")
    assert "every layer's gradient is below 1e-05× its weight norm" in f.text
    assert _studies(f) == {"init_depth": "reproduced"}


def test_unscaled_inputs_and_targets_are_named_with_their_numbers_and_effect(rng):
    """The issue's sigmoid->ELU MLP fitting y = x**4 with x in [-100, 100)."""
    keras.utils.set_random_seed(0)
    x = rng.uniform(-100, 100, size=(512, 1)).astype("float32")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(32, activation="sigmoid", name="dense"),
                              keras.layers.Dense(32, activation="elu", name="dense_1"), keras.layers.Dense(1, name="dense_2")])
    model.compile("adam", "mse")
    d = zoo.diagnose(model, (x, x ** 4))
    targets, inputs = _finding(d, "target_scale"), _finding(d, "input_scale")
    assert "the model outputs RMS" in targets.text and "against the targets' " in targets.text
    assert _studies(targets) == {"target_scaling": "reproduced"}
    mean, std = float(x.astype(np.float64).mean()), float(x.astype(np.float64).std())  # numpy, in float64
    assert (f"x[..., 0]: mean {mean:.3g}, std {std:.3g}, range {x.min():.3g} … {x.max():.3g} "
            f"(RMS {math.hypot(mean, std):.3g})") in inputs.text
    assert "the first activation layer, dense (sigmoid), has " in inputs.text
    assert _studies(inputs) == {"input_scaling": "not reproduced"}
    assert _finding(d, "exploding_scale").cause.startswith("unscaled targets")
    report = d.markdown()
    assert "**standardize the regression targets" in report and "not shown: study `input_scaling` is not reproduced" in report
    assert "| x | 0 | " in report and "| y | 0 | " in report  # the data table
    scaled = zoo.diagnose(model, (x / 100, (x ** 4 - (x ** 4).mean()) / (x ** 4).std()))
    assert not {"target_scale", "input_scale", "exploding_scale"} & set(_kinds(scaled))


def test_a_model_that_normalizes_its_input_itself_or_embeds_it_gets_no_input_finding(rng):
    keras.utils.set_random_seed(0)
    x = rng.uniform(-100, 100, size=(256, 3)).astype("float32")
    norm = keras.layers.Normalization()
    norm.adapt(x)
    model = keras.Sequential([keras.Input((3,)), norm, keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    d = zoo.diagnose(model, (x, x[:, :1] / 100), batches=2)
    assert "input_scale" not in _kinds(d)
    ids = rng.integers(0, 1000, size=(256, 10)).astype("float32")  # token ids given as floats: indices, not magnitudes
    text = keras.Sequential([keras.Input((10,)), keras.layers.Embedding(1000, 8), keras.layers.GlobalAveragePooling1D(),
                             keras.layers.Dense(2)])
    text.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    d = zoo.diagnose(text, (ids, rng.integers(0, 2, 256)), batches=2)
    assert "input_scale" not in _kinds(d) and max(r["rms"] for r in d.inputs) > 100


def test_saturated_and_partly_dead_layers(rng):
    keras.utils.set_random_seed(0)
    x = (30 * rng.normal(size=(128, 16))).astype("float32")
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="tanh", name="dense"),
                              keras.layers.Dense(64, activation="relu", bias_initializer=keras.initializers.Constant(-2.0),
                                                 name="dense_1"), keras.layers.Dense(3)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    d = zoo.diagnose(model, (x, rng.integers(0, 3, 128)), batches=2)
    saturated, dead = _finding(d, "saturated"), _finding(d, "dead")
    assert saturated.layer == "dense" and saturated.cause.startswith("unscaled inputs")
    assert dead.layer == "dense_1" and "of its units are 0 on every example of a batch" in dead.text
    kinds = _kinds(d)
    assert kinds.index("input_scale") < kinds.index("saturated") < kinds.index("dead")  # by severity


def test_the_report_reads_top_down_and_every_finding_is_a_tag(rng):
    keras.utils.set_random_seed(0)
    x = rng.uniform(-100, 100, size=(256, 1)).astype("float32")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(16, activation="sigmoid"), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    d = zoo.diagnose(model, (x, x ** 4), batches=2)
    report = d.markdown()
    order = [report.index(h) for h in ("# Diagnosis of", "**Verdict:", "## Findings, most severe first",
                                       "## What the zoo's reproduced studies support", "## Inputs and targets",
                                       "## Gradient norm per layer")]
    assert order == sorted(order)
    tags = d.tags()
    assert tags["zoo.findings"] == ", ".join(dict.fromkeys(f.kind for f in d.problems))
    for f in d.problems:
        assert f.text in tags[f"zoo.finding.{f.kind}"]


# --- the same rule in zoo.compare and zoo-train ---------------------------------------------------
def test_compare_reads_progress_with_each_models_loss_and_says_ill_posed(rng):
    x = rng.normal(size=(256, 8)).astype("float32")
    binary = (x[:, 0] > 0).astype("float32")
    a, b = _binary_classifier(), _binary_classifier()
    c = zoo.compare(a, b, data=(x, binary, "classification"), batches=2)  # float labels: no crash
    assert c.a.progress[0] in ("learning", "stalled", "unstable") and c.a.ill_posed is None
    c = zoo.compare(a, b, data=(x, rng.integers(0, 10, 256).astype("float32"), "classification"), batches=2)
    for p in (c.a, c.b):
        assert p.progress[0] == "ill-posed" and p.headline.endswith("· ill-posed")
        assert "progress ill-posed (binary cross-entropy read targets outside [0, 1]: 0 … 9)" in p.describe()


def test_zoo_train_says_ill_posed_for_a_loss_below_its_floor():
    """zoo-train's own losses (sparse cross-entropy from logits, MSE) read what data=arrays gives
    them by construction; a training loss below the floor is still refused as learning."""
    from types import SimpleNamespace

    from zoo.records.summary import description
    from zoo.records.verdict import Verdict
    from zoo.training.run import _ill_posed, _progress_label
    from zoo.training.step import Head

    head = Head("head", "sparse_categorical_crossentropy", True, 3, None, "accuracy")
    trainee = SimpleNamespace(step=SimpleNamespace(heads=[head]),
                              data=SimpleNamespace(y_train=np.array([0, 1, 2, 1]), num_outputs=3))
    final = {"final/train_loss": -0.5, "baseline/train_loss": 1.04, "progress/train_loss_ratio": -0.48}
    reason = _ill_posed(trainee, final)
    assert reason == "sparse categorical cross-entropy fell to -0.5, below its floor 0"
    # below 0 it is ill-posed without the reason too (zoo.records.summary.progress); the reason says why
    assert _progress_label(final) == "ill-posed" and _progress_label(final, reason) == "ill-posed"
    assert f"progress: ill-posed ({reason})" in description(Verdict("healthy", "fine"), "ill-posed",
                                                            final["progress/train_loss_ratio"], reason)
    assert _ill_posed(trainee, {**final, "final/train_loss": 0.3}) is None
    trainee.data.y_train = np.array([0, 1, 5])  # a label the head has no class for
    assert "outside [0, 3): 0 … 5" in _ill_posed(trainee, {**final, "final/train_loss": 0.3})
