"""The checks of tests/test_backends.py on one Keras backend (KERAS_BACKEND is fixed per
process): ``python tests/backends_worker.py OUT.npz [mlflow]`` runs them and saves what they
measured; the test reads it and compares the backends."""
from __future__ import annotations

import contextlib
import io
import sys
import warnings

import keras
import numpy as np

import zoo

BACKEND = keras.backend.backend()
LR = 0.1
SCALES = (1e-44, 1e-40, 1e-30, 1e-20, 1.0, 1e20, 1e38)  # float32's range, denormals included


def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((32, 5)).astype("float32"), rng.integers(0, 3, 32)


def model(optimizer=None, tiny_kernel=False):
    """A tiny MLP with the same initial weights on every backend."""
    m = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh", name="d1"),
                          keras.layers.Dense(3, name="d2")], name="mlp")
    rng = np.random.default_rng(1)
    weights = [(rng.standard_normal(w.shape) * 0.5).astype("float32") for w in m.get_weights()]
    if tiny_kernel:  # d1's kernel in float32's denormals
        weights[0] = (np.sign(weights[0]) * np.float32(1e-40) * np.arange(1, weights[0].size + 1, dtype=np.float32)
                      .reshape(weights[0].shape) / weights[0].size).astype("float32")
    m.set_weights(weights)
    m.compile(optimizer or keras.optimizers.SGD(LR), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return m


def fit(m, monitor=None, epochs=2):
    x, y = data()
    m.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0, callbacks=[monitor] if monitor else [])
    return [np.asarray(w) for w in m.get_weights()]


def exact_norms() -> np.ndarray:
    """[len(SCALES), 2]: (float64 numpy, the backend's norm inside its compiled step) of one
    vector at each scale."""
    from zoo.gradient_monitor.backends import exact

    def norm(t):
        with exact.wide():
            return exact.norm(t)
    if BACKEND == "jax":
        import jax
        norm = jax.jit(norm)
    base = np.random.default_rng(2).standard_normal(37)
    out = []
    for scale in SCALES:
        x = (base * scale).astype(np.float32)
        out.append((np.sqrt(np.sum(x.astype(np.float64) ** 2)),
                    float(np.asarray(zoo_to_host(norm(keras.ops.convert_to_tensor(x)))))))
    return np.array(out)


def exact_histograms() -> tuple[np.ndarray, np.ndarray]:
    """(the backend's, float64 numpy's) log10|g| histograms of one vector at each scale of
    SCALES, with exact zeros, in the backend's compiled function."""
    from zoo.gradient_monitor.backends import exact
    from zoo.instruments.histograms import HIST_BINS, HIST_RANGE

    def histograms(*ts):
        with exact.wide():
            return exact.log_histograms(list(ts), HIST_BINS, *HIST_RANGE)
    if BACKEND == "jax":
        import jax
        histograms = jax.jit(histograms)
    base = np.random.default_rng(2).standard_normal(37)
    base[::7] = 0.0
    xs = [(base * scale).astype(np.float32) for scale in SCALES]
    got = zoo_to_host(histograms(*[keras.ops.convert_to_tensor(x) for x in xs]))
    lo, hi = HIST_RANGE
    want = np.zeros((len(xs), HIST_BINS + 1), np.int64)
    for row, x in zip(want, xs):
        a = np.abs(x.astype(np.float64))
        bins = np.clip(np.floor((np.log10(a[a > 0]) - lo) / ((hi - lo) / HIST_BINS)).astype(int), 0, HIST_BINS - 1)
        np.add.at(row, bins, 1)
        row[HIST_BINS] = np.sum(a == 0)
    return np.asarray(got), want


def zoo_to_host(t):
    from zoo.gradient_monitor.backends.measure import to_host
    return to_host(t)


def custom_loop(monitored: bool, steps: int = 4):
    """``steps`` steps of a custom loop on the first batches, as Keras' guides write one for
    the backend (JAX: ``stateless_apply`` in a jitted step; PyTorch: ``optimizer.apply``), with
    or without ``attach``: (the weights after, the monitor or None)."""
    m = model()
    x, y = data()
    monitor = None
    if monitored:
        monitor = zoo.GradientMonitor(mlflow=False, verbose=False, histogram_every=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert monitor.attach(m)
    batches = [(x[8 * i:8 * (i + 1)], y[8 * i:8 * (i + 1)]) for i in range(steps)]
    if BACKEND == "jax":
        import jax

        loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

        def compute(trainable, non_trainable, xb, yb):
            y_pred, non_trainable = m.stateless_call(trainable, non_trainable, xb, training=True)
            return loss_fn(yb, y_pred), non_trainable

        grad_fn = jax.value_and_grad(compute, has_aux=True)

        @jax.jit
        def step(state, xb, yb):
            trainable, non_trainable, optimizer_variables = state
            (_, non_trainable), grads = grad_fn(trainable, non_trainable, xb, yb)
            trainable, optimizer_variables = m.optimizer.stateless_apply(optimizer_variables, grads, trainable)
            return trainable, non_trainable, optimizer_variables

        m.optimizer.build(m.trainable_variables)
        state = tuple([v.value for v in vs] for vs in (m.trainable_variables, m.non_trainable_variables,
                                                          m.optimizer.variables))
        for xb, yb in batches:
            state = step(state, xb, yb)
        weights = [np.asarray(w) for w in state[0]]
    else:
        import torch

        for xb, yb in batches:
            xb, yb = keras.ops.convert_to_tensor(xb), keras.ops.convert_to_tensor(yb)
            m.zero_grad()
            loss = m.compute_loss(x=xb, y=yb, y_pred=m(xb, training=True))
            loss.backward()
            with torch.no_grad():
                m.optimizer.apply([v.value.grad for v in m.trainable_weights], m.trainable_weights)
        weights = [np.asarray(w) for w in m.get_weights()]
    if monitor is not None:
        monitor.detach()
        monitor.finish()
    return weights, monitor


class GuideStep(keras.Model):
    """A subclass with its own ``train_step`` as Keras' guide "Customizing what happens in fit()"
    writes it for the backend (JAX: stateless, ``compute_loss_and_updates`` and
    ``optimizer.stateless_apply``; PyTorch: ``zero_grad``, ``backward``, ``optimizer.apply``)."""

    def compute_loss_and_updates(self, trainable, non_trainable, x, y, training=False):
        y_pred, non_trainable = self.stateless_call(trainable, non_trainable, x, training=training)
        return self.compute_loss(x, y, y_pred), (y_pred, non_trainable)

    def train_step(self, *args):
        return self._jax_step(*args) if BACKEND == "jax" else self._torch_step(*args)

    def _jax_step(self, state, data):
        import jax

        trainable, non_trainable, optimizer_variables, metrics_variables = state
        x, y = data
        grad_fn = jax.value_and_grad(self.compute_loss_and_updates, has_aux=True)
        (loss, (y_pred, non_trainable)), grads = grad_fn(trainable, non_trainable, x, y, training=True)
        trainable, optimizer_variables = self.optimizer.stateless_apply(optimizer_variables, grads, trainable)
        new_metrics, logs = [], {}
        for metric in self.metrics:
            this = metrics_variables[len(new_metrics):len(new_metrics) + len(metric.variables)]
            this = (metric.stateless_update_state(this, loss) if metric.name == "loss"
                    else metric.stateless_update_state(this, y, y_pred))
            logs[metric.name] = metric.stateless_result(this)
            new_metrics += this
        return logs, (trainable, non_trainable, optimizer_variables, new_metrics)

    def _torch_step(self, data):
        import torch

        x, y = data
        self.zero_grad()
        y_pred = self(x, training=True)
        loss = self.compute_loss(y=y, y_pred=y_pred)
        loss.backward()
        weights = list(self.trainable_weights)
        with torch.no_grad():
            self.optimizer.apply([v.value.grad for v in weights], weights)
        for metric in self.metrics:
            metric.update_state(loss) if metric.name == "loss" else metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}


def guide_step_model():
    """model()'s MLP and initial weights as a GuideStep subclass."""
    inputs = keras.Input((5,))
    m = GuideStep(inputs, keras.layers.Dense(3, name="d2")(keras.layers.Dense(8, activation="tanh", name="d1")(inputs)))
    m.set_weights(model().get_weights())
    m.compile(keras.optimizers.SGD(LR), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return m


def head_only_loop(monitored: bool, steps: int = 3):
    """A custom loop whose optimizer is built on d2's variables only (a fine-tuned head), as
    Keras' guide writes the loop for the backend: (the weights after, the monitor or None)."""
    m, x, y = model(), *data()
    head, body = m.get_layer("d2").trainable_variables, m.get_layer("d1").trainable_variables
    optimizer = keras.optimizers.SGD(LR)
    optimizer.build(head)
    monitor = zoo.GradientMonitor(mlflow=False, verbose=False, histogram_every=2) if monitored else None
    if monitor is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert monitor.attach(m, optimizer=optimizer)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    batches = [(x[8 * i:8 * (i + 1)], y[8 * i:8 * (i + 1)]) for i in range(steps)]
    if BACKEND == "jax":
        import jax

        def compute(head_values, body_values, xb, yb):
            return loss_fn(yb, m.stateless_call(body_values + head_values, [], xb, training=True)[0])

        @jax.jit
        def step(head_values, optimizer_variables, body_values, xb, yb):
            grads = jax.grad(compute)(head_values, body_values, xb, yb)
            return optimizer.stateless_apply(optimizer_variables, grads, head_values)

        values, state = [v.value for v in head], [v.value for v in optimizer.variables]
        for xb, yb in batches:
            values, state = step(values, state, [v.value for v in body], xb, yb)
        weights = [np.asarray(v) for v in body] + [np.asarray(v) for v in values]
    else:
        import torch

        for xb, yb in batches:
            m.zero_grad()
            loss_fn(keras.ops.convert_to_tensor(yb), m(keras.ops.convert_to_tensor(xb), training=True)).backward()
            with torch.no_grad():
                optimizer.apply([v.value.grad for v in head], head)
        weights = [np.asarray(w) for w in m.get_weights()]
    if monitor is not None:
        monitor.detach()
        monitor.finish()
    return weights, monitor


def main(out: str, with_mlflow: bool) -> None:
    result = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monitor = zoo.GradientMonitor(mlflow=False, verbose=False, variables="d1/bias", elements="d2/bias",
                                      histogram_every=3)
        monitored = fit(model(), monitor)
    result["warned"] = np.array([str(w.message) for w in caught if "GradientMonitor" in str(w.message)])
    plain = fit(model())
    stats = monitor.stats
    result["same_weights"] = np.array(all(np.array_equal(a, b) for a, b in zip(monitored, plain)))
    result["initial"] = np.concatenate([w.ravel() for w in model().get_weights()])
    for name in ("step", "loss", "finite", "skipped", "grad_norm", "grad_norm_clipped", "weight_norm",
                 "update_ratio", "var_grad_norm", "grad_elements", "hist_step", "hist_counts", "hist_zeros"):
        result[name] = getattr(stats, name)
    result["kernels0"] = np.array([np.linalg.norm(model().get_weights()[i].astype(np.float64)) for i in (0, 2)])
    result["verdict"] = np.array(monitor.verdict.label)
    result["skipped_names"] = np.array(list(monitor.skipped))
    result["memory_keys"] = np.array(sorted(monitor.memory.metrics))
    result["monitor_class"] = np.array(type(monitor).__name__)

    tiny = zoo.GradientMonitor(mlflow=False, verbose=False)  # a kernel of denormals, read exactly
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(model(tiny_kernel=True), tiny, epochs=1)
    result["tiny_weight_norm"] = tiny.stats.weight_norm[0, 0]
    result["tiny_expected"] = np.linalg.norm(model(tiny_kernel=True).get_weights()[0].astype(np.float64))

    inputs = keras.Input((5,))  # a second output without a loss: its kernel gets no gradient
    hidden = keras.layers.Dense(8, activation="tanh", name="d1")(inputs)
    unused = keras.Model(inputs, {"a": keras.layers.Dense(3, name="d2")(hidden), "b": keras.layers.Dense(2, name="b")(hidden)})
    unused.compile(keras.optimizers.SGD(LR), {"a": keras.losses.SparseCategoricalCrossentropy(from_logits=True)})
    headless = zoo.GradientMonitor(mlflow=False, verbose=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(unused, headless, epochs=1)
    result["unused_said"] = np.array([str(w.message) for w in caught if "exactly 0 at every step" in str(w.message)])
    result["unused_grad_norm"], result["unused_zeros"] = headless.stats.grad_norm, headless.stats.hist_zeros
    result["unused_counts"] = headless.stats.hist_counts.sum(axis=2)

    negative = model()  # a loss written as minus something: never "learning", on every backend
    negative.compile(keras.optimizers.SGD(LR), lambda y, p: -keras.ops.mean(keras.ops.tanh(p)))
    below = zoo.GradientMonitor(mlflow=False, verbose=False, baseline=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit(negative, below, epochs=1)
    result["negative_loss"], result["negative_progress"] = below.stats.loss, np.array(below.progress[0])
    result["negative_line"] = np.array(below.summary_line())

    if BACKEND != "tensorflow":  # mixed precision: a LossScaleOptimizer's scaled gradients, unscaled
        keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            mixed = zoo.GradientMonitor(mlflow=False, verbose=False)
            m = model()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit(m, mixed, epochs=1)
            result["mixed_optimizer"] = np.array(type(m.optimizer).__name__)
            result["mixed_grad_norm"], result["mixed_skipped"] = mixed.stats.grad_norm, mixed.stats.skipped
        finally:
            keras.mixed_precision.set_global_policy("float32")
        result["exact"] = exact_norms()
        result["hist_got"], result["hist_want"] = exact_histograms()
    if BACKEND == "jax":  # several steps a call: every step recorded, training as without
        every = zoo.GradientMonitor(mlflow=False, verbose=False)
        m = model()
        m.compile(keras.optimizers.SGD(LR), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  steps_per_execution=3)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            weights = fit(m, every)
        result["spe_steps"] = every.stats.step
        result["spe_same"] = np.array(all(np.array_equal(a, b) for a, b in zip(weights, plain)))
        result["spe_grad_norm"] = every.stats.grad_norm
    try:
        zoo.GradientMonitor(histogram_every=0)
        result["bad_input"] = np.array("accepted")
    except ValueError as err:
        result["bad_input"] = np.array(str(err))
    if BACKEND != "tensorflow":  # zoo.diagnose and zoo.compare say which backend they need
        x, y = data()
        for call in (lambda: zoo.diagnose(model(), (x, y)), lambda: zoo.compare(model(), model(), (x, y, "classification"))):
            try:
                call()
                result.setdefault("tensorflow_only", []).append("ran")
            except zoo.InputError as err:
                result.setdefault("tensorflow_only", []).append(str(err))
        for call in (lambda m: m.observe([x]), lambda m: m.observe([x], loss=1.0)):  # with or without loss=
            try:
                call(zoo.GradientMonitor(mlflow=False))
                result["tensorflow_only"].append("ran")
            except NotImplementedError as err:
                result["tensorflow_only"].append(str(err))
        result["tensorflow_only"] = np.array(result["tensorflow_only"])
    if BACKEND != "tensorflow":  # a custom loop after attach: measured, trained as without
        weights, loop = custom_loop(True)
        result["loop_same"] = np.array(all(np.array_equal(a, b) for a, b in zip(weights, custom_loop(False)[0])))
        for name in ("step", "grad_norm", "weight_norm", "hist_step"):
            result[f"loop_{name}"] = getattr(loop.stats, name)
    if BACKEND != "tensorflow":  # a subclass's own train_step as Keras' guide writes it
        own, said = zoo.GradientMonitor(mlflow=False, verbose=True), io.StringIO()
        with warnings.catch_warnings(), contextlib.redirect_stdout(said):
            warnings.simplefilter("ignore")
            weights = fit(guide_step_model(), own, epochs=1)
        result["own_said"] = np.array(said.getvalue().splitlines())
        result["own_same"] = np.array(all(np.array_equal(a, b) for a, b in zip(weights, fit(guide_step_model(), epochs=1))))
        result["own_step"], result["own_grad_norm"] = own.stats.step, own.stats.grad_norm
        # an optimizer built on the head only: measured by variable, not by position in the model
        weights, part = head_only_loop(True)
        result["part_same"] = np.array(all(np.array_equal(a, b) for a, b in zip(weights, head_only_loop(False)[0])))
        for name in ("step", "grad_norm", "weight_norm"):
            result[f"part_{name}"] = getattr(part.stats, name)
    if BACKEND != "tensorflow":  # mixed precision: inputs x f, d1's kernel / f (the same forward pass)
        keras.mixed_precision.set_global_policy("mixed_float16")  # the float16 backward pass overflows at
        try:  # the first loss scales: x 30 the first 2 of 4 steps are skipped, x 1000 all 4
            for f in (30, 1000):
                skips, m = zoo.GradientMonitor(mlflow=False, verbose=False), model()
                m.set_weights([w / f if i == 0 else w for i, w in enumerate(m.get_weights())])
                x, y = data()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    m.fit(x * f, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[skips])
                result[f"skips{f}"], result[f"skips{f}_verdict"] = skips.stats.skipped, np.array(skips.verdict.label)
                result[f"skips{f}_line"] = np.array(skips.summary_line())
        finally:
            keras.mixed_precision.set_global_policy("float32")
    if BACKEND == "jax":  # a .keras file saved on JAX, for zoo-diagnose (the test runs it)
        saved = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
        saved.compile("sgd", "mse")
        saved.save("m.keras")
        np.savez("d.npz", x=np.ones((16, 5), "float32"), y=np.ones((16, 3), "float32"))
    if BACKEND == "jax":  # a loop the monitor cannot see (eager optimizer.apply): said at finish
        m, unseen = model(), zoo.GradientMonitor(mlflow=False, verbose=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            unseen.attach(m)
            m.optimizer.apply([keras.ops.ones(v.shape) for v in m.trainable_variables], m.trainable_variables)
            unseen.finish()
        result["unseen_warning"] = np.array([str(w.message) for w in caught if "no step" in str(w.message)])
    if with_mlflow:
        import mlflow

        mlflow.set_tracking_uri(f"sqlite:///{out}.mlflow.db")
        with mlflow.start_run() as run, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit(model(), zoo.GradientMonitor(mlflow=True, verbose=False), epochs=1)
        got = mlflow.MlflowClient().get_run(run.info.run_id)
        result["mlflow_keys"] = np.array(sorted(got.data.metrics))
        result["mlflow_verdict"] = np.array(got.data.tags.get("zoo.verdict", ""))
        result["mlflow_artifacts"] = np.array(sorted(a.path for a in mlflow.MlflowClient().list_artifacts(
            run.info.run_id)))
    np.savez(out, **result)


if __name__ == "__main__":
    main(sys.argv[1], "mlflow" in sys.argv[2:])
