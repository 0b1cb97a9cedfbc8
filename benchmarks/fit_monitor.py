"""What does ``zoo.GradientMonitor`` cost a user's ``model.fit``? Side by side, in one process.

Six user-style models (a 20x64 ReLU MLP, a small CNN on 16x16 images, a 1-layer LSTM on
sequences of 50 steps, a 2-block Transformer encoder of Keras' MultiHeadAttention on 16 tokens,
a subclass with its own train_step (global-norm clipping, tensorflow/tensorflow#45146) and the
MLP under mixed_float16; synthetic data) trained four ways from the same initial weights:
  fit                    plain ``model.fit``
  fit + monitor (memory) ``callbacks=[zoo.GradientMonitor(mlflow=False)]``
  fit + monitor (MLflow) the same inside an active MLflow run on a sqlite store, its final
                         flush, plots and raw file included
  fit + TensorBoard      ``keras.callbacks.TensorBoard(histogram_freq=1)``: weight histograms
                         once an epoch, no gradients (what Keras offers today)
Each way is one whole ``fit`` call (tracing included, as a user waits for it) of --epochs epochs.
Rounds are interleaved; each ratio is the median over rounds of the way's time over plain
fit's in the same round. ``histogram_every`` is the monitor's default, 10.

Besides the whole fit, each way's time is cut in three, from epoch-end timestamps (a timing
callback that every way has): the first epoch (tracing the train step is most of it), the
steady epochs (the median of the others: the per-step cost) and the end (after the last
epoch: the monitor's final flush, verdict, plots and raw file). A short fit is dominated by
the first and the last; a long one by the steady part.

The steady epochs of whole fits drift with this machine by tens of percent, so the train step
is also timed alone: one model plain and one under the monitor (memory), both traced, called
with ``train_on_batch`` on the same batch in 20 interleaved blocks of 30 calls; "step ×" is the
median ratio of the blocks (the rows are collected at the end, outside the timing).

    python benchmarks/fit_monitor.py [--rounds 3] [--epochs 5] [--only NAME ...]

On each Keras backend (KERAS_BACKEND is set before Keras loads), plain fit against fit + monitor
(memory) on the MLP, the CNN and the LSTM, with the backend's defaults (benchmarks/fit_backends.py):

    python benchmarks/fit_monitor.py --backend jax|torch|tensorflow [--rounds 3] [--epochs 3]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time

import numpy as np

STEPS_PER_EPOCH = 60
BATCH = 64


def models():
    import keras

    def mlp():
        return keras.Sequential([keras.Input((64,)), *[keras.layers.Dense(64, activation="relu") for _ in range(19)],
                                 keras.layers.Dense(10)])

    def cnn():
        return keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(16, 3, activation="relu"),
                                 keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
                                 keras.layers.Conv2D(32, 3, activation="relu"),
                                 keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])

    def lstm():
        return keras.Sequential([keras.Input((50, 8)), keras.layers.LSTM(32), keras.layers.Dense(10)])

    def transformer():
        inputs = keras.Input((16, 32))
        h = keras.layers.Dense(64)(inputs)
        for _ in range(2):  # Pre-LN blocks, as users write them with Keras' own layers
            a = keras.layers.LayerNormalization()(h)
            h = h + keras.layers.MultiHeadAttention(num_heads=4, key_dim=16)(a, a)
            f = keras.layers.LayerNormalization()(h)
            h = h + keras.layers.Dense(64)(keras.layers.Dense(128, activation="gelu")(f))
        return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.GlobalAveragePooling1D()(h)))

    class ClippedStep(keras.Model):
        """Its own train_step: global-norm clipping before apply_gradients."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.loss_tracker = keras.metrics.Mean(name="loss")

        def train_step(self, data):
            import tensorflow as tf

            x, y, _ = keras.utils.unpack_x_y_sample_weight(data)  # train_on_batch passes (x, y, None)
            with tf.GradientTape() as tape:
                loss = self.compute_loss(y=y, y_pred=self(x, training=True))
            grads, _ = tf.clip_by_global_norm(tape.gradient(loss, self.trainable_variables), 1.0)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
            self.loss_tracker.update_state(loss)
            return {"loss": self.loss_tracker.result()}

        @property
        def metrics(self):
            return [self.loss_tracker]

    def own_step():
        inputs = keras.Input((64,))
        h = inputs
        for _ in range(8):
            h = keras.layers.Dense(64, activation="relu")(h)
        return ClippedStep(inputs, keras.layers.Dense(10)(h))

    return {"mlp 20x64": (mlp, (64,), None), "cnn 3 conv": (cnn, (16, 16, 1), None),
            "lstm T=50": (lstm, (50, 8), None), "transformer 2 blocks": (transformer, (16, 32), None),
            "own train_step, 9x64": (own_step, (64,), None), "mlp 20x64, mixed_float16": (mlp, (64,), "mixed_float16")}


def policy(name):
    """A context in which ``name`` (a Keras dtype policy, or None) is the global policy."""
    import contextlib

    import keras

    @contextlib.contextmanager
    def scope():
        before = keras.mixed_precision.global_policy().name
        keras.mixed_precision.set_global_policy(name or before)
        try:
            yield
        finally:
            keras.mixed_precision.set_global_policy(before)
    return scope()


def epoch_clock():
    """A Keras callback keeping epoch-end timestamps in ``.ends`` (made here, so that --help
    does not import Keras)."""
    import keras

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.ends = []

        def on_epoch_end(self, epoch, logs=None):
            self.ends.append(time.perf_counter())

    return Clock()


def one_fit(build, shape, way: str, epochs: int, weights, dtype=None) -> dict[str, float]:
    """One whole fit: {"total", "first", "steady", "end"} in seconds (see the module)."""
    with policy(dtype):
        return _one_fit(build, shape, way, epochs, weights)


def _one_fit(build, shape, way, epochs, weights):
    import keras

    import zoo

    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS_PER_EPOCH * BATCH, *shape)).astype("float32")
    y = rng.integers(0, 10, size=len(x))
    model = build()
    model.set_weights(weights)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    clock = epoch_clock()
    with tempfile.TemporaryDirectory() as tmp:
        callbacks, run = [clock], None
        if way == "fit + TensorBoard(histogram_freq=1)":
            callbacks.append(keras.callbacks.TensorBoard(tmp, histogram_freq=1))
        elif way.startswith("fit + monitor"):
            mlflow_on = "MLflow" in way
            if mlflow_on:
                import mlflow

                mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
                mlflow.set_experiment("bench")
                run = mlflow.start_run()
            callbacks.append(zoo.GradientMonitor(mlflow=mlflow_on, verbose=False))
        start = time.perf_counter()
        model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=callbacks)
        stop = time.perf_counter()
        if run is not None:
            import mlflow

            mlflow.end_run()
    ends = np.array(clock.ends)
    steady = float(np.median(np.diff(ends))) if len(ends) > 1 else math.nan
    return {"total": stop - start, "first": ends[0] - start, "steady": steady, "end": stop - ends[-1]}


def step_ratio(build, shape, weights, dtype=None, blocks: int = 20, calls: int = 30) -> tuple[float, float, float]:
    """(plain ms/step, monitored ms/step, median paired ratio) of the train step alone (an
    ordinary step: train_on_batch runs the function fit runs between probe steps)."""
    with policy(dtype):
        return _step_ratio(build, shape, weights, blocks, calls)


def _step_ratio(build, shape, weights, blocks, calls):
    import keras

    import zoo

    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, *shape)).astype("float32")
    y = rng.integers(0, 10, size=BATCH)
    steps, monitors = {}, []
    for way in ("plain", "monitor"):
        model = build()
        model.set_weights(weights)
        model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        model.train_on_batch(x, y)  # builds the optimizer
        if way == "monitor":
            monitor = zoo.GradientMonitor(mlflow=False, verbose=False, capacity=blocks * calls + 10)
            monitor.set_model(model)
            monitor.on_train_begin()  # as fit does: the instrumented train function
            monitors.append(monitor)
        model.train_on_batch(x, y)  # traced
        steps[way] = model
    times = {way: [] for way in steps}
    for _ in range(blocks):
        for way, model in steps.items():
            start = time.perf_counter()
            for _ in range(calls):
                model.train_on_batch(x, y)
            times[way].append((time.perf_counter() - start) / calls * 1000)
    monitors[0].collect()
    ratio = statistics.median(a / b for a, b in zip(times["monitor"], times["plain"]))
    return statistics.median(times["plain"]), statistics.median(times["monitor"]), ratio


WAYS = ("fit", "fit + monitor (memory)", "fit + monitor (MLflow)", "fit + TensorBoard(histogram_freq=1)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--only", nargs="*", default=None, help="model names (as the table prints them)")
    parser.add_argument("--backend", choices=("jax", "torch", "tensorflow"), default=None,
                        help="the MLP, CNN and LSTM, plain fit against fit + monitor on this Keras backend")
    args = parser.parse_args()
    if args.backend is not None:
        os.environ["KERAS_BACKEND"] = args.backend  # before Keras is imported
        from fit_backends import run

        run(models, args.rounds, args.epochs)
        return
    import keras

    rows, steps_alone, apart = [], [], []
    for name, (build, shape, dtype) in models().items():
        if args.only and name not in args.only:
            continue
        keras.utils.set_random_seed(0)
        with policy(dtype):
            weights = build().get_weights()
        times = {way: [] for way in WAYS}
        for r in range(args.rounds):
            for way in WAYS:
                times[way].append(one_fit(build, shape, way, args.epochs, weights, dtype))
                print(f"  {name} round {r + 1}/{args.rounds} {way}: {times[way][-1]['total']:.2f}s", flush=True)
        step_plain, step_monitored, step_x = step_ratio(build, shape, weights, dtype)
        print(f"  {name} step alone: {step_plain:.2f} ms plain, {step_monitored:.2f} ms monitored", flush=True)
        steps_alone.append((name, step_plain, step_monitored, step_x))
        for way in WAYS:
            def ratio(part):
                return statistics.median(a[part] / b[part] for a, b in zip(times[way], times["fit"]))

            def median(part):
                return statistics.median(t[part] for t in times[way])

            def extra(part):
                return statistics.median(a[part] - b[part] for a, b in zip(times[way], times["fit"]))

            rows.append((name, way, median("total"), ratio("total"), median("first"), 1000 * median("steady") / STEPS_PER_EPOCH,
                         ratio("steady"), median("end")))
            if way.startswith("fit + monitor"):
                apart.append((name, way[len("fit + monitor ("):-1], ratio("steady"), step_x, extra("first"),
                              median("end"), ratio("total")))
    steps = STEPS_PER_EPOCH * args.epochs
    print(f"\n{steps} steps per fit ({args.epochs} epochs of {STEPS_PER_EPOCH}, batch {BATCH}), {args.rounds} "
          "interleaved rounds; ratio = median over rounds of (way / plain fit in the same round)\n")
    print("| model | way | fit s | × plain fit | first epoch s | steady ms/step | steady × plain | end s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, way, total, ratio_total, first, step_ms, ratio_steady, end in rows:
        print(f"| {name} | {way} | {total:.2f} | {ratio_total:.2f} | {first:.2f} | {step_ms:.2f} | {ratio_steady:.2f} | {end:.2f} |")
    print("\nThe monitor's costs apart: per step (steady epochs of fit, and the step alone) and once per fit "
          "(the first epoch's extra seconds over plain fit's, paired by round; the seconds after the last epoch)\n")
    print("| model | sink | steady step × plain | step alone × | first epoch +s | end of run s | whole fit × |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, sink, steady_x, alone_x, first_extra, end, total_x in apart:
        print(f"| {name} | {sink} | {steady_x:.2f} | {alone_x:.2f} | {first_extra:+.2f} | {end:.2f} | {total_x:.2f} |")
    print("\nThe train step alone (train_on_batch, 20 interleaved blocks of 30 calls, memory):\n")
    print("| model | plain ms/step | monitored ms/step | step × plain |\n|---|---:|---:|---:|")
    for name, plain, monitored, ratio in steps_alone:
        print(f"| {name} | {plain:.2f} | {monitored:.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
