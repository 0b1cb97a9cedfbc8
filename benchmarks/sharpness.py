"""What does a sharpness reading (zoo.monitor.sharpness) cost against a training step? Side by
side, in one process.

The models of benchmarks/fit_monitor.py (a 20x64 ReLU MLP, a small CNN on 16x16 images, a
1-layer LSTM on 50 steps) and a Transformer (zoo's, 2 Pre-LN blocks of width 64 over 16
positions of 8 features), batch 64 of synthetic data, SGD at learning rate 0.01 (the threshold
2/η: no preconditioner to read), cross-entropy from logits. Each is measured on the step's own
batch:

  step                one compiled training step (forward, loss, gradients, SGD update)
  reading k=20        one reading of exactly 20 Hessian-vector products (tolerance 0: no early
                      stop), each method: double backward and forward-over-backward
  reading (warm)      one reading as a run takes it: warm-started from the previous reading's
                      eigenvector, the default stopping rule (relative change <= 1e-3, at most
                      20 products), after a step of training; the products it took are shown
  run at every N      a loop of 200 steps with a warm reading before steps 1, 1 + N, ... over the
                      same loop without, N = 10 and 100 (the whole-run ratio of
                      trainer.sharpness_every N)

Every time is the median of interleaved blocks (the step and each reading variant in turn, in
20 blocks after one thrown away, whose readings run several times slower; the whole-run loops
in 5 rounds); ratios are medians of per-block ratios.

    python benchmarks/sharpness.py [--blocks 20] [--rounds 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from fit_monitor import models as fit_monitor_models

BATCH = 64
K = 20
LOOP = 200


def models():
    out = dict(fit_monitor_models())

    def transformer():
        import zoo

        return zoo.build_model("transformer", (16, 8), 10, depth=2, width=64, heads=4)

    out["transformer 2x64"] = (transformer, (16, 8))
    return out


def setup(build, shape, method="double_backward", tolerance=0.0):
    import keras
    import tensorflow as tf

    from zoo.monitor.sharpness import SharpnessMeter

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(BATCH, *shape)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, size=BATCH))
    model = build()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    opt = keras.optimizers.SGD(0.01)
    variables = model.trainable_variables
    opt.build(variables)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        opt.apply(tape.gradient(loss, variables), variables)
        return loss

    meter = SharpnessMeter(lambda a, b: loss_fn(b, model(a, training=False)), variables, iterations=K,
                           tolerance=tolerance, method=method)
    step(x, y)
    for _ in range(2):  # traced, run once more (the first runs after tracing are slow), warm from here on
        meter.read([(x, y)])
    return step, meter, x, y


def timed(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1000


def per_reading(build, shape, blocks: int) -> dict:
    """ms of a step and of each reading kind, and the per-block ratios."""
    from zoo.monitor.sharpness import DEFAULT_TOLERANCE, METHODS

    step, _, x, y = setup(build, shape)
    kinds, failed = {}, {}
    for m in METHODS:
        try:
            kinds[m] = setup(build, shape, m)[1]
        except Exception as err:  # ForwardAccumulator through Keras' LSTM: "variable without handle data"
            failed[m] = f"fails: {type(err).__name__}"
    warm_step, warm, wx, wy = setup(build, shape, tolerance=DEFAULT_TOLERANCE)
    used = []

    def warm_reading():
        warm_step(wx, wy)  # the weights move, as between two readings of a run
        used.append(warm.read([(wx, wy)]).iterations)

    times = {"step": [], **{m: [] for m in kinds}, "warm": []}
    for _ in range(blocks + 1):  # the first block is thrown away: its readings run 10x slower
        times["step"].append(timed(lambda: step(x, y).numpy(), 10))
        for m, meter in kinds.items():
            times[m].append(timed(lambda: meter.read([(x, y)]), 1))
        times["warm"].append(timed(warm_reading, 3) - times["step"][-1])
    times = {k: v[1:] for k, v in times.items()}
    used = used[3:]
    out = {k: statistics.median(v) for k, v in times.items()}
    out.update({f"{k} ×": statistics.median(a / b for a, b in zip(v, times["step"])) for k, v in times.items()
                if k != "step"})
    out["warm products"] = statistics.median(used)
    out["failed"] = failed
    return out


def whole_run(build, shape, rounds: int) -> dict:
    """Seconds of LOOP steps with warm readings every N (N = 10, 100) over without."""
    from zoo.monitor.sharpness import DEFAULT_TOLERANCE

    ways = {0: setup(build, shape, tolerance=DEFAULT_TOLERANCE), 10: setup(build, shape, tolerance=DEFAULT_TOLERANCE),
            100: setup(build, shape, tolerance=DEFAULT_TOLERANCE)}
    times = {n: [] for n in ways}
    for _ in range(rounds):
        for n, (step, meter, x, y) in ways.items():
            start = time.perf_counter()
            for t in range(LOOP):
                if n and t % n == 0:
                    meter.read([(x, y)])
                step(x, y).numpy()
            times[n].append(time.perf_counter() - start)
    return {n: statistics.median(a / b for a, b in zip(times[n], times[0])) for n in (10, 100)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for name, (build, shape) in models().items():
        one = per_reading(build, shape, args.blocks)
        run = whole_run(build, shape, args.rounds)
        print(f"  {name}: step {one['step']:.2f} ms, reading k={K}: {shown(one, 'double_backward')} "
              f"(double backward), {shown(one, 'forward_over_backward')} (forward over backward)", flush=True)
        rows.append((name, one, run))
    print(f"\nBatch {BATCH}, SGD; {args.blocks} interleaved blocks (medians); whole run: {LOOP} steps, "
          f"{args.rounds} rounds\n")
    print(f"| model | step ms | reading k={K}, double backward: ms (× step) | forward-over-backward: ms (× step) "
          "| warm reading: ms (× step), products | run at every 10 (× plain) | every 100 (× plain) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, one, run in rows:
        print(f"| {name} | {one['step']:.2f} | {shown(one, 'double_backward')} | {shown(one, 'forward_over_backward')} | "
              f"{one['warm']:.1f} ({one['warm ×']:.1f}), {one['warm products']:.0f} | {run[10]:.2f} | {run[100]:.2f} |")


def shown(one: dict, method: str) -> str:
    if method in one["failed"]:
        return one["failed"][method]
    return f"{one[method]:.1f} ({one[method + ' ×']:.1f})"


if __name__ == "__main__":
    main()
