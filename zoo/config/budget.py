"""A closed-form memory estimate of a run, made from its config before anything is built.

A run that cannot fit should fail in a second with the numbers, not swap for an hour or be
killed by the kernel mid-way. The estimate is deliberately simple, per model family:
    bytes = parameters x 4 B x 4        weights, gradients, Adam's two moment slots (float32)
          + batch x activations x 4 B x 3   each layer's outputs kept for the backward pass,
                                            their gradients, norm / activation temporaries
                                            (batch: trainer.batch_size, at most the
                                            training split, which is all a step can hold)
          + weight layers x 2 MiB       graph, Keras objects and per-layer instruments
          + dataset floats x 4 B x 2    the numpy arrays and the tf.data copy
          + 0.75 GiB                    TensorFlow itself

The two constants were measured with ``ru_maxrss`` on CPU: a depth-10 MLP (width 64, synthetic
data) peaks at 0.78 GiB, depth 150 at 1.22 GiB, about 3.2 MiB per Dense layer, so both are on
the low side: the check refuses what cannot fit, not what might be tight. A model family's
estimator sits beside its builder (registry tag ``memory``); datasets' shapes are keyed here by
the registry's dataset names. A model or dataset without one is not checked.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable
from zoo.config.schema import SpecError

BYTES = 4                      # float32
STATE_COPIES = 4               # weights, gradients, 2 Adam slots
ACTIVATION_COPIES = 3          # outputs, their gradients, temporaries
LAYER_OVERHEAD = 2 * 2**20     # per weight layer (measured ~3.2 MiB for an MLP, see above)
DATA_COPIES = 2
PROCESS_BASE = 3 * 2**28       # 0.75 GiB: TensorFlow's runtime before the first layer


@dataclass(frozen=True)
class Data:
    """What the model sees of a dataset: examples, one example's shape, outputs, and the
    examples of the training split (no step's batch is larger)."""
    examples: int
    shape: tuple[int, ...]
    outputs: int
    train: int | None = None  # None: all of ``examples``


# what each term of the estimate is, and the knobs that shrink it (named when it dominates)
TERMS = {
    "parameters": "model.width or model.depth",
    "activations": "trainer.batch_size, or model.width or model.depth",
    "layers": "model.depth",
    "data": "the data size",
}


@dataclass(frozen=True)
class Estimate:
    params: int        # trainable weights
    activations: int   # floats kept per example for the backward pass
    layers: int        # weight layers
    data_floats: int   # floats in the dataset arrays
    train_examples: int | None = None  # the training split: a batch never holds more

    def batch(self, batch_size: int) -> int:
        """The batch a step really holds: ``trainer.batch_size``, at most the training split
        (tf.data's last, and here only, batch is the whole split)."""
        return min(batch_size, self.train_examples) if self.train_examples else batch_size

    def terms(self, batch_size: int) -> dict[str, int]:
        """Bytes per term (TERMS), for the batch actually used; TensorFlow's base is apart."""
        return {"parameters": self.params * BYTES * STATE_COPIES,
                "activations": self.batch(batch_size) * self.activations * BYTES * ACTIVATION_COPIES,
                "layers": self.layers * LAYER_OVERHEAD,
                "data": self.data_floats * BYTES * DATA_COPIES}

    def bytes(self, batch_size: int) -> int:
        return sum(self.terms(batch_size).values()) + PROCESS_BASE


# --- datasets: config section -> Data, without loading anything -----------------------------
DIGITS = 1797  # scikit-learn's digits


def _digits_train(d) -> int:
    """scikit-learn's train_test_split holds out ceil(n x val_fraction): 1,437 of 1,797 at 0.2."""
    return DIGITS - math.ceil(DIGITS * getattr(d, "val_fraction", 0.2))


def _digits(d) -> Data:
    shape = (d.image_size, d.image_size, 1) if d.layout == "image" else (64,)
    return Data(DIGITS, shape, 10, _digits_train(d))


def _keras_images(full_train: int, full_val: int, shape: tuple[int, ...]):
    return lambda d: Data((d.n_train or full_train) + (d.n_val or full_val), shape, 10, d.n_train or full_train)


DATASETS: dict[str, Callable[[Any], Data]] = {
    "digits": _digits,
    "seq_digits": lambda d: Data(DIGITS, (64, 1) if d.mode == "pixel" else (8, 8), 10, _digits_train(d)),
    "synthetic": lambda d: Data(d.n_train + d.n_val, (d.n_features,), d.n_classes, d.n_train),
    "synthetic_regression": lambda d: Data(d.n_train + d.n_val, (d.n_features,), d.n_outputs, d.n_train),
    "adding": lambda d: Data(d.n_train + d.n_val, (d.length, 2), 1, d.n_train),
    "copy_memory": lambda d: Data(d.n_train + d.n_val, (d.length + 20, 10), 10, d.n_train),
    "mnist": _keras_images(60000, 10000, (28, 28, 1)),
    "fashion_mnist": _keras_images(60000, 10000, (28, 28, 1)),
    "cifar10": _keras_images(50000, 10000, (32, 32, 3)),
    # read from the file's .npy headers (and labels) when the section was validated
    "arrays": lambda d: Data(d.layout.n_train + d.layout.n_val, d.layout.example_shape,
                             d.layout.num_outputs, d.layout.n_train),
}


# --- models: each family's builder module registers its estimator beside the builder, as the
# registry tag ``memory``: (config section, Data) -> Estimate, or None when the data's shape is
# not one the model takes (zoo.training.spec.check_fit says so). A family without one is not checked here;
# ``custom`` (the user's builder) is sized by a symbolic build once TensorFlow is up
# (zoo.models.custom.size_by_building, registry tag ``size_by_building``).
def estimate(memory: Callable | None, model: Any, data_name: str, data: Any) -> Estimate | None:
    """The estimate of one run, or None when the model family or the dataset has no estimator.

    Args:
        memory: the family's estimator, its registry tag ``memory`` (zoo.models.estimate looks it
            up by the family's name), or None.
        model, data: the run's model and data config sections; data_name: the dataset's name.
    """
    shape_of = DATASETS.get(data_name)
    if shape_of is None or memory is None:
        return None
    seen = shape_of(data)
    est = memory(model, seen)
    if est is None:
        return None
    return Estimate(est.params, est.activations, est.layers, seen.examples * math.prod(seen.shape), seen.train)


def available_bytes() -> int | None:
    """Memory the kernel could hand out now without swapping: MemAvailable, else free pages."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError


def check(memory: Callable | None, model: Any, data_name: str, data: Any, batch_size: int) -> None:
    """Refuse a run whose estimate (:func:`estimate`) exceeds the memory available now
    (SpecError, one line): :func:`refuse_over`. A model or dataset without an estimator is not
    checked here."""
    est = estimate(memory, model, data_name, data)
    if est is not None:
        refuse_over(est, batch_size)


def refuse_over(est: Estimate, batch_size: int, how: str = "") -> None:
    """Raise SpecError (one line) when ``est`` exceeds the memory available now, naming the knob
    of the largest term (a huge width is not fixed by a smaller batch); ``how``: how the
    estimate was made, when not from the config (a custom builder's symbolic build)."""
    have = available_bytes()
    if have is None:
        return
    need = est.bytes(batch_size)
    if need > have:
        batch = est.batch(batch_size)
        capped = f" (trainer.batch_size {batch_size}, capped at the training split)" if batch < batch_size else ""
        terms = est.terms(batch_size)
        top = max(terms, key=terms.get)  # the advice names what to lower for the largest term
        raise SpecError("", f"this run needs about {human(need)} of memory ({est.params:.3g} "
                            f"parameters, {est.activations:.3g} activations per example x batch "
                            f"{batch}{capped}, {est.layers} weight layers{how}) but {human(have)} is "
                            f"available; most of it is the {top} ({human(terms[top])}): lower {TERMS[top]}")


def room_for_model(data_floats: int) -> int | None:
    """Bytes left for a model's parameters and layers once TensorFlow and the data are counted
    (None: the memory available is not known); what a custom builder's trial build may grow to."""
    have = available_bytes()
    return None if have is None else have - PROCESS_BASE - data_floats * BYTES * DATA_COPIES
