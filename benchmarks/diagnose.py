"""How long does a diagnosis take, and what does measuring a batch cost? Side by side, one process.

Six user-style Keras models (not the zoo's builders): a 20-layer sigmoid MLP (width 64), a
small CNN with batch norm on 8x8 images, an LSTM(32) on 50 steps, and three of issue 30's: a
binary classifier (``Dense(1, activation="sigmoid")``, binary cross-entropy, float labels), a
two-block Transformer on a 1-feature sequence (Keras' time-series example: LayerNorm over one
value) and a sigmoid -> ELU MLP fitting y = x**4 with x in [-100, 100). For each, ``zoo.diagnose`` on
4 batches of 64 is timed whole (building the instrumented step, tracing, 4 measured batches,
findings, the figure) and then its per-batch cost in steady state: one measured batch (every
instrument on: norms, histograms, activation statistics, gradient through time, forget gates)
against a bare compiled ``GradientTape`` (forward, loss, gradients, nothing else) on the same
batch. Rounds interleave the two; the ratio is the median over rounds of their times.

The command end to end, ``zoo-diagnose MODEL.keras --data DATA.npz`` in a fresh process (Python
start, TensorFlow import, loading the file, the diagnosis, report and figure), is timed last.

    python benchmarks/diagnose.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def models():
    import keras

    rng = np.random.default_rng(0)
    flat = rng.normal(size=(256, 64)).astype("float32"), rng.integers(0, 10, 256).astype("int32")
    img = rng.normal(size=(256, 8, 8, 1)).astype("float32"), rng.integers(0, 10, 256).astype("int32")
    seq = rng.normal(size=(256, 50, 1)).astype("float32")
    mlp = keras.Sequential([keras.Input((64,))] + [keras.layers.Dense(64, activation="sigmoid") for _ in range(19)]
                           + [keras.layers.Dense(10)], name="sigmoid_mlp")
    cnn = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
                            keras.layers.BatchNormalization(), keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
                            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)], name="cnn")
    lstm = keras.Sequential([keras.Input((50, 1)), keras.layers.LSTM(32), keras.layers.Dense(1)], name="lstm")
    binary = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="relu"),
                               keras.layers.Dense(1, activation="sigmoid")], name="binary")
    binary.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    power = keras.Sequential([keras.Input((1,)), keras.layers.Dense(32, activation="sigmoid"),
                              keras.layers.Dense(32, activation="elu"), keras.layers.Dense(1)], name="power")
    power.compile("adam", "mse")
    wide = rng.uniform(-100, 100, size=(256, 1)).astype("float32")
    return {"sigmoid MLP x20": (mlp, flat, "classification"), "CNN + BN": (cnn, img, "classification"),
            "LSTM(32), 50 steps": (lstm, (seq, seq[:, -5:, 0].mean(1, keepdims=True)), "regression"),
            "binary sigmoid + BCE": (binary, (flat[0], (flat[0][:, 0] > 0).astype("float32")), "classification"),
            "Transformer, 1 feature": (transformer(), (seq, (seq.mean((1, 2)) > 0).astype("int32")), "classification"),
            "y = x**4, raw": (power, (wide, wide ** 4), "regression")}


def transformer():
    """Keras' time-series Transformer example, two blocks, on one feature per step."""
    import keras

    layers = keras.layers
    inputs = keras.Input((50, 1))
    x = inputs
    for _ in range(2):
        h = layers.LayerNormalization(epsilon=1e-6)(x)
        h = layers.MultiHeadAttention(key_dim=16, num_heads=2)(h, h)
        res = h + x
        h = layers.LayerNormalization(epsilon=1e-6)(res)
        h = layers.Conv1D(filters=4, kernel_size=1, activation="relu")(h)
        x = layers.Conv1D(filters=1, kernel_size=1)(h) + res
    x = layers.Dense(16, activation="relu")(layers.GlobalAveragePooling1D()(x))
    model = keras.Model(inputs, layers.Dense(2, activation="softmax")(x), name="transformer")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["sparse_categorical_accuracy"])
    return model


def bare_step(model, loss_fn):
    import tensorflow as tf

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return tape.gradient(loss, model.trainable_variables)
    return step


def timed(fn, *args) -> float:
    start = time.perf_counter()
    out = fn(*args)
    _ = [o.numpy() for o in (out if isinstance(out, (list, tuple)) else [out]) if hasattr(o, "numpy")]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import keras

    import zoo
    from zoo.data.batches import batches_of
    from zoo.training.step import InstrumentedStep, batch_spec

    rows = []
    for label, (model, (x, y), task) in models().items():
        start = time.perf_counter()
        d = zoo.diagnose(model, (x, y, task))
        whole = time.perf_counter() - start
        xs, ys = batches_of(x, y, 1, 64, 0)
        step = InstrumentedStep(model, task, keras.optimizers.SGD(0.0), None, batch_spec(xs[0], ys[0]))
        bare = bare_step(model, step.loss_fn)
        saved = [v.numpy() for v in model.variables]
        timed(step.train_with_probes, xs[0], ys[0]), timed(bare, xs[0], ys[0])  # traced, warm
        ratios, measured, plain = [], [], []
        for _ in range(args.rounds):
            m = statistics.median(timed(step.train_with_probes, xs[0], ys[0]) for _ in range(10))
            b = statistics.median(timed(bare, xs[0], ys[0]) for _ in range(10))
            measured.append(m), plain.append(b), ratios.append(m / b)
        for v, value in zip(model.variables, saved):
            v.assign(value)
        rows.append((label, d.headline, whole, statistics.median(measured) * 1e3,
                     statistics.median(plain) * 1e3, statistics.median(ratios), ", ".join(f.kind for f in d.problems)))
    print(f"{'model':<24} {'headline':<22} {'diagnose':>9} {'measured batch':>15} {'bare tape':>10} {'ratio':>6}  findings")
    for label, headline, whole, m, b, r, found in rows:
        print(f"{label:<24} {headline:<22} {whole:>8.1f}s {m:>12.1f} ms {b:>7.1f} ms {r:>6.2f}  {found or '-'}")

    with tempfile.TemporaryDirectory() as folder:
        model, (x, y), _ = models()["sigmoid MLP x20"]
        model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.save(Path(folder) / "model.keras")
        np.savez(Path(folder) / "data.npz", x=x, y=y)
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "zoo.cli.diagnose", "model.keras", "--data", "data.npz"],
                              cwd=folder, capture_output=True, text=True)
        print(f"zoo-diagnose end to end (fresh process, sigmoid MLP x20): {time.perf_counter() - start:.1f} s, "
              f"exit {done.returncode}")


if __name__ == "__main__":
    main()
