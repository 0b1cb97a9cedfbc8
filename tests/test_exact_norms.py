"""Every norm the zoo reports is exact over float32's whole range: checked element range by
element range against numpy in float64, and on the tour's nets against a float64 tape."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from conftest import make_step, probe_once, step_once
from zoo.instruments import graph_stats

RNG = np.random.default_rng(0)
# decades of float32 from its smallest denormal to near its largest value
RANGES = [(-44.8, -38.0), (-38.0, -30.0), (-30.0, -19.0), (-19.0, -10.0), (-10.0, 10.0),
          (10.0, 19.0), (19.0, 30.0), (30.0, 38.5), (-44.8, 38.5)]


def spanning(lo, hi, shape=(37, 23)):
    """A float32 tensor whose magnitudes are log-uniform over [10**lo, 10**hi], signs random."""
    exps = RNG.uniform(lo, hi, size=shape)
    return (10.0 ** exps * RNG.choice([-1.0, 1.0], size=shape)).astype(np.float32)


def reference(x, axis=None):
    return np.sqrt(np.sum(np.square(x.astype(np.float64)), axis=axis))


@pytest.mark.parametrize("lo,hi", RANGES)
def test_norms_match_float64_numpy_across_the_float32_range(lo, hi):
    """Denormals, values whose squares underflow float32, values whose squares overflow it."""
    x = spanning(lo, hi)
    assert np.all(x != 0)
    compiled_norm = tf.function(lambda t: graph_stats.norm(t))
    compiled_axis = tf.function(lambda t: graph_stats.norm(t, axis=[0]))
    np.testing.assert_allclose(compiled_norm(tf.constant(x)).numpy(), reference(x), rtol=1e-6)
    np.testing.assert_allclose(compiled_axis(tf.constant(x)).numpy(), reference(x, 0), rtol=1e-6)
    parts = [x[:5], x[5:], x[:1, :1]]
    np.testing.assert_allclose(graph_stats.norms([tf.constant(p) for p in parts]).numpy(),
                               [reference(p) for p in parts], rtol=1e-6)
    assert np.all(compiled_axis(tf.constant(x)).numpy() > 0)  # nothing nonzero reads as zero


def test_exact_abs_reads_every_float32_bit_pattern_it_is_given():
    """|x| in float64, value for value (denormals, both signs, inf), while a float cast in
    TensorFlow flushes denormals to zero on this CPU: the reason the bits are read."""
    x = np.concatenate([spanning(-44.8, 38.5, (4000,)), np.float32([0.0, -0.0, np.inf, -np.inf, 1.4e-45, -1.4e-45])])
    got = tf.function(graph_stats.exact_abs)(tf.constant(x)).numpy()
    np.testing.assert_array_equal(got, np.abs(x.astype(np.float64)))
    assert np.isnan(graph_stats.exact_abs(tf.constant(np.float32([np.nan]))).numpy()[0])
    half = np.float16([6e-8, -1e-5, 65504.0])  # float16's denormals and its largest value
    np.testing.assert_array_equal(graph_stats.exact_abs(tf.constant(half)).numpy(), np.abs(half.astype(np.float64)))


def test_a_norm_is_zero_only_when_every_element_is_zero():
    x = np.zeros((64, 64), np.float32)
    assert graph_stats.norm(tf.constant(x)).numpy() == 0.0
    x[13, 7] = 1.4e-45  # one denormal among zeros
    assert graph_stats.norm(tf.constant(x)).numpy() == pytest.approx(1.4e-45, rel=0.01)


def test_a_large_finite_gradient_is_finite_and_not_diverged():
    """A gradient whose elements are finite float32 numbers can have a norm above float32's
    largest value (3.4e38): the step reports it as the float64 number it is, not as inf, and the
    step is not 'diverged'. MSE of a zero kernel, targets 1, inputs x = 3e38 (D inputs and
    outputs, any batch size): loss 1, every element -2x/D = -3.75e37, ||dL/dW|| = 2x = 6e38."""
    big = np.full((1000,), 3e38, np.float32)
    assert graph_stats.norm(tf.constant(big)).numpy() == pytest.approx(3e38 * np.sqrt(1000), rel=1e-6)
    d, x0 = 16, 3e38
    model = keras.Sequential([keras.Input((d,)), keras.layers.Dense(d, use_bias=False, kernel_initializer="zeros")])
    x, y = np.full((8, d), x0, np.float32), np.ones((8, d), np.float32)
    out = step_once(make_step(model, x, y, "regression", lr=0.0), x, y)
    assert out["loss"] == pytest.approx(1.0)
    assert out["grad_norm"][0] == pytest.approx(2 * x0, rel=1e-6) and out["grad_norm"][0] > 3.4e38
    assert out["finite"] == 1


def _float64_twin(build, model):
    """The same architecture built in float64 (Keras' dtype policy), given ``model``'s weights."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        twin = build()
    finally:
        keras.config.set_dtype_policy(previous)
    for a, b in zip(twin.weights, model.weights):
        a.assign(b.numpy().astype(np.float64))
    assert all(v.dtype == "float64" for v in twin.weights)
    return twin


def _tape_norms(twin, x, y):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, twin(tf.constant(x, tf.float64), training=True))
    kernels = [v for v in twin.trainable_variables if v.path.endswith("/kernel")]
    return np.array([np.sqrt(np.sum(g.numpy() ** 2)) for g in tape.gradient(loss, kernels)])


@pytest.mark.parametrize("depth,activation,init,lowest", [
    (20, "sigmoid", "random_normal", 1e-20),   # README tour: first layers ~1e-19
    (50, "relu", "random_normal", 1e-29),      # init_depth: every layer ~1e-28
])
def test_step_one_gradient_norms_match_a_float64_tape(depth, activation, init, lowest):
    """The instrumented step's step-1 norms on digits against a float64 GradientTape on the same
    weights and batch: every layer to 1e-4 relative (float32 backprop's own rounding over 50
    layers), however small; none of them zero."""
    data = zoo.load_dataset("digits")
    x, y = data.x_train[:64], data.y_train[:64]
    build = lambda: zoo.build_model("mlp", (64,), 10, depth=depth, width=64,  # noqa: E731
                                    activation=activation, init=init)
    model = build()
    twin = _float64_twin(build, model)
    expected = _tape_norms(twin, x, y)
    got = step_once(make_step(model, x, y, "classification", lr=0.0), x, y)["grad_norm"]
    assert expected.dtype == np.float64 and expected.min() < lowest * 1e3 and np.all(expected > lowest)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert np.all(got > 0)


def test_every_norm_the_step_reports_is_exact_where_squares_underflow():
    """Weights, data and total gradients, the clipped gradient and the update of a net whose
    every kernel element is ~1e-22 (squares ~1e-44: all lost in float32) against numpy in float64
    on the very tensors: the weights before and after the step, and the tape's gradients."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, use_bias=False, name="a"),
                              keras.layers.Dense(3, use_bias=False, name="b", kernel_regularizer=keras.regularizers.L2(1e-2))])
    for v in model.weights:
        v.assign(spanning(-23.0, -21.0, tuple(v.shape)))
    x = RNG.normal(size=(8, 6)).astype(np.float32) * 1e20
    y = RNG.normal(size=(8, 3)).astype(np.float32)
    before = [v.numpy().astype(np.float64) for v in model.weights]
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y, model(x))
    data_grads = [g.numpy().astype(np.float64) for g in tape.gradient(loss, model.trainable_variables)]
    step = make_step(model, x, y, "regression", lr=1.0, clipping=("clipvalue", 1e-23))
    out = step_once(step, x, y)
    after = [v.numpy().astype(np.float64) for v in model.weights]
    norm = lambda a: np.sqrt(np.sum(a ** 2))  # noqa: E731
    total = [data_grads[0], data_grads[1] + 2e-2 * before[1]]
    np.testing.assert_allclose(out["weight_norm"], [norm(w) for w in before], rtol=1e-6)
    np.testing.assert_allclose(out["grad_norm"], [norm(g) for g in data_grads], rtol=1e-5)
    np.testing.assert_allclose(out["grad_norm_total"], [norm(g) for g in total], rtol=1e-5)
    np.testing.assert_allclose(out["grad_norm_clipped"], [norm(np.clip(g, -1e-23, 1e-23)) for g in total], rtol=1e-5)
    np.testing.assert_allclose(out["update_norm"], [norm(a - b) for a, b in zip(after, before)], rtol=1e-6)
    assert np.all(out["weight_norm"] < 1e-19) and np.all(out["update_norm"] > 0)


def test_both_ways_of_reading_a_norm_agree_with_numpy_at_their_border():
    """norms() reads by a float64 cast (denormals read as 0 there) unless some tensor's sum of
    squares is below FAST_PATH_FLOOR, then every tensor bit by bit. Just above the border the
    lost denormals are below float64's resolution; just below it, and with a NaN beside, every
    tensor still gets its exact norm."""
    denormals = np.full(1000, 1e-40, np.float32)  # 1e-40 < 1.18e-38: float32 denormals
    floor = graph_stats.FAST_PATH_FLOOR
    above = np.concatenate([[np.float32(np.sqrt(floor) * 10)], denormals]).astype(np.float32)  # cast path
    below = np.concatenate([[np.float32(np.sqrt(floor) / 10)], denormals]).astype(np.float32)  # bit path
    big = spanning(-10.0, 30.0)
    for tensors in ([above, big], [below, big], [denormals, big], [below, np.float32([np.nan, 1.0]), big]):
        got = graph_stats.norms([tf.constant(t) for t in tensors]).numpy()
        want = [reference(t) for t in tensors]
        np.testing.assert_allclose(got, want, rtol=1e-12)
        assert np.all(got[np.isfinite(want)] > 0)
    compiled = tf.function(graph_stats.norms, jit_compile=True)
    np.testing.assert_allclose(compiled([tf.constant(below), tf.constant(big)]).numpy(),
                               [reference(below), reference(big)], rtol=1e-12)


def test_charts_get_log10_of_norms_across_float64_with_exact_zero_below_float32():
    """MLflow's charts are linear: the per-layer norms go there as log10, over the whole range a
    norm can take (float32 elements, float64 sums), and an exact 0 sits below every float32
    value instead of -inf (which MLflow would store as -1.8e308, flattening the chart)."""
    from zoo.instruments.layout import LOG10_ZERO, log10_for_charts
    from zoo.records.recorder import flow_story

    norms = np.array([1.4e-45, 1e-38, 3e-19, 1.0, 3.4e38, 6e38, 1e300])
    np.testing.assert_allclose(log10_for_charts(norms), np.log10(norms), rtol=1e-15)
    assert log10_for_charts([0.0])[0] == LOG10_ZERO < np.log10(np.float32(1.4e-45))
    assert flow_story(np.array([0.0, 2.0])) == {"1 gradient flow/log10_first_layer": LOG10_ZERO,
                                                "1 gradient flow/log10_last_layer": pytest.approx(np.log10(2.0)),
                                                "1 gradient flow/log10_flow": LOG10_ZERO}
    assert flow_story(np.array([0.0, 0.0]))["1 gradient flow/log10_flow"] == 0.0  # 0/0 = 1: nothing lost between
    assert flow_story(np.array([1e-30, 1e5]))["1 gradient flow/log10_flow"] == pytest.approx(-35.0)
    assert flow_story(np.array([])) == {}


# the normal float32 decades (no denormals): what a gradient TensorFlow computed can hold
NORMAL = [r for r in RANGES if r[0] >= -38.0] + [(-37.9, 38.5)]


@pytest.mark.parametrize("lo,hi", NORMAL)
def test_the_monitors_per_step_sums_are_exact_for_every_normal_float32(lo, hi):
    """graph_stats.gradient_sums (a float64 cast and an L2Loss a tensor, what an ordinary step of
    GradientMonitor pays) equals numpy's float64 sum of squares over float32's normal range."""
    x = spanning(max(lo, -37.9), hi)
    parts = [x[:5], x[5:], x[:1, :1]]
    got = tf.function(graph_stats.gradient_sums)([tf.constant(p) for p in parts]).numpy()
    np.testing.assert_allclose(np.sqrt(got), [reference(p) for p in parts], rtol=1e-12)
    nan = x.copy()
    nan[3, 3] = np.nan
    assert not np.isfinite(graph_stats.gradient_sums([tf.constant(nan)]).numpy()[0])


def test_tensorflow_flushes_denormals_so_a_computed_gradient_holds_none():
    """Why the per-step sums need no bit-level read: TensorFlow's CPU kernels run with
    flush-to-zero and denormals-are-zero. A product or matmul whose exact result is a denormal
    gives 0, and so do the gradients of a model whose true gradient is below 1.2e-38; only
    values that enter from outside (an array made by numpy) can be denormal, and a weight is
    read bit by bit (graph_stats.norms)."""
    tiny = tf.constant([1e-20], tf.float32)
    assert np.float32(1e-20) * np.float32(1e-20) > 0  # numpy keeps the denormal 1e-40
    assert (tiny * tiny).numpy()[0] == 0.0 and tf.function(lambda a: a * a)(tiny).numpy()[0] == 0.0
    m = tf.constant(np.full((4, 4), 1e-20, np.float32))
    assert tf.matmul(m, m).numpy()[0, 0] == 0.0
    w = tf.Variable(np.full((4, 4), 1e-20, np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.matmul(m, w))  # dL/dw = m^T 1 = 4e-20: normal
        small = tf.reduce_sum(tf.matmul(m, w)) * 1e-30  # dL/dw = 4e-50: flushed
    grad = tape.gradient(small, w).numpy()
    assert np.all(grad == 0.0)
    denormal = tf.constant(np.float32([1e-40]))
    assert tf.cast(denormal, tf.float64).numpy()[0] == 0.0  # the cast reads it as 0: entering values need the bits
    assert graph_stats.norms([denormal]).numpy()[0] == pytest.approx(1e-40, rel=1e-3)
    del loss
