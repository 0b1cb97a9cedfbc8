"""The instruments against closed forms: gradient norms, the sigmoid bound, histograms, stats."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import zoo
from zoo.instruments.activations import activation_stats, activation_stats_many
from zoo.instruments.histograms import HIST_BINS, HIST_RANGE, bin_ids, hist_edges, log_histogram, log_histograms
from zoo.records.verdict import judge
from conftest import make_step as _make_step


def make_step(model, x, y, task, lr=1e-12, clipping=None):
    return _make_step(model, x, y, task, lr=lr, clipping=clipping)


@pytest.mark.parametrize("a", [0.5, 1.3])
def test_deep_linear_chain_matches_closed_form(a):
    """y = x W_1 ... W_L with W_l = a*I and MSE loss: dL/dW_l = a^(L-1) x^T D for every l,
    with D = 2 (a^L x - t) / (B n). The monitor's norms must match to 1e-4 relative."""
    depth, n, batch = 12, 8, 16
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, n)).astype(np.float32)
    t = rng.normal(size=(batch, n)).astype(np.float32)
    model = zoo.build_model("mlp", (n,), n, depth=depth, width=n, activation="linear", init="identity")
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            layer.kernel.assign(a * np.eye(n, dtype=np.float32))
    step = make_step(model, x, t, "regression")
    u = step.layout.unpack(step.train(tf.constant(x), tf.constant(t)).numpy())
    x64, t64 = x.astype(np.float64), t.astype(np.float64)
    d = 2 * (a ** depth * x64 - t64) / (batch * n)
    expected = a ** (depth - 1) * np.linalg.norm(x64.T @ d)
    np.testing.assert_allclose(u["grad_norm"][0], np.full(depth, expected), rtol=1e-4)
    np.testing.assert_allclose(u["weight_norm"][0], np.full(depth, a * np.sqrt(n)), rtol=1e-6)
    assert step.kernels[0] == "block01_dense" and step.kernels[-1] == "head"


def test_deep_linear_chain_with_small_init_is_judged_vanishing():
    """Every layer's gradient underflows together, the first/last ratio stays 1: vanishing."""
    depth, n = 30, 8
    model = zoo.build_model("mlp", (n,), 10, depth=depth, width=n, activation="linear", init="identity")
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            layer.kernel.assign(0.5 * np.eye(*layer.kernel.shape, dtype=np.float32))
    x = np.random.default_rng(1).normal(size=(32, n)).astype(np.float32)
    y = np.arange(32, dtype=np.int32) % 10
    step = make_step(model, x, y, "classification")
    rows = np.stack([step.train(tf.constant(x), tf.constant(y)).numpy() for _ in range(6)])
    u = step.layout.unpack(rows)
    flow = u["grad_norm"][:, 0] / u["grad_norm"][:, -1]
    verdict = judge(u["grad_norm"], u["weight_norm"], u["finite"].astype(bool))
    assert verdict.label == "vanishing", verdict
    assert 0.1 < np.median(flow) < 10  # the spread alone would have missed it


def test_sigmoid_chain_obeys_quarter_per_layer_bound():
    """With orthogonal square weights and batch 1, the error signal e_l = dL/dz_l shrinks by at
    least sigmoid's peak slope per layer: ||e_{l-1}|| <= 0.25 ||e_l||. The monitor gives
    ||dL/dW_l|| = ||h_{l-1}|| ||e_l|| (rank one), so e_l = grad_norm_l / ||h_{l-1}||."""
    depth, n = 10, 16
    keras.utils.set_random_seed(3)
    model = zoo.build_model("mlp", (n,), 4, depth=depth, width=n, activation="sigmoid", init="orthogonal")
    x = np.random.default_rng(2).normal(size=(1, n)).astype(np.float32)
    y = np.array([1], dtype=np.int32)
    step = make_step(model, x, y, "classification")
    g = step.layout.unpack(step.train(tf.constant(x), tf.constant(y)).numpy())["grad_norm"][0]
    acts = [l.output for l in model.layers if l.name.endswith("_act")]
    h = [np.linalg.norm(x)] + [np.linalg.norm(a) for a in keras.Model(model.inputs, acts)([x])]
    e = g[:-1] / np.array(h[:depth - 1])  # hidden blocks 1..depth-1
    ratios = e[:-1] / e[1:]
    assert np.all(ratios <= 0.25 + 1e-6), ratios
    assert np.all(ratios > 0.05)  # and the bound is nearly tight near sigmoid's midpoint


def test_clipping_is_applied_and_both_norms_are_kept():
    n = 8
    model = zoo.build_model("mlp", (n,), 3, depth=4, width=n, activation="linear",
                            init="random_normal", init_std=1.0)
    x = np.random.default_rng(0).normal(size=(16, n)).astype(np.float32)
    y = np.arange(16, dtype=np.int32) % 3
    step = make_step(model, x, y, "classification", clipping=("clipnorm", 0.01))
    u = step.layout.unpack(step.train(tf.constant(x), tf.constant(y)).numpy())
    assert np.all(u["grad_norm"][0] > 0.01)
    np.testing.assert_allclose(u["grad_norm_clipped"][0], 0.01, rtol=1e-4)
    step = make_step(model, x, y, "classification", clipping=("global_clipnorm", 0.01))
    u = step.layout.unpack(step.train(tf.constant(x), tf.constant(y)).numpy())
    assert np.sqrt(np.sum(u["grad_norm_clipped"][0] ** 2)) <= 0.01 * (1 + 1e-4)


def test_update_ratio_is_the_sgd_step_size():
    """Plain SGD: ||dW|| = lr * ||g||, so update_norm / grad_norm == lr."""
    n, lr = 8, 0.05
    model = zoo.build_model("mlp", (n,), 3, depth=3, width=n)
    x = np.random.default_rng(0).normal(size=(16, n)).astype(np.float32)
    y = np.zeros(16, np.int32)
    step = make_step(model, x, y, "classification", lr=lr)
    u = step.layout.unpack(step.train(tf.constant(x), tf.constant(y)).numpy())
    np.testing.assert_allclose(u["update_norm"][0] / u["grad_norm"][0], lr, rtol=1e-3)


def test_log_histogram_bins_and_counts_zeros_apart():
    """Every float32 value has its own bin, a denormal included (it is not a zero); only a
    float64 value beyond float32's range falls into an edge bin."""
    g = tf.constant([0.0, 0.0, 1e-3, 1e-3, 1.0, 1e-30, 1e9, 1e-44, -3e38], tf.float32)
    counts = log_histogram(g).numpy()
    edges = hist_edges()
    bin_of = lambda v: np.searchsorted(edges, np.log10(v), side="right") - 1  # noqa: E731
    assert counts.shape == (HIST_BINS + 1,) and counts.sum() == 9
    assert counts[-1] == 2  # the two exact zeros
    assert counts[bin_of(1e-3)] == 2 and counts[bin_of(1.0)] == 1
    for v in (1e-30, 1e9, float(np.float32(1e-44)), 3e38):
        assert counts[bin_of(v)] == 1 and 0 < bin_of(v) < HIST_BINS - 1, v
    wide = log_histogram(tf.constant([1e-300, 1e300], tf.float64)).numpy()
    assert wide[0] == 1 and wide[HIST_BINS - 1] == 1  # out of range -> edge bins


def test_log_histograms_count_as_segment_sums_and_float64_numpy_over_float32s_whole_range():
    """Counted with bincount, the histograms equal the segment sums they were counted with
    before, and float64 numpy's bins of the same values: float32 bit patterns drawn over its
    whole range (denormals from 1.4e-45 to 3.4e38, both signs), exact zeros, inf and NaN (these
    two land where the segment sums put them), in tensors of several shapes."""
    lo, hi = HIST_RANGE
    rng = np.random.default_rng(7)
    bits = rng.integers(1, 0x7F7FFFFF, 30000, dtype=np.uint32)  # every positive finite float32
    values = bits.view(np.float32) * rng.choice(np.float32([-1, 1]), len(bits))
    edges = np.float32([1.4e-45, 1.1754942e-38, 1.1754944e-38, 3.4028235e38, 1e-3, 1.0])
    values = np.concatenate([values, edges, np.zeros(7, np.float32)])
    tensors = [tf.constant(values[:20000].reshape(100, 200)), tf.constant(values[20000:])]
    odd = [tf.constant(np.float32([np.inf, -np.inf, np.nan, 2.0, 0.0]))]

    def segment_sums(ts):  # the counting they had before: the same ids, summed by segment
        ids, size = bin_ids(ts)
        return tf.reshape(tf.math.unsorted_segment_sum(tf.ones_like(ids), ids, size), [len(ts), HIST_BINS + 1])

    for ts in (tensors, odd):
        np.testing.assert_array_equal(log_histograms(ts).numpy(), segment_sums(ts).numpy())
    counts = log_histograms(tensors).numpy()
    for row, part in zip(counts, (values[:20000], values[20000:])):
        a = np.abs(part.astype(np.float64))  # a denormal's exact value, as exact_abs reads it
        zero = a == 0
        index = np.clip(np.floor((np.log(np.where(zero, 1.0, a)) / np.log(10.0) - lo) / ((hi - lo) / HIST_BINS)),
                        0, HIST_BINS - 1).astype(int)
        expected = np.bincount(np.where(zero, HIST_BINS, index), minlength=HIST_BINS + 1)
        np.testing.assert_array_equal(row, expected)
        assert row[-1] == zero.sum() and row[0] < row.sum()  # denormals have their own bins, not the edge's
    odd_counts = log_histograms(odd).numpy()[0]
    assert odd_counts.sum() == 5 and odd_counts[-1] == 1


def test_activation_stats_saturation_and_dead_units():
    sig = tf.constant([[0.001, 0.5], [0.9999, 0.5]], tf.float32)
    mean, std, sat, dead = activation_stats(sig, "sigmoid", False).numpy()
    assert sat == pytest.approx(0.5) and np.isnan(dead)
    relu = tf.constant([[0.0, 1.0, 0.0], [0.0, 2.0, 3.0]], tf.float32)
    *_, sat, dead = activation_stats(relu, None, True).numpy()
    assert dead == pytest.approx(1 / 3) and np.isnan(sat)
    tanh = tf.constant([[0.999, -0.999, 0.0, 0.5]], tf.float32)
    assert activation_stats(tanh, "tanh", False).numpy()[2] == pytest.approx(0.5)


def test_activation_stats_of_many_layers_equal_numpy_layer_by_layer():
    """Layers stacked by shape and kind (in any order, one of unknown shape) give each layer's
    own numbers, checked against numpy."""
    rng = np.random.default_rng(0)
    outputs = [rng.normal(size=(6, 5)), rng.uniform(size=(6, 5)), np.maximum(rng.normal(size=(6, 5)) - 1, 0),
               np.tanh(3 * rng.normal(size=(6, 2, 4))), rng.uniform(size=(6, 5)), np.maximum(rng.normal(size=(6, 5)), 0)]
    kinds = [(None, False), ("sigmoid", False), (None, True), ("tanh", False), ("sigmoid", False), (None, True)]
    tensors = [tf.constant(o, tf.float32) for o in outputs]
    dynamic = tf.function(lambda t: activation_stats_many(
        tensors[:5] + [t], [k for k, _ in kinds], [d for _, d in kinds]),
        input_signature=[tf.TensorSpec((None, 5), tf.float32)])
    got = dynamic(tensors[5]).numpy()
    for row, o, (sat, dies) in zip(got, outputs, kinds):
        o = o.astype(np.float32)
        assert row[0] == pytest.approx(o.mean(), rel=1e-5, abs=1e-6) and row[1] == pytest.approx(o.std(), rel=1e-4)
        if sat == "sigmoid":
            assert row[2] == pytest.approx(np.mean((o < 0.0025) | (o > 0.9975)))
        elif sat == "tanh":
            assert row[2] == pytest.approx(np.mean(np.abs(o) > 0.995))
        else:
            assert np.isnan(row[2])
        units = o.reshape(-1, o.shape[-1])
        assert np.isnan(row[3]) if not dies else row[3] == pytest.approx(np.mean(np.all(units <= 0, axis=0)))


def test_layer_profile_reads_the_window_it_is_asked_for_and_refuses_anything_else():
    """The study plot's 'first 10 %' and 'last 10 %' panels passed 0 and -1 and both drew the
    last window: a position is refused now, and start and end differ where the run changed."""
    from types import SimpleNamespace

    from zoo.records.summary import layer_profile

    g = np.vstack([np.full((50, 3), 1.0), np.full((50, 3), 1e-6)])
    stats = SimpleNamespace(grad_norm=g)
    assert layer_profile(stats, "start")[0] == 1.0 and layer_profile(stats, "end")[0] == 1e-6
    assert layer_profile(stats, "init")[0] == 1.0
    for bad in (0, -1, "first"):
        with pytest.raises(ValueError, match="which must be one of init, start, end"):
            layer_profile(stats, bad)
