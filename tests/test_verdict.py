"""The verdict rule on reference cases built from arrays (no training)."""
import numpy as np
import pytest

from zoo.records.summary import progress
from zoo.records.verdict import judge, windows

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


def test_through_time_rules_on_histogram_steps():
    """A recurrent net whose layers are all well fed (flow 1) but whose gradient reaching step 0
    is 1e-5 of the last step's is vanishing through time; 1e5 is exploding through time; a
    ratio of 0.02 (chrono LSTM at T = 150) is healthy. Exactly 0 at step 0 is vanishing."""
    flat, weights, finite = grads(np.ones(L)), np.ones((T, L)), np.ones(T, bool)
    through = lambda first: np.tile(np.geomspace(first, 1.0, 150), (10, 1))  # noqa: E731
    v = judge(flat, weights, finite, through(1e-5))
    assert v.label == "vanishing" and v.reason.startswith("through time") and v.numbers["time_flow_min"] == pytest.approx(1e-5)
    assert judge(flat, weights, finite, through(1e5)).label == "exploding"
    assert judge(flat, weights, finite, through(0.02)).label == "healthy"
    zero_at_start = through(1e-5)
    zero_at_start[:, 0] = 0.0
    assert judge(flat, weights, finite, zero_at_start).numbers["time_flow_min"] == 0.0
    late = through(0.5)
    late[5:] = through(1e-6)[5:]  # the second window of histogram steps: learned to ignore the start
    assert judge(flat, weights, finite, late).label == "healthy"
    early = through(1e-6)
    early[5:] = through(0.5)[5:]  # starved at the start, whatever comes later
    assert judge(flat, weights, finite, early).label == "vanishing"
    assert judge(flat, weights, finite, None).label == "healthy"


def test_every_layer_exactly_zero_is_vanishing_by_scale_not_by_a_fake_ratio():
    """0/0 is not a ratio of 0: nothing reaches either end, so flow is 1 and the scale rule
    (every layer starves alike) names it."""
    v = judge(grads(np.zeros(L)), np.ones((T, L)), np.ones(T, bool))
    assert v.label == "vanishing" and v.numbers["flow_min"] == 1.0 and v.numbers["scale_first_window"] == 0.0


@pytest.mark.parametrize("loss,label", [(0.5, "learning"), (0.949, "learning"), (0.95, "stalled"),
                                        (1.0, "stalled"), (1.05, "stalled"), (1.06, "unstable"),
                                        (332 / 0.16, "unstable"), (float("nan"), "unstable"),
                                        (float("inf"), "unstable")])
def test_progress_tells_stalled_from_worse_than_a_constant(loss, label):
    assert progress(loss, 1.0)[0] == label
