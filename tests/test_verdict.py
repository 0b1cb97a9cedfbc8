"""The verdict rule on reference cases built from arrays (no training)."""
import numpy as np

from zoo.monitor.verdict import judge, windows

T, L = 100, 10


def grads(per_layer_scale, t=T):
    return np.tile(np.asarray(per_layer_scale, dtype=np.float64), (t, 1))


def test_windows_cover_every_step_once():
    spans = windows(T)
    assert spans[0].start == 0 and spans[-1].stop == T
    assert sum(s.stop - s.start for s in spans) == T
    assert windows(7) == [slice(0, 7)]  # at least MIN_WINDOW steps: no 2-step remainder
    for n in range(5, 200):  # every window of every run length has at least 5 steps
        spans = windows(n)
        assert min(s.stop - s.start for s in spans) >= 5 and spans[-1].stop == n, n


def test_healthy_when_gradient_reaches_every_layer():
    v = judge(grads(np.linspace(0.5, 1.0, L)), np.ones((T, L)), np.ones(T, bool))
    assert v.label == "healthy", v


def test_vanishing_by_flow():
    g = grads(10.0 ** np.linspace(-6, -1, L))  # 5 decades lost from last to first layer
    v = judge(g, np.ones((T, L)), np.ones(T, bool))
    assert v.label == "vanishing" and v.numbers["flow_min"] < 1e-3


def test_vanishing_by_scale_when_every_layer_starves_together():
    """Deep linear chain with small init: flow stays 1 but all gradients are tiny."""
    v = judge(grads(np.full(L, 1e-8)), np.ones((T, L)), np.ones(T, bool))
    assert v.label == "vanishing" and v.numbers["flow_min"] == 1.0


def test_small_gradients_late_in_training_are_not_vanishing():
    g = grads(np.ones(L))
    g[20:] *= 1e-7  # converged: gradients shrink everywhere, but only after the first window
    assert judge(g, np.ones((T, L)), np.ones(T, bool)).label == "healthy"


def test_exploding_by_flow_and_by_scale():
    assert judge(grads(10.0 ** np.linspace(2, -2, L)), np.ones((T, L)), np.ones(T, bool)).label == "exploding"
    g = grads(np.ones(L))
    g[60:70] *= 1e4  # a burst mid-run, every layer at once
    assert judge(g, np.ones((T, L)), np.ones(T, bool)).label == "exploding"


def test_diverged_wins_and_names_the_step():
    finite = np.ones(T, bool)
    finite[41] = False
    v = judge(grads(np.ones(L)), np.ones((T, L)), finite)
    assert v.label == "diverged" and v.numbers["diverged_step"] == 42
