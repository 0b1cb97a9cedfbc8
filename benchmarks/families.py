"""Steps/s of every model family at its default config: instrumented vs plain ``model.fit``.

Each family trains at its ``conf/model/<name>.yaml`` defaults on data that fits it (digits for
the MLP and the deep linear chain; digits as 8x8 images for ResNet-20 and Inception, the
shipped image data; the adding problem with T = 50 for the recurrent nets; digits as 8 rows of
8 pixels for the Transformers). Two ways, in one
process, rounds interleaved as in ``overhead.py``: plain ``fit`` (the same model, optimizer and
weighted objective) and the zoo's instrumented loop into MLflow's sqlite store at the default
``monitor.log_every``, final flush included. Each way first runs one untimed epoch (tracing).

    python benchmarks/families.py [--rounds 3] [--family lstm ...]
"""
from __future__ import annotations

import argparse
import statistics

from overhead import keras_fit, zoo_loop

from zoo.training.spec import compose_spec

IMAGE = ["data.layout=image"]
ROWS = ["data=seq_digits", "data.mode=row"]
ADDING = ["data=adding", "data.length=50", "data.n_train=1920", "data.n_val=512"]
FAMILIES = {
    "mlp": ["model=mlp"],
    "deep_linear": ["model=deep_linear"],
    "resnet": ["model=resnet"] + IMAGE,
    "inception": ["model=inception"] + IMAGE,
    "inception (aux_heads=2)": ["model=inception", "model.aux_heads=2"] + IMAGE,
    "simple_rnn": ["model=simple_rnn"] + ADDING,
    "lstm": ["model=lstm"] + ADDING,
    "gru": ["model=gru"] + ADDING,
    "transformer": ["model=transformer"] + ROWS,
    "transformer (12 blocks, Post-LN)": ["model=transformer", "model.depth=12", "model.norm_position=post"] + ROWS,
    "resnet (Fixup, no norm)": ["model=resnet_fixup"] + IMAGE,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--family", nargs="*", default=list(FAMILIES))
    args = parser.parse_args()
    rows = []
    for family in args.family:
        spec = compose_spec(FAMILIES[family] + [f"trainer.epochs={args.epochs}"])
        plain, instrumented, steps = [], [], 0
        for r in range(args.rounds):
            plain.append(keras_fit(spec, tensorboard=False))
            seconds, _ = zoo_loop(spec, use_mlflow=True)
            instrumented.append(seconds)
            print(f"  {family} round {r + 1}/{args.rounds}: fit {plain[-1]:.2f}s, "
                  f"zoo {instrumented[-1]:.2f}s", flush=True)
        n_train = len(__import__("zoo").load_dataset(spec.data.name, **spec.data.kwargs()).x_train)
        steps = args.epochs * -(-n_train // spec.trainer.batch_size)
        ratio = statistics.median(a / b for a, b in zip(instrumented, plain))
        rows.append((family, spec.data.name, steps, steps / statistics.median(plain),
                     steps / statistics.median(instrumented), ratio))
    print(f"\n{args.rounds} interleaved rounds of {args.epochs} epochs (+1 untimed); "
          "ratio = median of (zoo / fit) per round.\n")
    print("| family (defaults) | data | steps | fit steps/s | zoo + MLflow steps/s | × plain fit |")
    print("|---|---|---|---|---|---|")
    for family, data, steps, fit, zoo_rate, ratio in rows:
        print(f"| {family} | {data} | {steps} | {fit:.1f} | {zoo_rate:.1f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
