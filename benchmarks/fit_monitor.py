"""What does ``zoo.GradientMonitor`` cost a user's ``model.fit``? Side by side, in one process.

Three user-style models (a 20x64 ReLU MLP, a small CNN on 16x16 images, a 1-layer LSTM on
sequences of 50 steps; synthetic data) trained four ways from the same initial weights:
  fit                    plain ``model.fit``
  fit + monitor (memory) ``callbacks=[zoo.GradientMonitor(mlflow=False)]``
  fit + monitor (MLflow) the same inside an active MLflow run on a sqlite store, its final
                         flush, plots and raw file included
  fit + TensorBoard      ``keras.callbacks.TensorBoard(histogram_freq=1)``: weight histograms
                         once an epoch, no gradients (what Keras offers today)
Each way is one whole ``fit`` call (tracing included, as a user waits for it) of --epochs epochs.
Rounds are interleaved; each ratio is the median over rounds of the way's time over plain
fit's in the same round. ``histogram_every`` is the monitor's default, 10.

    python benchmarks/fit_monitor.py [--rounds 3] [--epochs 5]
"""
from __future__ import annotations

import argparse
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

    return {"mlp 20x64": (mlp, (64,)), "cnn 3 conv": (cnn, (16, 16, 1)), "lstm T=50": (lstm, (50, 8))}


def one_fit(build, shape, way: str, epochs: int, weights) -> float:
    import keras

    import zoo

    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS_PER_EPOCH * BATCH, *shape)).astype("float32")
    y = rng.integers(0, 10, size=len(x))
    model = build()
    model.set_weights(weights)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    with tempfile.TemporaryDirectory() as tmp:
        callbacks, run = [], None
        if way == "fit + TensorBoard(histogram_freq=1)":
            callbacks = [keras.callbacks.TensorBoard(tmp, histogram_freq=1)]
        elif way.startswith("fit + monitor"):
            mlflow_on = "MLflow" in way
            if mlflow_on:
                import mlflow

                mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
                mlflow.set_experiment("bench")
                run = mlflow.start_run()
            callbacks = [zoo.GradientMonitor(mlflow=mlflow_on, verbose=False)]
        start = time.perf_counter()
        model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=callbacks)
        seconds = time.perf_counter() - start
        if run is not None:
            import mlflow

            mlflow.end_run()
    return seconds


WAYS = ("fit", "fit + monitor (memory)", "fit + monitor (MLflow)", "fit + TensorBoard(histogram_freq=1)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    import keras

    rows = []
    for name, (build, shape) in models().items():
        keras.utils.set_random_seed(0)
        weights = build().get_weights()
        times = {way: [] for way in WAYS}
        for r in range(args.rounds):
            for way in WAYS:
                times[way].append(one_fit(build, shape, way, args.epochs, weights))
                print(f"  {name} round {r + 1}/{args.rounds} {way}: {times[way][-1]:.2f}s", flush=True)
        for way in WAYS:
            ratio = statistics.median(a / b for a, b in zip(times[way], times["fit"]))
            rows.append((name, way, statistics.median(times[way]), ratio))
    steps = STEPS_PER_EPOCH * args.epochs
    print(f"\n{steps} steps per fit (batch {BATCH}), {args.rounds} interleaved rounds; ratio = median over rounds "
          "of (way / plain fit in the same round)\n")
    print("| model | way | wall s (median) | × plain fit |\n|---|---|---:|---:|")
    for name, way, seconds, ratio in rows:
        print(f"| {name} | {way} | {seconds:.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
