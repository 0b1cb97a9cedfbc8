"""The sharpness instrument (zoo.instruments.sharpness) against a second way: closed-form Hessians,
full Hessians built column by column and numpy.linalg.eigvalsh, Keras' own optimizers on
quadratics for the stability thresholds, and zoo-train with and without it."""
import io

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.instruments.sharpness import (METHODS, SharpnessMeter, inverse_sqrt, preconditioner,
                                   stability_threshold)
from zoo.instruments.sharpness_record import KEYS, SharpnessRecord, beyond_stability
from zoo.records.summary import BAND, sharpness_summary


def flat(tensors) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(t, np.float64)) for t in tensors])


def unflat(vector, like) -> list:
    out, at = [], 0
    for v in like:
        n = int(np.prod(v.shape))
        out.append(tf.constant(vector[at:at + n].reshape(v.shape), v.dtype))
        at += n
    return out


def dense_hessian(meter, batches) -> np.ndarray:
    """H column by column: the meter's Hessian-vector product with each unit vector."""
    n = sum(int(np.prod(v.shape)) for v in meter.variables)
    weighted = [(x, y, tf.constant(1.0 / len(batches), tf.float64)) for x, y in batches]
    return np.stack([flat(meter.hvp(weighted, unflat(np.eye(n)[j], meter.variables))) for j in range(n)], axis=1)


def jacobian_hessian(objective, variables, x, y) -> np.ndarray:
    """H a second way: the Jacobian of the gradient (tf.GradientTape.jacobian), no
    Hessian-vector product involved."""
    return hessian_tensor(objective, variables, x, y).numpy()


def hessian_tensor(objective, variables, x, y):
    """:func:`jacobian_hessian` as a tensor (to be traced once in a tf.function)."""
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = objective(x, y)
        grad = tf.concat([tf.reshape(g, [-1]) for g in inner.gradient(loss, variables)], 0)
    return tf.concat([tf.reshape(outer.jacobian(grad, v), (grad.shape[0], -1)) for v in variables], axis=1)


def float64_mlp(seed=1, inputs=4, hidden=6, outputs=3, activation="tanh"):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((inputs,), dtype="float64"),
                             keras.layers.Dense(hidden, activation=activation, dtype="float64"),
                             keras.layers.Dense(outputs, dtype="float64")])


@pytest.mark.parametrize("method", METHODS)
def test_linear_regression_matches_the_closed_form_of_keras_mse(method):
    """Keras' MSE averages over the batch and the k outputs: L = 1/(n k) Σ (XW + b − Y)², so each
    output's block of the Hessian over (W[:, j], b_j) is 2/(n k)·AᵀA with A = [X 1]."""
    rng = np.random.default_rng(0)
    n, d, k = 50, 5, 3
    x, y = rng.normal(size=(n, d)) + 0.5, rng.normal(size=(n, k))
    model = keras.Sequential([keras.Input((d,), dtype="float64"), keras.layers.Dense(k, dtype="float64")])
    mse = keras.losses.MeanSquaredError(dtype="float64")
    meter = SharpnessMeter(lambda a, b: mse(b, model(a, training=False)), model.trainable_variables,
                           iterations=2000, tolerance=1e-13, method=method)
    reading = meter.read([(x, y)])
    a = np.hstack([x, np.ones((n, 1))])
    closed = np.linalg.eigvalsh(2 / (n * k) * a.T @ a)[-1]
    assert reading.lambda_max == pytest.approx(closed, rel=1e-9)
    assert reading.residual < 1e-6 and not reading.preconditioned
    # read in chunks, the example-weighted mean loss is the same loss
    chunked = SharpnessMeter(meter.objective, model.trainable_variables, iterations=2000, tolerance=1e-13)
    assert chunked.read([(x[:20], y[:20]), (x[20:], y[20:])]).lambda_max == pytest.approx(closed, rel=1e-9)


def test_float32_linear_regression_within_float32_rounding():
    """The default dtypes (float32 model and loss): the same closed form to 1e-5 relative."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(64, 8)).astype(np.float32), rng.normal(size=(64, 2)).astype(np.float32)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    mse = keras.losses.MeanSquaredError()
    meter = SharpnessMeter(lambda a, b: mse(b, model(a, training=False)), model.trainable_variables,
                           iterations=500, tolerance=1e-9)
    a = np.hstack([x, np.ones((64, 1))]).astype(np.float64)
    assert meter.read([(x, y)]).lambda_max == pytest.approx(np.linalg.eigvalsh(2 / 128 * a.T @ a)[-1], rel=1e-5)


def test_small_mlp_matches_its_full_hessian_both_ways():
    """A tanh MLP under cross-entropy in float64: the Hessian built from unit-vector products
    (both methods) equals the Jacobian of the gradient, and power iteration gives its top
    eigenvalue (numpy.linalg.eigvalsh) to 1e-4 relative (measured: ~1e-12)."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(40, 4)), rng.integers(0, 3, size=40)
    model = float64_mlp()
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")
    objective = lambda a, b: ce(b, model(a, training=False))  # noqa: E731
    reference = jacobian_hessian(objective, model.trainable_variables, tf.constant(x), tf.constant(y))
    top = np.linalg.eigvalsh((reference + reference.T) / 2)[-1]
    for method in METHODS:
        meter = SharpnessMeter(objective, model.trainable_variables, iterations=3000, tolerance=1e-12, method=method)
        columns = dense_hessian(meter, [(tf.constant(x), tf.constant(y))])
        assert np.max(np.abs(columns - reference)) < 1e-10 * np.max(np.abs(reference))
        reading = meter.read([(x, y)])
        assert abs(reading.lambda_max - top) / top < 1e-4, (method, reading, top)


def test_the_largest_eigenvalue_not_the_largest_in_size():
    """H = diag(-5, 1, 2): power iteration alone converges to -5; the meter's second, shifted
    pass gives λ_max = 2."""
    w = tf.Variable(tf.constant([0.3, -0.2, 0.1], tf.float64))
    h = tf.constant([-5.0, 1.0, 2.0], tf.float64)
    meter = SharpnessMeter(lambda x, y: 0.5 * tf.reduce_sum(h * w * w), [w], iterations=500, tolerance=1e-12)
    reading = meter.read([(tf.zeros((1, 1)), tf.zeros((1, 1)))])
    assert reading.lambda_max == pytest.approx(2.0, rel=1e-8)


def test_a_block_finds_a_top_eigenvalue_that_was_the_second_before():
    """Between two readings the Hessian turns from diag(3, 2, 1, 0.5) to diag(2.5, 3.2, 1, 0.5):
    the old top eigenvector is still an eigenvector, of 2.5, and a warm start from it alone stays
    there (plain power iteration, block 1); a block of 2 tracks the old second one and finds 3.2."""
    w = tf.Variable(tf.constant([0.3, -0.2, 0.1, 0.4], tf.float64))
    h = tf.Variable(tf.constant([3.0, 2.0, 1.0, 0.5], tf.float64))
    objective = lambda x, y: 0.5 * tf.reduce_sum(h * w * w)  # noqa: E731
    batch = [(tf.zeros((1, 1)), tf.zeros((1, 1)))]
    found = {}
    for block in (1, 2):
        h.assign([3.0, 2.0, 1.0, 0.5])
        meter = SharpnessMeter(objective, [w], block=block, iterations=200, tolerance=1e-12)
        assert meter.read(batch).lambda_max == pytest.approx(3.0, rel=1e-9)
        h.assign([2.5, 3.2, 1.0, 0.5])
        found[block] = meter.read(batch).lambda_max
    assert found[1] == pytest.approx(2.5, rel=1e-6)  # the limitation, shown
    assert found[2] == pytest.approx(3.2, rel=1e-9)


def test_warm_start_reaches_the_cold_start_value_in_fewer_products():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(64, 4)), rng.integers(0, 3, size=64)
    model = float64_mlp(seed=4, hidden=16)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")
    objective = lambda a, b: ce(b, model(a, training=False))  # noqa: E731
    warm = SharpnessMeter(objective, model.trainable_variables, iterations=200, tolerance=1e-6)
    first = warm.read([(x, y)])
    opt = keras.optimizers.SGD(0.05)
    for _ in range(5):  # the weights move: the Hessian is another one
        with tf.GradientTape() as tape:
            loss = objective(x, y)
        opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    again = warm.read([(x, y)])
    cold = SharpnessMeter(objective, model.trainable_variables, iterations=200, tolerance=1e-6, seed=9).read([(x, y)])
    assert again.lambda_max == pytest.approx(cold.lambda_max, rel=1e-4)
    assert again.lambda_max != pytest.approx(first.lambda_max, rel=1e-4)  # it did move
    assert again.iterations < cold.iterations


@pytest.mark.parametrize("kind", ["adam", "rmsprop"])
def test_preconditioned_sharpness_matches_the_explicit_matrix(kind):
    """After a few updates: P from the optimizer's variables reproduces Keras' next update
    (Adam: Δw = −η·m̂/P; RMSprop: Δw = −η·g/P), and the meter's reading is the top eigenvalue of
    the explicit P^-1/2 H P^-1/2."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(32, 4)), rng.integers(0, 3, size=32)
    model = float64_mlp(seed=6)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")
    objective = lambda a, b: ce(b, model(a, training=False))  # noqa: E731
    variables = model.trainable_variables
    opt = keras.optimizers.Adam(0.01) if kind == "adam" else keras.optimizers.RMSprop(0.01)

    def grads():
        with tf.GradientTape() as tape:
            loss = objective(x, y)
        return tape.gradient(loss, variables)

    for _ in range(4):
        opt.apply(grads(), variables)
    # P of the latest update, checked by making one more and recomputing it with that P
    before, g = [v.numpy() for v in variables], grads()
    opt.apply(g, variables)
    p = preconditioner(opt, variables)
    t = int(opt.iterations)
    lr, beta_1 = float(np.float32(0.01)), float(np.float32(0.9))  # Keras holds both in float32
    for var, old, gi, pi in zip(variables, before, g, p):
        if kind == "adam":
            m = np.asarray([s for s in opt.variables if s.name == var.path.replace("/", "_") + "_momentum"][0])
            step = lr * (m / (1 - beta_1 ** t)) / pi.numpy()
        else:
            step = lr * gi.numpy() / pi.numpy()
        np.testing.assert_allclose(old - var.numpy(), step, rtol=1e-9)  # float64 w_old - w_new: ~1e-11
    meter = SharpnessMeter(objective, variables, iterations=3000, tolerance=1e-12)
    reading = meter.read_optimizer([(x, y)], opt)
    h = jacobian_hessian(objective, variables, tf.constant(x), tf.constant(y))
    s = flat(inverse_sqrt(p))
    explicit = s[:, None] * h * s[None, :]
    top = np.linalg.eigvalsh((explicit + explicit.T) / 2)[-1]
    assert reading.preconditioned and abs(reading.lambda_max - top) / top < 1e-4


def test_no_preconditioner_before_the_first_update():
    model = float64_mlp()
    opt = keras.optimizers.Adam()
    opt.build(model.trainable_variables)
    assert preconditioner(opt, model.trainable_variables) is None
    meter = SharpnessMeter(lambda a, b: tf.reduce_sum(model(a)), model.trainable_variables)
    assert meter.read_optimizer([(np.zeros((1, 4)), np.zeros(1))], opt) is None


def final_distance(optimizer, curvature: float, steps: int = 400) -> float:
    """|w| after ``steps`` of a Keras optimizer on L = curvature·w²/2 from w = 1."""
    w = keras.Variable(np.array([1.0]), dtype="float64")

    @tf.function
    def train():
        for _ in tf.range(steps):
            optimizer.apply([curvature * w.value], [w])

    train()
    return float(abs(w.numpy()[0]))


@pytest.mark.parametrize("make", [lambda: keras.optimizers.SGD(0.1),
                                  lambda: keras.optimizers.SGD(0.1, momentum=0.9),
                                  lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
                                  lambda: keras.optimizers.SGD(0.1, momentum=0.5, nesterov=True)])
def test_thresholds_are_where_keras_own_sgd_turns_unstable(make):
    """On a 1-D quadratic, Keras' SGD converges at 0.97× the threshold and diverges at 1.03×."""
    threshold = stability_threshold(make())
    assert not threshold.preconditioned
    assert final_distance(make(), 0.97 * threshold.value) < 1.0
    assert final_distance(make(), 1.03 * threshold.value) > 1e3


def test_adam_threshold_is_the_stability_limit_of_preconditioned_ema_momentum():
    """38/η at β₁ = 0.9 (Cohen et al. 2022); and, a second way, the linear recurrence of EMA
    momentum m ← β m + (1 − β) g, w ← w − η m on a quadratic of curvature a (Adam with a frozen
    preconditioner, in its units) converges below (2 + 2β)/((1 − β)η) and diverges above."""
    threshold = stability_threshold(keras.optimizers.Adam(1e-3))
    assert threshold.preconditioned and threshold.value == pytest.approx(38 / 1e-3)
    beta, lr = 0.9, 1e-3

    def distance(a):
        w, m = 1.0, 0.0
        for _ in range(3000):
            m = beta * m + (1 - beta) * a * w
            w -= lr * m
            if abs(w) > 1e6:  # diverged
                break
        return abs(w)

    assert distance(0.97 * threshold.value) < 1.0 < 1e3 < distance(1.03 * threshold.value)
    assert stability_threshold(keras.optimizers.RMSprop(0.01)).value == pytest.approx(200.0)
    assert stability_threshold(keras.optimizers.Adagrad(0.01)) is None


def test_a_model_whose_products_are_not_finite_reads_nan_and_the_next_reading_is_sound():
    """A NaN weight under a tanh layer gives a NaN reading, not an error from the eigensolver
    (a linear model's Hessian would not see it: it does not depend on the weights); once the
    weights are finite again the same meter reads what a fresh one reads."""
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(16, 4)), rng.integers(0, 3, size=16)
    model = float64_mlp(seed=9)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")
    objective = lambda a, b: ce(b, model(a, training=False))  # noqa: E731
    meter = SharpnessMeter(objective, model.trainable_variables, iterations=500, tolerance=1e-12)
    kernel = model.layers[0].kernel
    good = kernel.numpy()
    kernel.assign(np.where(np.arange(good.size).reshape(good.shape) == 0, np.nan, good))
    assert np.isnan(meter.read([(x, y)]).lambda_max)
    kernel.assign(good)
    fresh = SharpnessMeter(objective, model.trainable_variables, iterations=500, tolerance=1e-12)
    assert meter.read([(x, y)]).lambda_max == pytest.approx(fresh.read([(x, y)]).lambda_max, rel=1e-9)


def test_bad_arguments_are_refused_by_name():
    w = [tf.Variable(1.0)]
    for kwargs, word in [({"method": "lanczos"}, "method"), ({"iterations": 0}, "iterations"),
                         ({"iterations": True}, "iterations"), ({"tolerance": -1.0}, "tolerance"),
                         ({"tolerance": float("nan")}, "tolerance")]:
        with pytest.raises(ValueError, match=word):
            SharpnessMeter(lambda x, y: w[0], w, **kwargs)
    with pytest.raises(ValueError, match="variables"):
        SharpnessMeter(lambda x, y: 0.0, [])
    with pytest.raises(ValueError, match="batches"):
        SharpnessMeter(lambda x, y: w[0] * w[0], w).read([])


# -- the records, the summary and the verdict's sentence -----------------------------------------
def record(ratios, lr=0.1, start=1, every=10) -> SharpnessRecord:
    ratios = np.asarray(ratios, np.float64)
    n = len(ratios)
    return SharpnessRecord(np.arange(n) * every + start, ratios * 2 / lr, np.full(n, 2 / lr), np.full(n, lr),
                           np.full(n, 3), np.full(n, 1e-4), optimizer="gradient descent", rule="2/η")


class Losses:
    def __init__(self, loss):
        self.loss = np.asarray(loss, np.float64)
        self.step = np.arange(1, len(self.loss) + 1)


def test_summary_of_a_run_that_reaches_and_hovers():
    ratios = [0.4, 0.5, 0.6, 0.7, 0.85, 1.0, 1.1, 0.95, 1.05, 1.3, 1.0, 0.9]  # reached at reading 4 (step 41)
    loss = np.linspace(1.0, 0.5, 120)
    loss[60::7] *= 1.01  # some steps rise by 1%, above LOSS_RISE
    out = sharpness_summary(record(ratios), Losses(loss))
    assert out["summary/sharpness_init_over_threshold"] == pytest.approx(0.4)
    assert out["summary/sharpness_max_over_threshold"] == pytest.approx(1.3)
    assert out["summary/sharpness_rise"] == pytest.approx(1.3 / 0.4)
    assert out["summary/sharpness_reached_step"] == 41
    assert out["summary/sharpness_in_band"] == pytest.approx(7 / 8)  # 1.3 is outside [0.8, 1.25]
    after = loss[40:]
    rises = np.mean(after[1:] > after[:-1] * (1 + 1e-4))
    assert rises > 0 and out["summary/eos_loss_increases"] == pytest.approx(rises)
    assert out["summary/eos_loss_ratio"] < 1
    assert BAND == (0.8, 1.25)


def test_summary_without_reaching_or_without_threshold():
    out = sharpness_summary(record([0.2, 0.3, 0.4]), Losses(np.linspace(1, 0.1, 30)))
    assert "summary/sharpness_in_band" not in out and "summary/eos_loss_increases" not in out
    assert out["summary/sharpness_max_over_threshold"] == pytest.approx(0.4)
    none = record([0.5, 0.6])
    none.threshold[:] = np.nan
    assert sharpness_summary(none, Losses(np.ones(20))) == {}


def test_record_round_trip_and_refusal(tmp_path):
    r = record([0.5, 1.2])
    r.save(tmp_path / "s.npz")
    back = SharpnessRecord.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(back.lambda_max, r.lambda_max)
    assert back.optimizer == "gradient descent" and back.key() == KEYS["plain"]
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(ValueError, match="not a gradzoo sharpness file"):
        SharpnessRecord.load(tmp_path / "bad.npz")


def test_the_verdicts_sentence_names_the_first_crossing_before_divergence():
    r = record([0.5, 0.9, 1.15, 1.5], lr=0.1, start=1, every=20)  # steps 1, 21, 41, 61
    assert beyond_stability(r, 50) == "sharpness 2.3/η at step 41: beyond gradient descent's stability limit 2/η"
    assert beyond_stability(r, 30) is None  # crossed only after it diverged
    assert beyond_stability(None, 10) is None


# -- in zoo-train ----------------------------------------------------------------------------------
TINY = ["model.depth=3", "model.width=16", "model.activation=tanh", "data.targets=onehot", "optimizer=sgd",
        "trainer.batch_size=2048", "trainer.epochs=12", "tracking.uri=null"]


def test_zoo_train_logs_readings_beside_the_threshold_and_leaves_training_unchanged():
    from zoo.training.run import train
    from zoo.tracking.memory import MemorySink

    plain = train(TINY + ["optimizer.lr=0.2"])
    sink = MemorySink()
    from zoo.training.spec import compose_spec
    from zoo.training.run import run

    measured = run(compose_spec(TINY + ["optimizer.lr=0.2", "trainer.sharpness_every=5"]), sink)
    for a, b in zip(plain.model.get_weights(), measured.model.get_weights()):
        np.testing.assert_array_equal(a, b)  # bit for bit: the readings change nothing
    assert [s for s, _ in sink.metrics[KEYS["plain"]]] == [1, 6, 11]
    assert [v for _, v in sink.metrics[KEYS["threshold"]]] == pytest.approx([10.0] * 3)
    saved = SharpnessRecord.load(io.BytesIO(sink.artifacts["stats/sharpness.npz"]))
    assert list(saved.step) == [1, 6, 11] and saved.optimizer == "gradient descent"
    assert saved.examples == 1024  # trainer.sharpness_examples' default, drawn from the 1,437 training digits
    assert np.allclose([v for _, v in sink.metrics[KEYS["plain"]]], saved.lambda_max)
    assert measured.final["summary/sharpness_init_over_threshold"] == pytest.approx(saved.lambda_max[0] / 10)
    assert "summary/sharpness_init_over_threshold" not in plain.final


def test_a_run_that_diverges_beyond_the_threshold_says_so():
    from zoo.training.run import train

    result = train(TINY + ["optimizer.lr=30", "trainer.sharpness_every=1"])
    assert result.outcome == "diverged"
    assert "beyond gradient descent's stability limit 2/η" in result.verdict.reason
    assert result.verdict.reason.startswith("non-finite loss or gradient at step")


@pytest.mark.parametrize("override, message", [
    ("trainer.sharpness_every=-1", "trainer.sharpness_every must be >= 0, got -1"),
    ("trainer.sharpness_every=2.5", "trainer.sharpness_every"),
    ("trainer.sharpness_every=often", "trainer.sharpness_every"),
    ("trainer.sharpness_examples=-5", "trainer.sharpness_examples must be >= 0, got -5"),
    ("trainer.sharpness_iterations=0", "trainer.sharpness_iterations must be >= 1, got 0"),
])
def test_bad_knobs_fail_before_tensorflow_naming_the_key(override, message):
    from zoo.config.schema import SpecError
    from zoo.training.spec import compose_spec

    with pytest.raises(SpecError, match=message):
        compose_spec([override, "tracking.uri=null"])


def test_diagnose_reports_lambda_max_and_the_largest_stable_learning_rate():
    """A linear model under mean squared error: zoo.diagnose's λ_max is the closed form over the
    4 batches of 64 it draws (equal batches: the mean of their losses is the loss of all 256)."""
    import zoo

    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(256, 6)).astype(np.float32) + 1.0, rng.normal(size=(256, 2)).astype(np.float32)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    d = zoo.diagnose(model, (x, y))
    a = np.hstack([x, np.ones((256, 1))]).astype(np.float64)
    closed = np.linalg.eigvalsh(2 / (256 * 2) * a.T @ a)[-1]
    assert d.sharpness.lambda_max == pytest.approx(closed, rel=1e-3)  # the default stopping rule
    text = d.markdown()
    assert "## Sharpness" in text and f"2/λ_max = {2 / d.sharpness.lambda_max:.3g}" in text


# -- in zoo.GradientMonitor ----------------------------------------------------------------------
def small_net(optimizer, steps_per_execution=1):
    """A float32 tanh MLP with batch norm and dropout (the readings' stated mode: inference),
    the same initial weights and seeds every time it is built."""
    keras.utils.set_random_seed(11)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="tanh"),
                              keras.layers.BatchNormalization(), keras.layers.Dropout(0.25), keras.layers.Dense(2)])
    model.compile(optimizer, "mse", steps_per_execution=steps_per_execution)
    return model


def regression_data(n=32, seed=12):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype(np.float32), rng.normal(size=(n, 2)).astype(np.float32)


class SecondWays(keras.callbacks.Callback):
    """Before each update, at the weights (and optimizer state) the update starts from, on the
    full batch it trains on: a cold, converged zoo.instruments.sharpness reading and the top
    eigenvalue of the full Hessian (the Jacobian of the gradient, preconditioned as Adam's
    P^-1/2 H P^-1/2) by numpy.linalg.eigvalsh. Reads only: no variable changes."""

    def __init__(self, x, y, every):
        super().__init__()
        self.x, self.y, self.every, self.meter, self.readings = tf.constant(x), tf.constant(y), every, None, {}

    def on_train_batch_begin(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy()) + 1
        if (step - 1) % self.every:
            return
        model, mse = self.model, keras.losses.MeanSquaredError()
        objective = lambda a, b: mse(b, model(a, training=False))  # noqa: E731
        variables = model.trainable_variables
        if self.meter is None:
            self.meter = SharpnessMeter(objective, variables, iterations=500, tolerance=1e-9)
            # traced once (the eager Jacobian takes 1.5 s a call); it reads the weights of the moment
            self.hessian = tf.function(lambda: hessian_tensor(objective, variables, self.x, self.y))
        self.meter.reset()
        reading = self.meter.read_optimizer([(self.x, self.y)], model.optimizer)
        if reading is None:
            return
        h = np.asarray(self.hessian(), np.float64)
        if reading.preconditioned:
            s = flat(inverse_sqrt(preconditioner(model.optimizer, variables)))
            h = s[:, None] * h * s[None, :]
        self.readings[step] = (
            reading.lambda_max, np.linalg.eigvalsh((h + h.T) / 2)[-1])


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_gradient_monitor_readings_equal_the_meter_and_the_full_hessian(kind):
    """GradientMonitor(sharpness_every=3) in fit, full batch: before updates 1, 4, 7 (Adam: 4, 7;
    no preconditioner before its first update), each reading equals a cold, converged meter
    reading and the full Hessian's top eigenvalue at the same weights and batch to 2e-3 relative
    (its stopping rule is 1e-3; measured: ~4e-4), the threshold is the optimizer's, and the
    series, the file and the summary agree."""
    import zoo

    x, y = regression_data()
    lr = 0.1 if kind == "sgd" else 0.01
    model = small_net(keras.optimizers.SGD(lr) if kind == "sgd" else keras.optimizers.Adam(lr))
    second = SecondWays(x, y, every=3)
    monitor = zoo.GradientMonitor(sharpness_every=3, mlflow=False, verbose=False)
    model.fit(x, y, batch_size=32, epochs=8, shuffle=False, verbose=0, callbacks=[second, monitor])
    r = monitor.sharpness
    assert list(r.step) == ([1, 4, 7] if kind == "sgd" else [4, 7])
    assert r.preconditioned == (kind == "adam")
    for step, lam in zip(r.step, r.lambda_max):
        meter, exact = second.readings[int(step)]
        assert meter == pytest.approx(exact, rel=1e-4)  # the two second ways agree (float32 weights)
        assert lam == pytest.approx(exact, rel=2e-3), (step, lam, exact)
    threshold = 2 / np.float32(lr) if kind == "sgd" else 38 / np.float32(lr)
    assert np.allclose(r.threshold, threshold, rtol=1e-6)
    key = KEYS["preconditioned" if kind == "adam" else "plain"]
    assert [s for s, _ in monitor.memory.metrics[key]] == list(r.step)
    assert [v for _, v in monitor.memory.metrics[KEYS["threshold"]]] == pytest.approx(list(r.threshold))
    saved = SharpnessRecord.load(io.BytesIO(monitor.memory.artifacts["stats/sharpness.npz"]))
    np.testing.assert_array_equal(saved.lambda_max, r.lambda_max)
    final = {k: v[-1][1] for k, v in monitor.memory.metrics.items()}
    assert final["summary/sharpness_init_over_threshold"] == pytest.approx(r.lambda_max[0] / r.threshold[0])


def test_gradient_monitor_with_sharpness_trains_exactly_as_without():
    """Adam, batch norm and dropout, 2 steps per execution, a reading every 3 updates: every
    variable of the model (batch-norm statistics and dropout's seed included) and of the
    optimizer is bit for bit that of the same fit without the monitor and with the monitor
    without sharpness."""
    import zoo

    x, y = regression_data()
    final = {}
    for name, callbacks in [("plain", []), ("monitor", [zoo.GradientMonitor(mlflow=False, verbose=False)]),
                            ("sharpness", [zoo.GradientMonitor(sharpness_every=3, mlflow=False, verbose=False)])]:
        model = small_net(keras.optimizers.Adam(0.01), steps_per_execution=2)
        model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0, callbacks=callbacks)
        final[name] = [v.numpy() for v in model.variables + model.optimizer.variables]
        if name == "sharpness":
            assert list(callbacks[0].sharpness.step) == [4, 7, 10]  # before update 1 Adam has no preconditioner
    for name in ("monitor", "sharpness"):
        assert len(final[name]) == len(final["plain"])
        for a, b in zip(final[name], final["plain"]):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "10", True, float("nan")])
def test_gradient_monitor_refuses_an_impossible_sharpness_every(bad):
    import zoo

    with pytest.raises(zoo.InputError, match="GradientMonitor: sharpness_every must be a whole number >= 1 or None") as err:
        zoo.GradientMonitor(sharpness_every=bad)
    assert "\n" not in str(err.value)


def test_gradient_monitor_in_a_custom_loop_says_sharpness_is_not_read():
    import zoo

    model = small_net(keras.optimizers.SGD(0.1))
    monitor = zoo.GradientMonitor(sharpness_every=1, mlflow=False, verbose=False)
    with pytest.warns(UserWarning, match="not measured: sharpness"):
        monitor.attach(model)
    assert "custom loop" in monitor.skipped["sharpness"]


def test_gradient_monitor_names_the_crossing_of_a_run_driven_past_2_over_eta():
    """A linear model under mean squared error, full batch, SGD at η = 3: its Hessian is the
    closed form 2/(n k)·AᵀA, A = [X 1], whose top eigenvalue is above 2/η, so the loss grows
    until it overflows; the verdict's reason names the first reading (step 1) as λ_max·η in
    units of 1/η."""
    import zoo

    x, y = regression_data()
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(3.0), "mse")
    monitor = zoo.GradientMonitor(sharpness_every=5, mlflow=False, verbose=False)
    model.fit(x, y, batch_size=32, epochs=45, shuffle=False, verbose=0, callbacks=[monitor])
    a = np.hstack([x, np.ones((32, 1))]).astype(np.float64)
    closed = np.linalg.eigvalsh(2 / (32 * 2) * a.T @ a)[-1]
    assert closed * 3.0 > 2  # beyond the limit by construction
    assert monitor.verdict.label == "diverged"
    assert monitor.verdict.reason.startswith("non-finite loss or gradient at step")
    assert (f"; sharpness {closed * np.float32(3.0):.3g}/η at step 1: beyond gradient descent's stability "
            f"limit 2/η") in monitor.verdict.reason
