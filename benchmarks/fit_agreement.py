"""Does gradzoo train like Keras? ResNet-20 on digits 32x32: the instrumented run's per-step
training losses against Keras' own compiled train step (``train_on_batch``, the function
``fit`` runs) from the same initial weights on the same batches, over 3 seeds.

Both ways build the model from the same spec (per-layer seeds give the same weights) and take
the batches of the same seeded, reshuffling tf.data pipeline in the same order (handed to Keras
one by one, so that both certainly see the same batches). The
first step's loss must agree to float precision; later steps drift apart slowly as rounding
differences (summation order in the two graphs) are amplified by training. Printed per seed:
the step-1 losses, the largest relative per-step difference over the first epoch, and each
epoch's mean loss both ways. The README quotes the table.

    python benchmarks/fit_agreement.py [--seeds 0 1 2] [--epochs 3]
"""
from __future__ import annotations

import argparse

import numpy as np

from zoo.training.spec import compose_spec

OVERRIDES = ["model=resnet", "model.depth=20", "data.layout=image", "data.image_size=32",
             "tracking.uri=null"]


def zoo_losses(spec) -> np.ndarray:
    from zoo.records.recorder import Recorder
    from zoo.training.run import build, train_loop
    from zoo.tracking.memory import MemorySink

    t = build(spec)
    recorder = Recorder(t.step.meter, MemorySink(), 10**9)
    train_loop(t, recorder, spec)
    return recorder.stats().loss


def keras_losses(spec) -> np.ndarray:
    import tensorflow as tf

    from zoo.training.run import build

    t = build(spec)
    t.model.compile(optimizer=t.step.optimizer, loss=t.step.loss_fn)
    train = (tf.data.Dataset.from_tensor_slices((t.data.x_train, t.data.y_train))
             .shuffle(len(t.data.x_train), seed=spec.seed, reshuffle_each_iteration=True)
             .batch(spec.trainer.batch_size))
    losses = []
    for _ in range(spec.trainer.epochs):  # as the zoo's loop: a new iterator, a new permutation
        for x, y in train:
            losses.append(float(t.model.train_on_batch(x, y)))
    return np.array(losses, dtype=np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    print("| seed | step-1 loss, zoo / Keras | max rel. diff., epoch 1 | epoch mean losses, zoo | Keras |")
    print("|---|---|---|---|---|")
    for seed in args.seeds:
        spec = compose_spec(OVERRIDES + [f"seed={seed}", f"trainer.epochs={args.epochs}"])
        ours, theirs = zoo_losses(spec), keras_losses(spec)
        per_epoch = len(ours) // args.epochs
        first = np.max(np.abs(ours[:per_epoch] - theirs[:per_epoch]) / np.abs(theirs[:per_epoch]))
        means = lambda a: " / ".join(f"{m:.4f}" for m in a.reshape(args.epochs, -1).mean(axis=1))  # noqa: E731
        print(f"| {seed} | {ours[0]:.6f} / {theirs[0]:.6f} | {first:.1e} | {means(ours)} | {means(theirs)} |",
              flush=True)


if __name__ == "__main__":
    main()
