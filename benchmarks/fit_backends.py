"""What does ``zoo.GradientMonitor`` cost ``model.fit`` on each Keras backend? Side by side, in
one process per backend (Keras' backend is fixed per process).

Three of benchmarks/fit_monitor.py's user-style models (a 20x64 ReLU MLP, a small CNN on 16x16
images, a 1-layer LSTM on sequences of 50 steps; synthetic data), trained two ways from the same
initial weights with the backend's defaults (JAX: jit_compile on; PyTorch: eager):
  fit            plain ``model.fit``
  fit + monitor  ``callbacks=[zoo.GradientMonitor(mlflow=False, verbose=False)]``
Rounds are interleaved; each ratio is the median over rounds of the monitored fit's time over
plain fit's in the same round: the whole fit (tracing and the monitor's end included) and its
steady epochs (the median epoch after the first: the per-step cost).

Run through benchmarks/fit_monitor.py, which sets KERAS_BACKEND before Keras loads:

    python benchmarks/fit_monitor.py --backend jax|torch|tensorflow [--rounds 3] [--epochs 3]
"""
from __future__ import annotations

import statistics
import time
import warnings

STEPS_PER_EPOCH = 60
BATCH = 64
MODELS = ("mlp 20x64", "cnn 3 conv", "lstm T=50")


def one_fit(build, shape, weights, epochs: int, monitored: bool) -> tuple[float, float]:
    """(whole fit, median steady epoch) in seconds."""
    import keras
    import numpy as np

    import zoo

    rng = np.random.default_rng(0)
    x = rng.standard_normal((STEPS_PER_EPOCH * BATCH, *shape)).astype("float32")
    y = rng.integers(0, 10, STEPS_PER_EPOCH * BATCH)
    model = build()
    model.set_weights(weights)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    ends = []
    clock = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: ends.append(time.perf_counter()))
    callbacks = [clock] + ([zoo.GradientMonitor(mlflow=False, verbose=False)] if monitored else [])
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the monitor names what it skips: once per fit
        model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks)
    total = time.perf_counter() - start
    steady = statistics.median(b - a for a, b in zip(ends, ends[1:])) if len(ends) > 1 else float("nan")
    return total, steady


def run(models, rounds: int, epochs: int) -> None:
    """Print the table for the Keras backend loaded (KERAS_BACKEND, set by the caller before
    Keras is imported); ``models``: benchmarks/fit_monitor.py's builders."""
    import keras

    builders = models()
    print(f"backend {keras.backend.backend()}, Keras {keras.__version__}; {rounds} rounds of "
          f"{epochs} epochs x {STEPS_PER_EPOCH} steps of {BATCH}")
    print(f"{'model':<12} {'fit s':>7} {'+monitor s':>11} {'fit x':>7} {'steady epoch x':>15}")
    for name in MODELS:
        build, shape, _ = builders[name]
        keras.utils.set_random_seed(0)
        weights = build().get_weights()
        totals, steadies, plain_times, monitored_times = [], [], [], []
        for _ in range(rounds):
            plain = one_fit(build, shape, weights, epochs, monitored=False)
            monitored = one_fit(build, shape, weights, epochs, monitored=True)
            plain_times.append(plain[0])
            monitored_times.append(monitored[0])
            totals.append(monitored[0] / plain[0])
            steadies.append(monitored[1] / plain[1])
        print(f"{name:<12} {statistics.median(plain_times):>7.2f} {statistics.median(monitored_times):>11.2f} "
              f"{statistics.median(totals):>7.2f} {statistics.median(steadies):>15.2f}")
