"""What does gradient instrumentation cost? Side by side, in one process.

The same 20-layer, width-64 ReLU MLP (batch 128, 300 steps = 10 epochs of 30 steps, synthetic
data, one validation pass per epoch) trained five ways:
  fit             plain ``model.fit``                     (the baseline)
  bare tape       a compiled ``GradientTape`` step and nothing else (forward, loss, gradient,
                  update), the same tf.data pipeline and validation pass: the physical limit of
                  any instrumented step
  fit+tensorboard ``fit`` with ``TensorBoard(histogram_freq=1)``: what a Keras user has today,
                  weight histograms once per epoch and no gradients at all
  zoo (memory)    gradzoo's instrumented loop into the in-memory sink (and once without its
                  histogram steps, to separate their cost from the per-step statistics)
  zoo (mlflow)    the same into MLflow's sqlite store, the final flush included
  zoo (float32)   the instrumented loop with the norms and histograms of before issue 17:
                  ``sqrt(sum(x**2))`` in float32, which underflows below ~1e-19 and overflows
                  above ~1.8e19; its ratio to "zoo (memory)" is the cost of exact norms

Every way first runs one untimed epoch (tracing), then the timed 300 steps. Rounds are
interleaved, and each way's ratio is the median over rounds of its time over plain fit's time in
the same round (this machine's speed drifts by tens of percent between minutes). Extra rows vary
``monitor.log_every`` for the MLflow way, which is how the default was chosen.

    python benchmarks/overhead.py [--rounds 5] [--model resnet]
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time

from zoo.training.spec import compose_spec

OVERRIDES = ["data=synthetic", "data.n_train=3840", "data.n_val=1024", "data.n_features=64",
             "model.depth=20", "model.width=64", "model.activation=relu", "model.init=he_normal",
             "trainer.batch_size=128", "trainer.epochs=10", "monitor.histogram_every=10"]
STEPS = 300
MODELS = {  # --model: (overrides, timed steps): the default MLP, or ResNet-20 (0.27M parameters)
    "mlp": ([], STEPS),
    "resnet": (["model=resnet", "data=digits", "data.layout=image", "model.depth=20", "trainer.epochs=3"],
               3 * 12),  # digits: 1,437 training images, 12 batches of 128
}


@contextlib.contextmanager
def float32_norms():
    """The instruments as they were before exact norms: values read as float32 (denormals
    flushed), squares summed in float32."""
    from zoo.instruments import graph_stats

    exact, widen = graph_stats.exact_abs, graph_stats._as_float64
    graph_stats.exact_abs = lambda t: abs(t)  # float32 in, float32 out: the old arithmetic
    graph_stats._as_float64 = lambda t: t     # the fast path's squares summed in float32
    try:
        yield
    finally:
        graph_stats.exact_abs, graph_stats._as_float64 = exact, widen


def keras_fit(spec, tensorboard: bool) -> float:
    import keras
    import tensorflow as tf

    from zoo.training.run import build

    t = build(spec)
    data, model, step = t.data, t.model, t.step
    heads = len(model.outputs)  # auxiliary heads: the same weighted objective as the zoo's step
    model.compile(optimizer=step.optimizer, loss=[step.loss_fn] * heads,
                  loss_weights=[1.0] + [step.aux_weight] * (heads - 1),
                  metrics=[["accuracy"]] + [[]] * (heads - 1) if data.task == "classification" else None)

    def batches(x, y):
        pairs = tf.data.Dataset.from_tensor_slices((x, y))
        return pairs.map(lambda a, b: (a, (b,) * heads)) if heads > 1 else pairs

    train = (batches(data.x_train, data.y_train)
             .shuffle(len(data.x_train), seed=0).batch(spec.trainer.batch_size).prefetch(2))
    val = batches(data.x_val, data.y_val).batch(1024)
    with tempfile.TemporaryDirectory() as logdir:
        callbacks = [keras.callbacks.TensorBoard(logdir, histogram_freq=1)] if tensorboard else []
        model.fit(train, validation_data=val, epochs=1, verbose=0, callbacks=callbacks)  # warm-up
        start = time.perf_counter()
        model.fit(train, validation_data=val, epochs=spec.trainer.epochs, verbose=0, callbacks=callbacks)
        return time.perf_counter() - start


def bare_tape(spec) -> float:
    """The minimal custom loop: what every instrumented step is measured against."""
    import tensorflow as tf

    from zoo.training.evaluation import evaluate
    from zoo.training.run import build

    t = build(spec)
    data, model, step = t.data, t.model, t.step
    variables = model.trainable_variables

    @tf.function(input_signature=step.train.input_signature)
    def train(x, y):
        with tf.GradientTape() as tape:
            loss = step.loss_fn(y, model(x, training=True)) + tf.add_n([0.0] + model.losses)
        step.optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    batches = (tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
               .shuffle(len(data.x_train), seed=0).batch(spec.trainer.batch_size).prefetch(2))

    def epochs(n):
        for _ in range(n):
            for x, y in batches:
                train(x, y).numpy()
            evaluate(step, data.x_val, data.y_val)

    epochs(1)  # warm-up: tracing
    start = time.perf_counter()
    epochs(spec.trainer.epochs)
    return time.perf_counter() - start


def zoo_loop(spec, use_mlflow: bool) -> tuple[float, int]:
    """Seconds for the timed 300 steps (+ final flush), and metric points the sink received."""
    import dataclasses

    from zoo.records.recorder import Recorder
    from zoo.training.run import build, train_loop
    from zoo.tracking.memory import MemorySink
    from zoo.tracking.mlflow_sink import MlflowSink

    t = build(spec)
    step = t.step
    warm = dataclasses.replace(spec, trainer=dataclasses.replace(spec.trainer, epochs=1))
    train_loop(t, Recorder(step.meter, MemorySink(), 10**9), warm)
    with tempfile.TemporaryDirectory() as tmp:
        sink = MlflowSink(f"sqlite:///{tmp}/bench.db", "bench") if use_mlflow else MemorySink()
        sink.start("bench", {}, {})  # store creation is a one-off, outside the timing
        recorder = Recorder(step.meter, sink, spec.monitor.log_every)
        start = time.perf_counter()
        train_loop(t, recorder, spec)
        recorder.flush()
        sink.finish("FINISHED")
        seconds = time.perf_counter() - start
        points = sink.points_written if use_mlflow else sum(len(v) for v in sink.metrics.values())
    return seconds, points


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--log-every", type=int, nargs="*", default=[1, 5, 50])
    parser.add_argument("--model", choices=MODELS, default="mlp")
    args = parser.parse_args()
    extra, steps = MODELS[args.model]
    overrides = OVERRIDES + extra
    spec = compose_spec(overrides)
    default = spec.monitor.log_every
    ways = {
        "fit": lambda: (keras_fit(spec, False), 0),
        "fit + TensorBoard(histogram_freq=1)": lambda: (keras_fit(spec, True), 0),
        "bare GradientTape step": lambda: (bare_tape(spec), 0),
        "zoo instrumented, memory sink": lambda: zoo_loop(spec, False),
        "zoo instrumented with float32 norms (before exact norms), memory sink":
            lambda: _with(float32_norms(), lambda: zoo_loop(spec, False)),
        "zoo per-step statistics only (no histogram steps), memory sink":
            lambda: zoo_loop(compose_spec(overrides + ["monitor.histogram_every=100000"]), False),
        f"zoo instrumented, MLflow (log_every={default}, default)": lambda: zoo_loop(spec, True),
    }
    for every in args.log_every:
        variant = compose_spec(overrides + [f"monitor.log_every={every}"])
        ways[f"zoo instrumented, MLflow (log_every={every})"] = lambda v=variant: zoo_loop(v, True)
    times = {name: [] for name in ways}
    points = {}
    for r in range(args.rounds):  # every round runs every way, so ratios are paired in time
        for name, way in ways.items():
            seconds, points[name] = way()
            times[name].append(seconds)
            print(f"  round {r + 1}/{args.rounds} {name}: {seconds:.2f}s", flush=True)
    print(f"\n{args.model} ({' '.join(extra) or '20x64 ReLU MLP'}, batch 128, {steps} steps); "
          f"{args.rounds} interleaved rounds. Ratio = median over rounds of (way / plain fit in the same round).\n")
    print("| way | steps/s (median) | wall s (median) | × plain fit | × bare tape | metric points |")
    print("|---|---|---|---|---|---|")
    for name in ways:
        t = statistics.median(times[name])
        ratio = statistics.median(a / b for a, b in zip(times[name], times["fit"]))
        bare = statistics.median(a / b for a, b in zip(times[name], times["bare GradientTape step"]))
        print(f"| {name} | {steps / t:.0f} | {t:.2f} | {ratio:.2f} | {bare:.2f} | {points[name]} |")
    exact, old = times["zoo instrumented, memory sink"], times["zoo instrumented with float32 norms (before exact norms), memory sink"]
    print(f"\nexact norms / float32 norms (paired, median over rounds): "
          f"{statistics.median(a / b for a, b in zip(exact, old)):.3f}")


def _with(context, way):
    with context:
        return way()


if __name__ == "__main__":
    main()
