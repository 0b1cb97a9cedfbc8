"""The instruments measure without changing training, and measure the right thing: the data
objective's gradient, at initialization, paired across variants, evaluated correctly with
batch norm."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from conftest import make_step, probe_once, step_once
from zoo.training.evaluation import PopulationStatistics, evaluate
from zoo.models import blocks
from zoo.models.roles import roles_of
from zoo.records.recorder import Recorder
from zoo.records.summary import summarize
from zoo.training.step import LOSSES
from zoo.tracking.memory import MemorySink

RNG = np.random.default_rng(0)
X_FLAT = RNG.normal(size=(64, 12)).astype(np.float32)
X_IMAGE = RNG.normal(size=(64, 8, 8, 1)).astype(np.float32)
Y = (np.arange(64) % 4).astype(np.int32)

CASES = {
    "mlp": (lambda: zoo.build_model("mlp", (12,), 4, depth=5, width=16, activation="tanh"), X_FLAT, None),
    "mlp_clipnorm_l2": (lambda: zoo.build_model("mlp", (12,), 4, depth=5, width=16, regularizer="l2",
                                                reg_strength=1e-2), X_FLAT, ("global_clipnorm", 0.5)),
    "mlp_batchnorm_clipvalue": (lambda: zoo.build_model("mlp", (12,), 4, depth=5, width=16, norm="batch"),
                                X_FLAT, ("clipvalue", 0.05)),
    "inception_aux": (lambda: zoo.build_model("inception", (8, 8, 1), 4, depth=3, width=2, aux_heads=2),
                      X_IMAGE, ("clipnorm", 1.0)),
}


def _clip(grads, clipping):
    if clipping is None:
        return grads
    kind, c = clipping
    if kind == "clipnorm":
        return [tf.clip_by_norm(g, c) for g in grads]
    if kind == "global_clipnorm":
        return tf.clip_by_global_norm(grads, c)[0]
    return [tf.clip_by_value(g, -c, c) for g in grads]


@pytest.mark.parametrize("case", CASES)
def test_instrumented_step_trains_exactly_like_a_bare_gradient_tape_step(case):
    """Same weights, same batches, 20 steps (instruments on every 5th): the same weights, to
    1e-6 relative, as a plain GradientTape step over the model's whole objective."""
    build, x, clipping = CASES[case]
    keras.utils.set_random_seed(1)
    ours = build()
    keras.utils.set_random_seed(1)
    plain = build()
    for a, b in zip(ours.weights, plain.weights):  # per-layer seeds: the same model twice
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    step = make_step(ours, x[:16], Y[:16], "classification", lr=0.05, optimizer="sgd", clipping=clipping)
    optimizer = keras.optimizers.SGD(learning_rate=0.05)
    loss_fn, roles = LOSSES["classification"](), roles_of(plain)

    @tf.function
    def bare(xb, yb):
        with tf.GradientTape() as tape:
            out = plain(xb, training=True)
            out = out if isinstance(out, (list, tuple)) else [out]
            loss = loss_fn(yb, out[0]) + roles.aux_weight * tf.add_n([0.0] + [loss_fn(yb, o) for o in out[1:]])
            loss += tf.add_n([0.0] + plain.losses)
        grads = tape.gradient(loss, plain.trainable_variables)
        optimizer.apply(_clip(grads, clipping), plain.trainable_variables)

    for i in range(20):
        xb, yb = x[16 * (i % 4):16 * (i % 4 + 1)], Y[16 * (i % 4):16 * (i % 4 + 1)]
        (probe_once if i % 5 == 0 else step_once)(step, xb, yb)
        bare(tf.constant(xb), tf.constant(yb))
    for a, b in zip(ours.weights, plain.weights):  # trainable and batch-norm statistics alike
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7, err_msg=a.path)


def test_monitored_gradient_is_the_data_loss_gradient_and_the_penalty_is_kept_apart():
    """L1 on a deep sigmoid net: the penalty's own gradient is sign(W)*strength in every layer,
    which would hide the data gradient's vanishing. grad_norm must be the data loss's alone,
    grad_norm_total the data loss's plus the penalty's, each checked against plain Keras."""
    keras.utils.set_random_seed(0)
    model = zoo.build_model("mlp", (12,), 4, depth=10, width=16, activation="sigmoid",
                            regularizer="l1", reg_strength=1e-3)
    x, y = X_FLAT[:32], Y[:32]
    loss_fn = LOSSES["classification"]()
    with tf.GradientTape(persistent=True) as tape:
        data = loss_fn(y, model(x, training=True))
        total = data + tf.add_n(model.losses)
    kernels = [v for v in model.trainable_variables if v.path.endswith("kernel")]
    want_data = [np.linalg.norm(g) for g in tape.gradient(data, kernels)]
    want_total = [np.linalg.norm(g) for g in tape.gradient(total, kernels)]
    u = step_once(make_step(model, x, y, "classification", lr=1e-12), x, y)
    np.testing.assert_allclose(u["grad_norm"], want_data, rtol=1e-4)
    np.testing.assert_allclose(u["grad_norm_total"], want_total, rtol=1e-4)
    assert u["loss"] == pytest.approx(float(data), rel=1e-5)  # the logged loss is the data loss
    assert u["penalty"] == pytest.approx(float(total - data), rel=1e-5)
    # the point of it: the data gradient's flow vanishes, the total's does not look like it
    assert u["grad_norm"][0] / u["grad_norm"][-1] < 1e-3 < u["grad_norm_total"][0] / u["grad_norm_total"][-1]


def _initial(model) -> dict[str, np.ndarray]:
    return {w.path: w.numpy() for w in model.weights}


@pytest.mark.parametrize("name, shape, base, variant", [
    ("inception", (8, 8, 1), {"depth": 6, "width": 2, "aux_heads": 0}, {"aux_heads": 2}),
    ("resnet", (8, 8, 1), {"depth": 8, "width": 4, "shortcut": "A"}, {"shortcut": "B"}),
    ("mlp", (12,), {"depth": 6, "width": 16, "norm": "none"}, {"norm": "batch"}),
    ("resnet", (8, 8, 1), {"depth": 8, "width": 4, "norm": "batch"}, {"norm": "none"}),
])
def test_a_knob_that_adds_layers_leaves_every_other_layer_initialized_the_same(name, shape, base, variant):
    keras.utils.set_random_seed(7)
    a = _initial(zoo.build_model(name, shape, 4, **base))
    keras.utils.set_random_seed(7)
    b = _initial(zoo.build_model(name, shape, 4, **{**base, **variant}))
    shared = sorted(set(a) & set(b))
    kernels = [p for p in shared if p.endswith("kernel")]
    assert len(kernels) >= 4
    for path in kernels:
        np.testing.assert_array_equal(a[path], b[path], err_msg=path)
    keras.utils.set_random_seed(8)  # and the seed still matters
    c = _initial(zoo.build_model(name, shape, 4, **base))
    assert not np.array_equal(a[kernels[0]], c[kernels[0]])


def test_population_statistics_are_the_training_splits_batch_statistics():
    """Ioffe & Szegedy 2015, Algorithm 2: E[x] = mean of batch means, Var[x] = m/(m-1) times the
    mean of batch variances, over full training batches of size m."""
    keras.utils.set_random_seed(0)
    model = zoo.build_model("mlp", (12,), 4, depth=3, width=8, norm="batch")
    PopulationStatistics(model, batch_size=16).refresh(X_FLAT)
    bn = model.get_layer("block01_norm")
    dense = keras.Model(model.inputs, model.get_layer("block01_dense").output)
    h = dense(X_FLAT).numpy().reshape(4, 16, 8)
    np.testing.assert_allclose(bn.moving_mean.numpy(), h.mean(axis=1).mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), (h.var(axis=1) * 16 / 15).mean(axis=0), rtol=1e-4)


def test_batch_norm_net_evaluates_as_it_trains_after_few_steps():
    """After 15 steps the moving averages (momentum 0.99) are still mostly their initial values;
    with population statistics, inference on the training split agrees with the training-mode
    forward pass over the whole split (one batch): same predictions, nearly the same loss."""
    keras.utils.set_random_seed(0)
    data = zoo.load_dataset("digits")
    model = zoo.build_model("mlp", data.input_shape, 10, depth=10, width=32, activation="sigmoid",
                            norm="batch")
    step = make_step(model, data.x_train[:64], data.y_train[:64], "classification", lr=0.5)
    for i in range(15):
        step_once(step, data.x_train[64 * i:64 * (i + 1)], data.y_train[64 * i:64 * (i + 1)])
    x, y = data.x_train, data.y_train
    stale_loss, _ = evaluate(step, x, y)
    batch_stats = LOSSES["classification"]()(y, model(x, training=True)).numpy()
    PopulationStatistics(model, batch_size=64).refresh(x)
    loss, _ = evaluate(step, x, y)
    assert abs(loss - batch_stats) < 0.05 * batch_stats
    assert abs(stale_loss - batch_stats) > 3 * abs(loss - batch_stats)  # what the fix fixes


def test_init_numbers_are_step_one_and_the_last_partial_window_reaches_the_sink():
    keras.utils.set_random_seed(0)
    model = zoo.build_model("mlp", (12,), 4, depth=4, width=8, activation="sigmoid")
    step = make_step(model, X_FLAT[:16], Y[:16], "classification", lr=0.5)
    sink = MemorySink()
    recorder = Recorder(step.meter, sink, log_every=10)
    for i in range(23):
        xb, yb = X_FLAT[16 * (i % 4):16 * (i % 4 + 1)], Y[16 * (i % 4):16 * (i % 4 + 1)]
        if i % 10 == 0:
            recorder.on_step(*(p.numpy() for p in step.train_with_probes(tf.constant(xb), tf.constant(yb))))
        else:
            recorder.on_step(step.train(tf.constant(xb), tf.constant(yb)).numpy())
    recorder.flush()
    stats = recorder.stats()
    assert [s for s, _ in sink.metrics["2 learning/loss"]] == [10, 20, 23]
    assert sink.metrics["2 learning/loss"][-1][1] == pytest.approx(float(np.mean(stats.loss[20:23])), rel=1e-6)
    # MLflow's charts get log10 of each window's last norms: the per-layer series and the story
    for k, layer in enumerate(stats.layers):
        assert [v for _, v in sink.metrics[f"log10_grad_norm/{layer}"]] == pytest.approx(
            np.log10(stats.grad_norm[[9, 19, 22], k]), rel=1e-12)
    first, last = stats.grad_norm[[9, 19, 22], 0], stats.grad_norm[[9, 19, 22], -1]
    assert [v for _, v in sink.metrics["1 gradient flow/log10_first_layer"]] == pytest.approx(np.log10(first), rel=1e-12)
    assert [v for _, v in sink.metrics["1 gradient flow/log10_last_layer"]] == pytest.approx(np.log10(last), rel=1e-12)
    assert [v for _, v in sink.metrics["1 gradient flow/log10_flow"]] == pytest.approx(np.log10(first / last), rel=1e-9)
    summary = summarize(stats)
    assert summary["summary/grad_first_init"] == pytest.approx(float(stats.grad_norm[0, 0]))
    assert summary["summary/grad_first_start"] == pytest.approx(float(np.median(stats.grad_norm[:5, 0])))
    assert summary["summary/grad_first_end"] == pytest.approx(float(np.median(stats.grad_norm[15:, 0])))
    # the activation statistics that apply reach the sink, at epoch ends, by the builder's names
    assert "saturated_fraction/block01_act" not in sink.metrics
    recorder.on_epoch_end(1.0, 0.5)
    assert 0.0 <= sink.metrics["saturated_fraction/block01_act"][-1][1] <= 1.0
    assert "dead_fraction/block01_act" not in sink.metrics  # sigmoid units do not die


@pytest.mark.parametrize("activation", blocks.ACTIVATIONS.names())
def test_every_activation_is_monitored_with_the_statistics_that_apply_to_it(activation):
    keras.utils.set_random_seed(0)
    model = zoo.build_model("mlp", (12,), 4, depth=3, width=8, activation=activation,
                            init=blocks.ACTIVATIONS.get(activation).tags["init"])
    assert roles_of(model).activations == (("block01_act", activation), ("block02_act", activation))
    step = make_step(model, X_FLAT[:16], Y[:16], "classification")
    _, probed = probe_once(step, X_FLAT[:16], Y[:16])
    mean, std, saturated, dead = probed["act_stats"][0]
    assert np.isfinite(mean) and np.isfinite(std)
    assert np.isfinite(saturated) == (activation in ("sigmoid", "tanh"))
    assert np.isfinite(dead) == (activation == "relu")  # only a ReLU unit passes no gradient at all


def test_simple_rnn_activation_is_monitored_too():
    model = zoo.build_model("simple_rnn", (10, 1), 1, width=8, activation="tanh")
    assert roles_of(model).activations == (("rnn1", "tanh"),)
    x, y = RNG.normal(size=(8, 10, 1)).astype(np.float32), RNG.normal(size=(8, 1)).astype(np.float32)
    _, probed = probe_once(make_step(model, x, y, "regression"), x, y)
    assert 0.0 <= probed["act_stats"][0, 2] <= 1.0  # tanh's saturated fraction


def test_a_raw_statistics_file_that_is_not_one_is_refused_naming_it(tmp_path):
    from zoo.records.stats import RunStats, StatsFileError

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not an npz at all")
    with pytest.raises(StatsFileError, match=f"{garbage}: not a gradzoo statistics file"):
        RunStats.load(garbage)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, step=np.array([object()], dtype=object))
    with pytest.raises(StatsFileError, match=f"{pickled}: missing arrays"):
        RunStats.load(pickled)
    keras.utils.set_random_seed(0)
    model = zoo.build_model("mlp", (12,), 4, depth=3, width=8)
    step = make_step(model, X_FLAT[:16], Y[:16], "classification")
    recorder = Recorder(step.meter, MemorySink(), 10)
    recorder.on_step(*(p.numpy() for p in step.train_with_probes(tf.constant(X_FLAT[:16]), tf.constant(Y[:16]))))
    good = tmp_path / "good.npz"
    recorder.stats().save(good)
    assert RunStats.load(good).grad_norm.shape == (1, 3)
    arrays = dict(np.load(good))
    arrays["grad_norm"] = arrays["grad_norm"][:, :2]  # one layer short
    np.savez(tmp_path / "short.npz", **arrays)
    with pytest.raises(StatsFileError, match=r"grad_norm has shape \(1, 2\), expected \(1, 3\)"):
        RunStats.load(tmp_path / "short.npz")
    arrays = dict(np.load(good))
    arrays["loss"] = arrays["loss"].astype(str)
    np.savez(tmp_path / "text.npz", **arrays)
    with pytest.raises(StatsFileError, match="loss has dtype <U.*, expected float"):
        RunStats.load(tmp_path / "text.npz")
