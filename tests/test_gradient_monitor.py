"""zoo.GradientMonitor on user-style Keras models: the numbers a bare GradientTape gives on the
same weights and batch, training exactly as without the monitor, every model kind it promises,
MLflow beside autolog, and the custom-loop call."""
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo

RNG = np.random.default_rng(0)
N, BATCH = 64, 16


def data(shape, classes=3, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, *shape)).astype(dtype) if dtype == "float32" else rng.integers(0, 50, size=(N, *shape))
    return x, rng.integers(0, classes, N)


def sparse_ce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(12, activation="tanh")
        self.out = keras.layers.Dense(3)

    def call(self, x, training=False):
        return self.out(self.hidden(x))


def mlp():
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="sigmoid"),
                             keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])


def cnn():
    i = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(i)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Conv2D(4, 3, strides=2, activation="tanh")(h)
    return keras.Model(i, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h)))


def nested():
    inner = keras.Sequential([keras.Input((8,)), keras.layers.Dense(10, activation="tanh")], name="inner")
    i = keras.Input((8,))
    return keras.Model(i, keras.layers.Dense(3)(inner(i)))


def subclassed():
    m = Subclassed()
    m(np.zeros((1, 8), "float32"))
    return m


def recurrent(cell, sequences):
    def build():
        return keras.Sequential([keras.Input((12, 2)), cell(6, return_sequences=sequences),
                                 *([keras.layers.GlobalAveragePooling1D()] if sequences else []), keras.layers.Dense(3)])
    return build


def stacked_bidirectional():
    return keras.Sequential([keras.Input((12, 2)), keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True)),
                             keras.layers.GRU(5), keras.layers.Dense(3)])


def embedding_lstm():
    return keras.Sequential([keras.Input((12,), dtype="int32"), keras.layers.Embedding(50, 4),
                             keras.layers.LSTM(6), keras.layers.Dense(3)])


# name: (builder, input shape, input dtype, kernels, instruments the monitor must have read)
KINDS = {
    "sequential mlp": (mlp, (8,), "float32", 3, {"act_stats"}),
    "functional cnn + batch norm": (cnn, (8, 8, 1), "float32", 3, {"act_stats"}),
    "nested": (nested, (8,), "float32", 2, set()),
    "subclassed": (subclassed, (8,), "float32", 2, set()),
    "simple_rnn sequences": (recurrent(keras.layers.SimpleRNN, True), (12, 2), "float32", 3, {"time_grad"}),
    "lstm last output": (recurrent(keras.layers.LSTM, False), (12, 2), "float32", 3, {"time_grad"}),
    "lstm sequences": (recurrent(keras.layers.LSTM, True), (12, 2), "float32", 3, {"time_grad", "forget_gate"}),
    "gru last output": (recurrent(keras.layers.GRU, False), (12, 2), "float32", 3, {"time_grad"}),
    "bidirectional lstm + gru": (stacked_bidirectional, (12, 2), "float32", 7, {"time_grad"}),
    "embedding + lstm": (embedding_lstm, (12,), "int32", 4, {"time_grad"}),
}


def twins(build):
    """The same model twice, with the same initial weights."""
    keras.utils.set_random_seed(7)
    a = build()
    b = build()
    for v, w in zip(b.weights, a.weights):
        v.assign(w.numpy())
    return a, b


def tape_norms(model, x, y, loss_fn, kernels_at):
    """||dL/dW|| of the data loss for each monitored kernel, training-mode forward, float64 norms."""
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    return np.array([np.sqrt(np.sum(np.square(tf.convert_to_tensor(grads[i]).numpy().astype(np.float64))))
                     for i in kernels_at])


@pytest.mark.parametrize("kind", KINDS)
def test_numbers_equal_a_bare_tape_and_training_is_unchanged(kind):
    """Step 1's per-kernel norms equal a bare GradientTape's on the same weights and batch to
    1e-5; after 20 steps the weights (batch-norm statistics included) equal those of the same
    fit without the monitor to 1e-6."""
    build, shape, dtype, n_kernels, instruments = KINDS[kind]
    x, y = data(shape, dtype=dtype)
    watched, plain = twins(build)
    reference, _ = twins(build)
    for m in (watched, plain):
        m.compile(keras.optimizers.SGD(0.05), sparse_ce())
    monitor = zoo.GradientMonitor(histogram_every=4, verbose=False)
    kernels_at = None
    expected = None
    watched.fit(x, y, batch_size=BATCH, epochs=5, shuffle=False, verbose=0, callbacks=[monitor])
    plain.fit(x, y, batch_size=BATCH, epochs=5, shuffle=False, verbose=0)
    kernels_at = monitor.found.kernel_index
    expected = tape_norms(reference, x[:BATCH], y[:BATCH], sparse_ce(), kernels_at)
    stats = monitor.stats
    assert stats.grad_norm.shape == (20, n_kernels) == (20, len(stats.layers))
    np.testing.assert_allclose(stats.grad_norm[0], expected, rtol=1e-5)
    for a, b in zip(watched.weights, plain.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7, err_msg=a.path)
    assert list(stats.hist_step) == [1, 5, 9, 13, 17]
    read = {"act_stats": stats.act_stats.size, "time_grad": stats.time_grad.size, "forget_gate": stats.forget_gate.size}
    assert {k for k, size in read.items() if size} == instruments, (read, monitor.skipped)
    probed = np.isin(stats.step, stats.hist_step)  # weights and updates are measured on probe steps
    assert np.all(stats.update_ratio[probed] > 0) and np.all(np.isnan(stats.update_ratio[~probed]))
    assert monitor.verdict.label in ("healthy", "vanishing", "exploding")
    if "time_grad" in instruments:
        assert stats.time_grad.shape[-1] == 12 and np.all(stats.time_grad[0, 0] > 0)
    if kind in ("subclassed", "nested"):
        assert monitor.skipped  # named, not silently missing


def test_several_outputs_with_loss_weights_and_sample_weights():
    i = keras.Input((8,))
    h = keras.layers.Dense(10, activation="tanh")(i)
    outs = {"a": keras.layers.Dense(3, name="a")(h), "b": keras.layers.Dense(1, name="b")(h)}
    build = lambda: keras.Model(i, outs) if False else keras.Model(*_two_heads())  # noqa: E731
    watched, plain = twins(build)
    reference, _ = twins(build)
    losses, weights = {"a": sparse_ce(), "b": keras.losses.MeanSquaredError()}, {"a": 1.0, "b": 0.3}
    for m in (watched, plain):
        m.compile(keras.optimizers.SGD(0.05), loss=losses, loss_weights=weights)
    x, y = data((8,))
    targets = {"a": y, "b": RNG.normal(size=(N, 1)).astype("float32")}
    sw = RNG.uniform(0.5, 2.0, size=N).astype("float32")
    monitor = zoo.GradientMonitor(verbose=False)
    watched.fit(x, targets, sample_weight=sw, batch_size=BATCH, epochs=2, shuffle=False, verbose=0, callbacks=[monitor])
    plain.fit(x, targets, sample_weight=sw, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(watched.weights, plain.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    with tf.GradientTape() as tape:
        out = reference(x[:BATCH], training=True)
        loss = (losses["a"](targets["a"][:BATCH], out["a"], sample_weight=sw[:BATCH])
                + 0.3 * losses["b"](targets["b"][:BATCH], out["b"], sample_weight=sw[:BATCH]))
    grads = tape.gradient(loss, reference.trainable_variables)
    expected = [np.linalg.norm(grads[i].numpy().astype(np.float64)) for i in monitor.found.kernel_index]
    np.testing.assert_allclose(monitor.stats.grad_norm[0], expected, rtol=1e-5)


def _two_heads():
    i = keras.Input((8,))
    h = keras.layers.Dense(10, activation="tanh")(i)
    return i, {"a": keras.layers.Dense(3, name="a")(h), "b": keras.layers.Dense(1, name="b")(h)}


def test_the_penalty_gradient_is_kept_apart_from_the_data_gradient():
    """L1 on every kernel of a deep sigmoid net: the monitored gradient is the data loss's (a
    tape of the data loss alone, to 1e-5, where the penalty's own gradient is ~600 times larger),
    the total is the data's plus the penalty's, and training equals plain fit's."""
    def build():
        l1 = keras.regularizers.L1(1e-2)
        return keras.Sequential([keras.Input((8,)), *[keras.layers.Dense(16, activation="sigmoid", kernel_regularizer=l1)
                                                      for _ in range(6)], keras.layers.Dense(3, kernel_regularizer=l1)])
    watched, plain = twins(build)
    reference, _ = twins(build)
    for m in (watched, plain):
        m.compile(keras.optimizers.SGD(0.05), sparse_ce())
    x, y = data((8,))
    monitor = zoo.GradientMonitor(verbose=False)
    watched.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[monitor])
    plain.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    expected = tape_norms(reference, x[:BATCH], y[:BATCH], sparse_ce(), monitor.found.kernel_index)
    stats = monitor.stats
    np.testing.assert_allclose(stats.grad_norm[0], expected, rtol=1e-5)
    assert stats.grad_norm[0, 0] < 1e-2 * stats.grad_norm_total[0, 0]  # the penalty dominates there
    assert stats.penalty[0] > 0
    for a, b in zip(watched.weights, plain.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("options", [dict(jit_compile=True), dict(steps_per_execution=3),
                                     dict(jit_compile=True, steps_per_execution=4)])
def test_compiled_with_xla_or_several_steps_per_execution(options):
    """Every step recorded, in order, the same numbers as the default compilation."""
    x, y = data((8,))
    runs = []
    for compile_options in (options, {}):
        model, _ = twins(mlp)
        model.compile(keras.optimizers.SGD(0.05), sparse_ce(), **compile_options)
        monitor = zoo.GradientMonitor(histogram_every=3, verbose=False)
        model.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0, callbacks=[monitor])
        runs.append(monitor.stats)
    special, default = runs
    assert special.grad_norm.shape == default.grad_norm.shape == (12, 3)
    np.testing.assert_allclose(special.grad_norm, default.grad_norm, rtol=1e-5)
    assert list(special.hist_step) == list(default.hist_step) == [1, 4, 7, 10]


@pytest.mark.parametrize("clip", [dict(clipnorm=0.05), dict(global_clipnorm=0.05), dict(clipvalue=0.001)])
def test_the_optimizers_own_clipping_is_what_the_clipped_norm_reports(clip):
    x, y = data((8,))
    model, _ = twins(mlp)
    model.compile(keras.optimizers.SGD(0.05, **clip), sparse_ce())
    monitor = zoo.GradientMonitor(verbose=False)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[monitor])
    g, c = monitor.stats.grad_norm, monitor.stats.grad_norm_clipped
    if "clipnorm" in clip:
        np.testing.assert_allclose(c, np.minimum(g, 0.05), rtol=1e-5)
    elif "global_clipnorm" in clip:
        # every variable's norm counts in the global norm, so only the ratio is fixed: the same for all
        ratio = c / g
        np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones_like(ratio), rtol=1e-5)
        assert np.all(ratio <= 1 + 1e-6) and np.any(ratio < 1)
    else:
        assert np.all(c <= g) and np.any(c < g)
    probed = monitor.stats.hist_step - 1  # SGD's update is lr times what it received
    np.testing.assert_allclose((monitor.stats.update_ratio * monitor.stats.weight_norm)[probed], 0.05 * c[probed], rtol=1e-4)


def test_mixed_precision_reports_the_unscaled_gradient():
    x, y = data((8,))
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model, reference = twins(mlp)
        model.compile(keras.optimizers.SGD(0.05), sparse_ce())
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        monitor = zoo.GradientMonitor(verbose=False)
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[monitor])
        expected = tape_norms(reference, x[:BATCH], y[:BATCH], sparse_ce(), monitor.found.kernel_index)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    np.testing.assert_allclose(monitor.stats.grad_norm[0], expected, rtol=1e-2)  # float16 activations


def test_records_reach_the_autolog_run_in_a_real_sqlite_store(tmp_path):
    """Beside mlflow.keras.autolog(): the monitor's series, plots, raw file and verdict land in
    the run autolog started (its own names prefixed zoo/, so autolog's loss stays autolog's)."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment("monitor")
    mlflow.keras.autolog(log_models=False)
    try:
        x, y = data((8,))
        model, _ = twins(mlp)
        model.compile(keras.optimizers.Adam(1e-2), sparse_ce(), metrics=["accuracy"])
        monitor = zoo.GradientMonitor(log_every=2, baseline=float(np.log(3)), verbose=False)
        model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[monitor])
    finally:
        mlflow.keras.autolog(disable=True)
    client = mlflow.MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("monitor").experiment_id])
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert "loss" in metrics and "zoo/2 learning/loss" in metrics  # autolog's epoch loss, the monitor's data loss
    history = client.get_metric_history(run.info.run_id, f"zoo/log10_grad_norm/{monitor.stats.layers[0]}")
    assert [m.step for m in history] == [2, 4, 6, 8] and all(-20 < m.value < 3 for m in history)
    assert run.data.tags["zoo.verdict"] == monitor.verdict.label
    assert run.data.tags["zoo.headline"] == monitor.headline and monitor.progress is not None
    artifacts = {a.path for d in ("plots", "stats") for a in client.list_artifacts(run.info.run_id, d)}
    assert {"plots/gradient_flow.png", "plots/gradient_histograms.png", "stats/gradient_stats.npz"} <= artifacts


def test_memory_only_without_mlflow_and_a_figure():
    x, y = data((8,))
    model, _ = twins(mlp)
    model.compile(keras.optimizers.SGD(0.05), sparse_ce())
    monitor = zoo.GradientMonitor(mlflow=False, verbose=False)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[monitor])
    assert monitor.sink is None and monitor.memory.metrics[f"log10_grad_norm/{monitor.stats.layers[0]}"]
    assert monitor.memory.tags["zoo.verdict"] == monitor.verdict.label
    fig = monitor.figure()
    assert fig.axes and "verdict" in fig._suptitle.get_text()


def custom_step(model, monitor, optimizer, loss_fn):
    """A user's own compiled train step with the one monitor call the README shows."""
    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        monitor.observe(grads, model.trainable_variables, loss=loss,
                        apply=lambda: optimizer.apply(grads, model.trainable_variables))

    return step


def test_a_custom_loop_gets_the_same_numbers_with_one_call():
    """monitor.observe(...) inside the user's own compiled step: the same per-step norms as the
    callback in fit on the same model, batches and optimizer."""
    x, y = data((8,))
    looped, fitted = twins(mlp)
    optimizer, loss_fn = keras.optimizers.SGD(0.05), sparse_ce()
    monitor = zoo.GradientMonitor(histogram_every=2, verbose=False)
    monitor.attach(looped)
    step = custom_step(looped, monitor, optimizer, loss_fn)
    for i in range(0, N, BATCH):
        step(tf.constant(x[i:i + BATCH]), tf.constant(y[i:i + BATCH]))
        monitor.collect()
    monitor.finish()
    fitted.compile(keras.optimizers.SGD(0.05), loss_fn)
    reference = zoo.GradientMonitor(histogram_every=2, verbose=False)
    fitted.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[reference])
    for name in ("grad_norm", "loss"):
        np.testing.assert_allclose(getattr(monitor.stats, name), getattr(reference.stats, name), rtol=1e-5, err_msg=name)
    probed = reference.stats.hist_step - 1  # fit measures weights and updates on its probe steps
    for name in ("weight_norm", "update_ratio"):
        np.testing.assert_allclose(getattr(monitor.stats, name)[probed], getattr(reference.stats, name)[probed],
                                   rtol=1e-5, err_msg=name)
    assert list(monitor.stats.hist_step) == [1, 3]
    np.testing.assert_array_equal(monitor.stats.hist_counts, reference.stats.hist_counts)


def test_a_model_it_cannot_instrument_trains_unmonitored():
    class Weird(keras.Model):  # built by fit (the monitor builds it first), then nothing trainable
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(3, trainable=False)

        def call(self, x):
            return self.d(x)

    x, y = data((8,))
    model = Weird()
    model.compile(keras.optimizers.SGD(0.05), sparse_ce())
    monitor = zoo.GradientMonitor(verbose=False)
    with pytest.warns(UserWarning, match="no trainable variables.*training goes on unmonitored"):
        history = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[monitor])
    assert len(history.history["loss"]) == 1 and monitor.stats is None


@pytest.mark.parametrize("bad", [
    dict(histogram_every=0), dict(histogram_every=-3), dict(histogram_every=2.5), dict(histogram_every="10"),
    dict(histogram_every=True), dict(log_every=0), dict(log_every=None), dict(capacity=0), dict(capacity=1e9),
    dict(baseline=0.0), dict(baseline=-1.0), dict(baseline=float("nan")), dict(baseline=float("inf")),
    dict(baseline="2.3"), dict(mlflow="yes"), dict(mlflow=1), dict(mlflow=None), dict(run_id=""),
    dict(run_id=123), dict(tracking_uri=b"sqlite:///x.db"), dict(mlflow=False, run_id="abc"),
    dict(verbose="no"), dict(capacity=10**12), dict(capacity=2**20 + 1), dict(tracking_uri="sqlite:///x.db"),
    dict(variables=3), dict(variables=[]), dict(variables=["dense", ""]), dict(elements=object()),
    dict(optimizer="adam"), dict(optimizer=object()),
])
def test_an_impossible_argument_is_refused_by_name_before_anything_runs(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"GradientMonitor: .*{name}") as err:
        zoo.GradientMonitor(**bad)
    assert "\n" not in str(err.value)


def test_mlflow_true_without_a_run_and_observe_before_attach_are_refused(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    assert mlflow.active_run() is None
    x, y = data((8,))
    model, _ = twins(mlp)
    model.compile(keras.optimizers.SGD(0.05), sparse_ce())
    with pytest.raises(ValueError, match="no active MLflow run"):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[zoo.GradientMonitor(mlflow=True)])
    with pytest.raises(ValueError, match="GradientMonitor: tracking_uri .*mlflow.db does not exist"):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
                  callbacks=[zoo.GradientMonitor(run_id="no-such-run", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")])
    mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").create_experiment("made")  # the store exists now
    with pytest.raises(ValueError, match="GradientMonitor: run_id 'no-such-run' is not a run of"):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
                  callbacks=[zoo.GradientMonitor(run_id="no-such-run", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")])
    with pytest.raises(ValueError, match="tracking_uri 'http://127.0.0.1:1': no MLflow server answers"):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0,
                  callbacks=[zoo.GradientMonitor(run_id="r", tracking_uri="http://127.0.0.1:1")])
    fresh = zoo.GradientMonitor()
    for call in (lambda: fresh.observe([], loss=tf.constant(0.0)), fresh.collect, fresh.finish, fresh.figure):
        with pytest.raises(RuntimeError, match="attach"):
            call()


def test_steps_lost_to_an_overflowing_buffer_keep_their_numbers():
    """A custom loop that collects too late loses the oldest rows (with a warning): the rows it
    keeps are the last steps, numbered as such, and the summary says how many were lost."""
    x, y = data((8,))
    model, _ = twins(mlp)
    optimizer, loss_fn = keras.optimizers.SGD(0.05), sparse_ce()
    monitor = zoo.GradientMonitor(capacity=8, histogram_every=4, mlflow=False, verbose=False)
    monitor.attach(model)
    step = custom_step(model, monitor, optimizer, loss_fn)
    for _ in range(20):
        step(tf.constant(x[:BATCH]), tf.constant(y[:BATCH]))
    with pytest.warns(UserWarning, match="12 steps were overwritten"):
        monitor.collect()
    monitor.finish()
    assert list(monitor.stats.step) == list(range(13, 21))
    assert set(monitor.stats.hist_step) <= set(range(13, 21)) and len(monitor.stats.hist_step)
    assert monitor.summary_line().startswith("20 steps (12 not recorded")


def test_an_epoch_of_unknown_length_is_drained_as_it_goes_and_loses_nothing():
    """A generator's epoch has no known length, so the ring (8 rows here) cannot hold it: the
    batch hook drains it before the next call could overwrite unread rows."""
    x, y = data((8,))
    model, _ = twins(mlp)
    model.compile(keras.optimizers.SGD(0.05), sparse_ce(), steps_per_execution=2)
    batches = tf.data.Dataset.from_generator(
        lambda: ((x[i:i + 4], y[i:i + 4]) for i in range(0, N, 4)),  # 16 steps an epoch
        output_signature=(tf.TensorSpec((None, 8), tf.float32), tf.TensorSpec((None,), y.dtype)))
    assert batches.cardinality() == tf.data.UNKNOWN_CARDINALITY
    monitor = zoo.GradientMonitor(capacity=8, histogram_every=3, mlflow=False, verbose=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="GradientMonitor")  # "steps were overwritten" fails here
        model.fit(batches, epochs=2, shuffle=False, verbose=0, callbacks=[monitor])
    steps = 2 * (N // 4)
    assert monitor.capacity == 8 and list(monitor.stats.step) == list(range(1, steps + 1))
    assert list(monitor.stats.hist_step) == list(range(1, steps + 1, 3))


def test_each_train_function_is_traced_once_and_the_optimizer_is_as_fit_builds_it(monkeypatch):
    """Issue 33: with Keras' own train_step the optimizer is built before fit's first step (as
    Keras' own fit does under a distribution strategy), so the probe-step function, called
    first, is not traced a second time for having created the optimizer's variables; the
    optimizer ends with the variables, in the order and values, of the same fit without the
    monitor."""
    traces = {True: 0, False: 0}
    real = zoo.GradientMonitor._on_apply

    def counted(self, grads, variables, apply):
        traces[self.hooks.trace.probing] += 1  # the hooked apply runs in Python once per trace
        return real(self, grads, variables, apply)

    monkeypatch.setattr(zoo.GradientMonitor, "_on_apply", counted)
    x, y = data((8,))
    watched, plain = twins(mlp)
    for m in (watched, plain):
        m.compile(keras.optimizers.Adam(0.01), sparse_ce())
    watched.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0,
                callbacks=[zoo.GradientMonitor(histogram_every=3, verbose=False)])
    plain.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert traces == {True: 1, False: 1}
    def kinds(optimizer):  # a slot's name holds its model's and layer's names: its kind and shape, in order
        return [(v.path.rsplit("/", 1)[-1].split("_")[-1], tuple(v.shape)) for v in optimizer.variables]

    assert kinds(watched.optimizer) == kinds(plain.optimizer)
    for a, b in zip(watched.optimizer.variables + watched.weights, plain.optimizer.variables + plain.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_help_and_ides_see_the_monitors_arguments():
    """GradientMonitor.__new__ picks the backend's monitor; its arguments stay visible (a
    newcomer's trial: inspect.signature showed (*args, **kwargs))."""
    import inspect

    parameters = inspect.signature(zoo.GradientMonitor).parameters
    assert list(parameters)[:3] == ["histogram_every", "log_every", "baseline"] and "self" not in parameters
    assert "optimizer" in parameters and "sharpness_every" in parameters
