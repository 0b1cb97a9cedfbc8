"""Is the zoo's ResNet-56 the paper's, trained the paper's way? Side by side with the same
architecture written directly in Keras and trained with ``model.fit``.

He et al. 2016 (Sec. 4.2) train CIFAR ResNets with SGD, momentum 0.9, lr 0.1, weight decay 1e-4,
He init, batch norm, option-A shortcuts. Here: digits as 32x32 images (the shipped data), SGD
with momentum 0.9, lr 0.1, batch 64, 3 epochs (69 steps), seeds 0, 1, 2, both ways:

  zoo     ``zoo.train(model=resnet depth 56, optimizer=momentum ...)``: the zoo's builder, its
          instrumented step, its data pipeline
  keras   the same net written here in plain Keras (He-init 3x3 convs without bias, batch norm,
          option-A shortcuts, global average pooling, a Dense head with Keras' defaults), trained
          with ``model.fit`` on the same arrays

For each: the last epoch's mean training loss in training mode (what ``fit`` prints), and the
whole training split's loss in inference mode with population statistics (what the zoo calls
``final/train_loss``), so a difference between the nets and a difference between the two ways
of reading a loss are told apart.

    python benchmarks/resnet_recipe.py [--seeds 0 1 2] [--depth 56] [--epochs 3] [--lr 0.1]
"""
from __future__ import annotations

import argparse
import statistics
import time


def keras_resnet(input_shape, classes, depth, seed):
    import keras

    n = (depth - 2) // 6
    init = lambda i: keras.initializers.HeNormal(seed=seed * 1000 + i)  # noqa: E731
    count = iter(range(10**6))

    def conv(h, filters, stride):
        return keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                                   kernel_initializer=init(next(count)))(h)

    def shortcut(h, filters, stride):
        h = h[:, ::stride, ::stride, :]
        extra = filters - h.shape[-1]
        return keras.ops.pad(h, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])

    inputs = keras.Input(input_shape)
    h = keras.layers.ReLU()(keras.layers.BatchNormalization()(conv(inputs, 16, 1)))
    for s, filters in enumerate((16, 32, 64)):
        for b in range(n):
            stride = 2 if s > 0 and b == 0 else 1
            skip = h if stride == 1 and h.shape[-1] == filters else shortcut(h, filters, stride)
            h = keras.layers.ReLU()(keras.layers.BatchNormalization()(conv(h, filters, stride)))
            h = keras.layers.BatchNormalization()(conv(h, filters, 1))
            h = keras.layers.ReLU()(keras.layers.Add()([skip, h]))
    h = keras.layers.GlobalAveragePooling2D()(h)
    keras.utils.set_random_seed(seed)
    return keras.Model(inputs, keras.layers.Dense(classes)(h))


def inference_loss(model, x, y, batch_size):
    """Whole-split loss in inference mode after recomputing population statistics."""
    import keras

    from zoo.training.evaluation import PopulationStatistics

    PopulationStatistics(model, batch_size).refresh(x)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return float(loss(y, model.predict(x, batch_size=1024, verbose=0)))


def run_keras(data, depth, seed, epochs, lr, batch_size):
    import keras

    keras.utils.set_random_seed(seed)
    model = keras_resnet(data.x_train.shape[1:], 10, depth, seed)
    model.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(data.x_train, data.y_train, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0)
    return history.history["loss"][-1], inference_loss(model, data.x_train, data.y_train, batch_size)


def run_zoo(depth, seed, epochs, lr, batch_size, extra):
    import numpy as np

    import zoo

    result = zoo.train(["model=resnet", "data.layout=image", "data.image_size=32", f"model.depth={depth}",
                        "optimizer=momentum", f"optimizer.lr={lr}", f"trainer.epochs={epochs}",
                        f"trainer.batch_size={batch_size}", f"seed={seed}", *extra])
    steps = len(result.stats.step)
    per_epoch = int(np.ceil(steps / epochs))
    return float(np.mean(result.stats.loss[steps - per_epoch:])), result.final["final/train_loss"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--depth", type=int, default=56)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--zoo", nargs="*", default=[], help="extra overrides for the zoo's runs")
    args = parser.parse_args()
    import zoo

    data = zoo.load_dataset("digits", layout="image", image_size=32)
    rows = []
    for seed in args.seeds:
        for way in ("zoo", "keras"):
            start = time.perf_counter()
            if way == "zoo":
                train, inference = run_zoo(args.depth, seed, args.epochs, args.lr, args.batch_size, args.zoo)
            else:
                train, inference = run_keras(data, args.depth, seed, args.epochs, args.lr, args.batch_size)
            rows.append((way, seed, train, inference, time.perf_counter() - start))
            print(f"  {way} seed {seed}: last-epoch training loss {train:.3f}, inference-mode "
                  f"train loss {inference:.3f} ({rows[-1][-1]:.0f}s)", flush=True)
    print(f"\nResNet-{args.depth}, digits 32x32, SGD momentum 0.9 lr {args.lr}, batch {args.batch_size}, "
          f"{args.epochs} epochs{' ' + ' '.join(args.zoo) if args.zoo else ''}\n")
    print("| way | seed | last-epoch mean training loss | whole-split loss, inference mode | s |")
    print("|---|---:|---:|---:|---:|")
    for way, seed, train, inference, seconds in rows:
        print(f"| {way} | {seed} | {train:.3f} | {inference:.3f} | {seconds:.0f} |")
    for way in ("zoo", "keras"):
        mine = [r for r in rows if r[0] == way]
        print(f"{way}: median last-epoch loss {statistics.median(r[2] for r in mine):.3f}, "
              f"median inference loss {statistics.median(r[3] for r in mine):.3f}")


if __name__ == "__main__":
    main()
