"""zoo.GradientMonitor in fit on every Keras backend (issue 35): KERAS_BACKEND=jax and torch,
against TensorFlow's monitor, float64 numpy and plain fit.

The backend is fixed per process, so tests/backends_worker.py runs the checks once per backend
in a subprocess (the three at once) and saves what it measured; the tests below read it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BACKENDS = ("jax", "torch", "tensorflow")
PORTABLE = ("jax", "torch")
WORKER = Path(__file__).with_name("backends_worker.py")
LR = 0.1  # the worker's SGD learning rate


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("backends")
    procs = {}
    for backend in BACKENDS:
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        args = [sys.executable, str(WORKER), str(folder / f"{backend}.npz")] + (["mlflow"] if backend != "tensorflow" else [])
        procs[backend] = subprocess.Popen(args, env=env, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True)
    out = {}
    for backend, proc in procs.items():
        log, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{backend} worker failed:\n{log[-4000:]}"
        out[backend] = dict(np.load(folder / f"{backend}.npz"))
    out["folder"] = folder  # the JAX worker's m.keras and d.npz
    return out


@pytest.mark.parametrize("backend", PORTABLE)
def test_fit_is_measured_every_step_and_trains_as_without(measured, backend):
    r = measured[backend]
    assert str(r["monitor_class"]) == "PortableMonitor"
    assert bool(r["same_weights"]), "the monitored fit's weights differ from plain fit's"
    np.testing.assert_array_equal(r["step"], np.arange(1, 9))
    assert r["finite"].all() and not r["skipped"].any()
    assert np.isfinite(r["loss"]).all() and (r["loss"] > 0).all()
    assert str(r["verdict"]) == "healthy"
    for name in ("grad_norm", "grad_norm_clipped", "var_grad_norm", "grad_elements"):  # every step
        assert np.isfinite(r[name]).all() and r[name].shape[0] == 8, name
    probes = np.isin(r["step"], [1, 4, 7])  # histogram_every 3: weights and updates there, as on TensorFlow
    for name in ("weight_norm", "update_ratio"):
        assert np.isfinite(r[name][probes]).all() and np.isnan(r[name][~probes]).all(), name
    assert r["var_grad_norm"].shape == (8, 1) and r["grad_elements"].shape == (8, 3)
    np.testing.assert_array_equal(r["grad_norm_clipped"], r["grad_norm"])  # SGD without clipping


@pytest.mark.parametrize("backend", PORTABLE)
def test_norms_agree_with_a_second_way(measured, backend):
    r = measured[backend]
    # the weights before step 1 are the initial ones: exact, against float64 numpy
    np.testing.assert_allclose(r["weight_norm"][0], r["kernels0"], rtol=1e-12)
    # plain SGD: the update is lr times the gradient the optimizer received
    update = r["update_ratio"][0] * r["weight_norm"][0]
    np.testing.assert_allclose(update / LR, r["grad_norm"][0], rtol=1e-5)
    # a kernel of float32 denormals (~1e-40), read in the compiled step: exact
    np.testing.assert_allclose(r["tiny_weight_norm"], r["tiny_expected"], rtol=1e-12)
    assert 1e-41 < r["tiny_expected"] < 1e-38
    # one vector scaled over float32's range, 1e-44 ... 1e38, in the backend's compiled function
    np.testing.assert_allclose(r["exact"][:, 1], r["exact"][:, 0], rtol=1e-13)
    # and its log10|g| histograms (denormals in their bins, zeros apart), against float64 numpy
    np.testing.assert_array_equal(r["hist_got"], r["hist_want"])
    assert r["hist_want"][0, :100].sum() > 0 and r["hist_want"][:, -1].min() == 6


def test_the_same_weights_and_batches_give_the_same_norms_on_every_backend(measured):
    tf = measured["tensorflow"]
    for backend in PORTABLE:
        r = measured[backend]
        np.testing.assert_array_equal(r["initial"], tf["initial"])
        for name in ("grad_norm", "var_grad_norm", "loss"):
            np.testing.assert_allclose(r[name], tf[name], rtol=1e-4, err_msg=f"{backend} {name}")
        np.testing.assert_allclose(r["grad_norm"][0], tf["grad_norm"][0], rtol=1e-5)
        np.testing.assert_allclose(r["grad_elements"], tf["grad_elements"], rtol=1e-4, atol=1e-7)
        # weights and updates on the probe steps (NaN between, on every backend)
        np.testing.assert_allclose(r["weight_norm"][0], tf["weight_norm"][0], rtol=1e-12)
        np.testing.assert_allclose(r["weight_norm"], tf["weight_norm"], rtol=1e-5)
        np.testing.assert_allclose(r["update_ratio"], tf["update_ratio"], rtol=1e-4)
        # the probe steps' gradient histograms (histogram_every 3: steps 1, 4, 7)
        np.testing.assert_array_equal(r["hist_step"], [1, 4, 7])
        np.testing.assert_array_equal(r["hist_step"], tf["hist_step"])
        np.testing.assert_array_equal(r["hist_counts"][0], tf["hist_counts"][0])
        np.testing.assert_array_equal(r["hist_counts"].sum(axis=2), tf["hist_counts"].sum(axis=2))
        assert str(r["verdict"]) == str(tf["verdict"])


def test_what_a_backend_does_not_measure_is_named_once(measured):
    for backend in PORTABLE:
        r = measured[backend]
        names = list(r["skipped_names"])
        assert "activation statistics" in names and "gradient histograms" not in names
        warned = list(r["warned"])
        assert len(warned) == len(names) and len(set(warned)) == len(warned)
        assert all(backend in w and "not measured" in w for w in warned)
        # the records are TensorFlow's, less what the skipped activation statistics give
        tf_only = set(measured["tensorflow"]["memory_keys"]) - set(r["memory_keys"])
        assert tf_only and all(k.startswith("saturated_fraction/") for k in tf_only)
        assert set(r["memory_keys"]) <= set(measured["tensorflow"]["memory_keys"])
        assert "must be a whole number >= 1" in str(r["bad_input"])


def test_records_reach_mlflow_as_on_tensorflow(measured):
    for backend in PORTABLE:
        r = measured[backend]
        keys = set(r["mlflow_keys"])
        assert {"zoo/log10_grad_norm/d1", "zoo/log10_grad_norm/d2", "zoo/2 learning/loss",
                "zoo/health/flow_min"} <= keys, backend
        assert str(r["mlflow_verdict"]) == "healthy"
        assert {"images", "plots", "stats"} <= set(r["mlflow_artifacts"]), r["mlflow_artifacts"]  # histograms: images
    assert set(measured["jax"]["mlflow_keys"]) == set(measured["torch"]["mlflow_keys"])


@pytest.mark.parametrize("backend", PORTABLE)
def test_mixed_precision_gradients_are_unscaled(measured, backend):
    r = measured[backend]
    assert str(r["mixed_optimizer"]) == "LossScaleOptimizer" and not r["mixed_skipped"].any()
    # the first step's gradient as in float32 (to float16's precision), not times the loss scale
    np.testing.assert_allclose(r["mixed_grad_norm"][0], r["grad_norm"][0], rtol=2e-3)


def test_jax_keeps_every_step_of_several_steps_a_call(measured):
    r = measured["jax"]
    np.testing.assert_array_equal(r["spe_steps"], np.arange(1, 9))
    assert bool(r["spe_same"])
    np.testing.assert_allclose(r["spe_grad_norm"], r["grad_norm"], rtol=1e-6)


@pytest.mark.parametrize("backend", PORTABLE)
def test_a_custom_loop_is_measured_and_trains_as_without(measured, backend):
    r = measured[backend]  # JAX: stateless_apply in the user's jitted step; PyTorch: optimizer.apply
    assert bool(r["loop_same"]), "the monitored loop's weights differ from the same loop's without it"
    np.testing.assert_array_equal(r["loop_step"], np.arange(1, 5))
    np.testing.assert_allclose(r["loop_grad_norm"], r["grad_norm"][:4], rtol=1e-6)  # fit's first 4 steps
    np.testing.assert_array_equal(r["loop_hist_step"], [1, 4])  # histogram_every 3, as in fit
    probes = np.isin(r["loop_step"], [1, 4])
    np.testing.assert_allclose(r["loop_weight_norm"][probes], r["weight_norm"][:4][probes], rtol=1e-6)
    assert np.isnan(r["loop_weight_norm"][~probes]).all()


def test_a_jax_loop_the_monitor_cannot_see_is_named_at_finish(measured):
    said = list(measured["jax"]["unseen_warning"])  # an eager optimizer.apply
    assert len(said) == 1 and "stateless_apply in a step traced after attach" in said[0], said


def test_diagnose_compare_and_observe_say_which_backend_they_need(measured):
    for backend in PORTABLE:
        said = list(measured[backend]["tensorflow_only"])
        assert len(said) == 4, said
        assert all(f"runs {backend!r}" in s and "TensorFlow backend only" in s for s in said[:2]), said
        assert all(s.startswith("GradientMonitor.observe is TensorFlow's only; on " + backend) for s in said[2:]), said
        assert all("\n" not in s for s in said)
    # the command loads a .keras file (saved on JAX by the worker) on TensorFlow whatever KERAS_BACKEND says
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([str(Path(sys.executable).with_name("zoo-diagnose")), "m.keras", "--data", "d.npz"],
                          cwd=measured["folder"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    assert "runs on Keras' TensorFlow backend (KERAS_BACKEND=jax" in done.stderr
    assert "# Diagnosis of m" in done.stdout


@pytest.mark.parametrize("backend", PORTABLE)
def test_a_train_step_of_the_users_own_as_keras_guide_writes_it(measured, backend):
    r = measured[backend]  # JAX: stateless_apply in its own step; PyTorch: zero_grad, backward, apply
    assert bool(r["own_same"]), "the monitored fit of the subclass's own train_step differs from plain fit's"
    np.testing.assert_array_equal(r["own_step"], np.arange(1, 5))
    np.testing.assert_allclose(r["own_grad_norm"], r["grad_norm"][:4], rtol=1e-6)  # Keras' own step's gradients
    said = [line for line in r["own_said"] if "train_step is its own" in line]  # one line, as on TensorFlow
    assert len(said) == 1 and "GuideStep.train_step is its own; its per-step loss is" in said[0], list(r["own_said"])


@pytest.mark.parametrize("backend", PORTABLE)
def test_an_optimizer_of_a_part_of_the_model_is_measured_by_variable(measured, backend):
    """Built on the head only, the optimizer's lists are the head's: on JAX the monitor read
    them by position in the model's (IndexError inside the user's jitted step)."""
    r = measured[backend]
    assert bool(r["part_same"])
    np.testing.assert_array_equal(r["part_step"], [1, 2, 3])
    assert (r["part_grad_norm"][:, 0] == 0).all()  # d1 gets no update: no gradient, as on TensorFlow
    np.testing.assert_allclose(r["part_grad_norm"][0, 1], r["grad_norm"][0, 1], rtol=1e-6)  # d2's: fit's step 1
    assert np.isfinite(r["part_weight_norm"][[0, 2], 1]).all()  # probe steps 1, 3 (histogram_every 2)
    if backend == "jax":  # d1's weights are not in the step's lists: not read
        assert np.isnan(r["part_weight_norm"][:, 0]).all()


@pytest.mark.parametrize("backend", PORTABLE)
def test_a_loss_scalers_skipped_steps_are_counted_not_judged(measured, backend):
    r = measured[backend]
    np.testing.assert_array_equal(r["skips30"], [True, True, False, False])
    assert str(r["skips30_verdict"]) == "healthy" and "2 skipped by the loss scaler" in str(r["skips30_line"])
    # every step skipped: said so (judge_run raised KeyError 'diverged_step' at fit's end, on every backend)
    assert r["skips1000"].all() and str(r["skips1000_verdict"]) == "diverged"
    assert "the loss scaler skipped all 4" in str(r["skips1000_line"])


def test_a_negative_loss_is_never_learning_on_any_backend(measured):
    """A loss written as minus something, against a baseline > 0: was "learning (-0.151×)" on all three."""
    for backend in BACKENDS:
        r = measured[backend]
        assert r["negative_loss"][-1] < 0, backend
        assert str(r["negative_progress"]) == "ill-posed", (backend, str(r["negative_line"]))
        ratio = np.mean(r["negative_loss"]) / 0.5  # one epoch: the last epoch's mean loss over the baseline
        assert f"last epoch's training loss below 0, {ratio:.3g}× the baseline" in str(r["negative_line"]), backend


def test_an_output_without_a_loss_is_measured_on_every_backend(measured):
    """Its kernel gets no gradient (None on TensorFlow and PyTorch, zeros from JAX): TensorFlow's
    monitor crashed the user's fit on it (ValueError: None values in the probe step's histograms)."""
    for backend in BACKENDS:
        r = measured[backend]
        assert r["unused_grad_norm"].shape == (4, 3) and (r["unused_grad_norm"][:, 2] == 0).all(), backend
        assert (r["unused_grad_norm"][:, :2] > 0).all(), backend
        np.testing.assert_array_equal(r["unused_zeros"][:, 2], [16], err_msg=backend)  # its 8x2 kernel: exact zeros
        np.testing.assert_array_equal(r["unused_counts"][:, 2], [0], err_msg=backend)
        said = list(r["unused_said"])  # the verdict reads its zeros as vanished: said once, naming it
        assert len(said) == 1 and said[0].startswith("GradientMonitor: b had a gradient of exactly 0"), (backend, said)
        assert "model.get_layer('b').trainable = False" in said[0], said
