"""What does a sharpness reading (zoo.instruments.sharpness) cost against a training step? Side by
side, in one process.

The models of benchmarks/fit_monitor.py (a 20x64 ReLU MLP, a small CNN on 16x16 images, a
1-layer LSTM on 50 steps) and a Transformer (zoo's, 2 Pre-LN blocks of width 64 over 16
positions of 8 features), batch 64 of synthetic data, SGD at learning rate 0.01 (the threshold
2/η: no preconditioner to read), cross-entropy from logits. Each is measured on the step's own
batch:

  step                one compiled training step (forward, loss, gradients, SGD update)
  reading k=20        one reading of exactly 20 block iterations (60 Hessian-vector products;
                      tolerance 0: no early stop), each method: double backward and
                      forward-over-backward
  reading (warm)      one reading as a run takes it: warm-started from the previous reading's
                      Ritz vectors, the default stopping rule (relative change <= 1e-3, at most
                      20 block iterations), after a step of training; the products it took are
                      shown
  run at every N      a loop of 200 steps with a warm reading before steps 1, 1 + N, ... over the
                      same loop without, N = 10 and 100 (the whole-run ratio of
                      trainer.sharpness_every N)

Readings use the meter's defaults (zoo.instruments.sharpness: block 3, double backward); "products"
counts Hessian-vector products (block iterations × 3).

``--monitor`` instead measures ``zoo.GradientMonitor(sharpness_every=N)`` in a user's ``fit``
on the MLP (20x64 ReLU, batch 64 of synthetic data, SGD at 0.01, cross-entropy from logits):
whole ``fit`` calls of 5 epochs of 100 steps (tracing included, as a user waits for it), four
ways from the same initial weights: plain ``fit``, ``fit`` with ``GradientMonitor(mlflow=False)``,
and with ``sharpness_every`` 100 and 10. Rounds interleaved; each ratio is the median over
rounds of the way's time over plain fit's (and over the monitor's without sharpness) in the
same round; "steady" is epochs 2-5 (steps 101-500: 4 readings at every 100, 40 at every 10), from
epoch-end timestamps, so the first epoch's tracing is out of it.

``--accuracy`` instead measures what the warm start costs in accuracy, on the edge_of_stability
study's run (zoo's tanh MLP 64-200-200-10, N(0, 0.05²) init, full-batch gradient descent at
η = 0.3 on the 1,437 training digits, one-hot targets, mean squared error, 1000 steps): every 20
steps, a warm reading with the default stopping rule for block sizes 1, 2 and 3 against a cold,
converged reference (block 4 from fresh vectors, relative change <= 1e-8, at most 300 block
iterations), all at the same weights.

Every time is the median of interleaved blocks (the step and each reading variant in turn, in
20 blocks after one thrown away, whose readings run several times slower; the whole-run loops
in 5 rounds); ratios are medians of per-block ratios.

    python benchmarks/sharpness.py [--blocks 20] [--rounds 5]
    python benchmarks/sharpness.py --accuracy
    python benchmarks/sharpness.py --monitor [--rounds 5]
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
    """benchmarks/fit_monitor.py's MLP, CNN and LSTM, and zoo's Transformer: (build, shape)."""
    out = {name: (build, shape) for name, (build, shape, _) in fit_monitor_models().items()
           if name in ("mlp 20x64", "cnn 3 conv", "lstm T=50")}

    def transformer():
        import zoo

        return zoo.build_model("transformer", (16, 8), 10, depth=2, width=64, heads=4)

    out["transformer 2x64"] = (transformer, (16, 8))
    return out


def setup(build, shape, method="double_backward", tolerance=0.0):
    import keras
    import tensorflow as tf

    from zoo.instruments.sharpness import SharpnessMeter

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
    from zoo.instruments.sharpness import DEFAULT_TOLERANCE, METHODS

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
    from zoo.instruments.sharpness import DEFAULT_TOLERANCE

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


def accuracy(steps: int = 1000, every: int = 20, lr: float = 0.3) -> None:
    """Warm readings of block sizes 1, 2, 3 against cold converged ones along the study's run."""
    import keras
    import tensorflow as tf

    import zoo
    from zoo.instruments.sharpness import SharpnessMeter

    keras.utils.set_random_seed(0)
    data = zoo.load_dataset("digits", targets="onehot")
    x, y = tf.constant(data.x_train), tf.constant(data.y_train)
    model = zoo.build_model("mlp", (64,), 10, depth=3, width=200, activation="tanh", init="random_normal",
                            init_std=0.05)
    mse = keras.losses.MeanSquaredError()
    variables, opt = model.trainable_variables, keras.optimizers.SGD(lr)

    def objective(a, b):
        return mse(b, model(a, training=False))

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = objective(x, y)
        opt.apply(tape.gradient(loss, variables), variables)

    warm = {b: SharpnessMeter(objective, variables, block=b) for b in (1, 2, 3)}
    cold = SharpnessMeter(objective, variables, block=4, iterations=300, tolerance=1e-8, seed=1)
    rows = {b: [] for b in warm}
    for t in range(steps):
        if t % every == 0:
            cold.reset()  # from fresh vectors every time
            reference = cold.read([(x, y)]).lambda_max
            for b, meter in warm.items():
                r = meter.read([(x, y)])
                rows[b].append(((r.lambda_max - reference) / reference, r.iterations))
        step()
    print(f"\nWarm readings every {every} steps over {steps} steps of full-batch gradient descent at η = {lr} "
          f"(2/η = {2 / lr:.3g}) against cold converged ones at the same weights:\n")
    print("| block | readings | relative error: median abs | worst | products: median | max |")
    print("|---:|---:|---:|---:|---:|---:|")
    for b, found in rows.items():
        err, used = np.array([e for e, _ in found]), np.array([u for _, u in found])
        print(f"| {b} | {len(err)} | {np.median(np.abs(err)):.1e} | {err[np.argmax(np.abs(err))]:+.1e} | "
              f"{np.median(used):.0f} | {used.max()} |")


MONITOR_EPOCHS, MONITOR_STEPS = 5, 100


def monitor_fit(rounds: int) -> None:
    """GradientMonitor with sharpness_every 100 and 10 against without, in whole fits of the MLP."""
    import keras

    import zoo
    from fit_monitor import epoch_clock

    build, shape, _ = fit_monitor_models()["mlp 20x64"]
    rng = np.random.default_rng(0)
    n = MONITOR_STEPS * BATCH
    x, y = rng.normal(size=(n, *shape)).astype("float32"), rng.integers(0, 10, size=n)
    keras.utils.set_random_seed(0)
    weights = build().get_weights()
    ways = {"fit": None, "monitor": None, "sharpness 100": 100, "sharpness 10": 10}
    times = {w: {"total": [], "steady": []} for w in ways}
    readings = {}
    for _ in range(rounds):
        for way, every in ways.items():
            model = build()
            model.set_weights(weights)
            model.compile(keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            clock = epoch_clock()
            callbacks = [clock]
            if way != "fit":
                callbacks.append(zoo.GradientMonitor(mlflow=False, verbose=False, sharpness_every=every))
            start = time.perf_counter()
            model.fit(x, y, batch_size=BATCH, epochs=MONITOR_EPOCHS, shuffle=False, verbose=0, callbacks=callbacks)
            stop = time.perf_counter()
            times[way]["total"].append(stop - start)
            times[way]["steady"].append(clock.ends[-1] - clock.ends[0])
            if every:
                r = callbacks[-1].sharpness
                readings[way] = (len(r), float(np.median(r.iterations)), float(np.median(r.lambda_max)))
    print(f"\nzoo.GradientMonitor in fit, MLP 20x64, batch {BATCH}, SGD 0.01, {MONITOR_EPOCHS} epochs of "
          f"{MONITOR_STEPS} steps, {rounds} rounds (medians of per-round ratios)\n")
    print("| way | whole fit s | × fit | × monitor | steady epochs s | × fit | × monitor | readings, products: median |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for way in ways:
        cells = []
        for part in ("total", "steady"):
            t = times[way][part]
            cells += [f"{statistics.median(t):.2f}",
                      f"{statistics.median(a / b for a, b in zip(t, times['fit'][part])):.2f}",
                      f"{statistics.median(a / b for a, b in zip(t, times['monitor'][part])):.2f}"]
        used = f"{readings[way][0]}, {readings[way][1]:.0f}" if way in readings else ""
        print(f"| {way} | {' | '.join(cells)} | {used} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--accuracy", action="store_true", help="the warm start's accuracy instead of timings")
    parser.add_argument("--monitor", action="store_true",
                        help="zoo.GradientMonitor(sharpness_every=10, 100) in fit against without, instead")
    args = parser.parse_args()
    if args.accuracy:
        accuracy()
        return
    if args.monitor:
        monitor_fit(args.rounds)
        return
    rows = []
    for name, (build, shape) in models().items():
        one = per_reading(build, shape, args.blocks)
        run = whole_run(build, shape, args.rounds)
        print(f"  {name}: step {one['step']:.2f} ms, reading k={K}: {shown(one, 'double_backward')} "
              f"(double backward), {shown(one, 'forward_over_backward')} (forward over backward)", flush=True)
        rows.append((name, one, run))
    print(f"\nBatch {BATCH}, SGD; {args.blocks} interleaved blocks (medians); whole run: {LOOP} steps, "
          f"{args.rounds} rounds\n")
    print(f"| model | step ms | reading k={K} block iterations, double backward: ms (× step) | forward-over-backward: ms (× step) "
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
