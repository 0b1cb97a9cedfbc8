"""gradzoo: a Keras 3 model zoo for seeing vanishing and exploding gradients, and their remedies.

``import zoo`` is cheap: the public functions below import TensorFlow only when they build or
train something.
"""
from __future__ import annotations

from zoo._lazy import keras_backend, pin_backend
from zoo.errors import InputError

pin_backend()

__version__ = "0.1.0"
__all__ = ["GradientMonitor", "InputError", "build_model", "compare", "diagnose", "list_models", "list_datasets", "list_pretrained",
           "load_dataset", "load_pretrained", "train"]


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered model families (the ``model=`` options), without importing TensorFlow.

    Args:
        pattern: a shell-style pattern the names must match (``fnmatch``), e.g. ``"res*"``.

    Returns:
        The matching names, sorted.
    """
    from zoo.models import MODELS

    return MODELS.names(pattern)


def list_datasets(pattern: str = "*") -> list[str]:
    """Names of the registered datasets (the ``data=`` options), without importing TensorFlow.

    Args:
        pattern: a shell-style pattern the names must match (``fnmatch``), e.g. ``"*mnist"``.

    Returns:
        The matching names, sorted.
    """
    from zoo.data import DATASETS

    return DATASETS.names(pattern)


def build_model(name: str, input_shape, num_outputs: int, **knobs):
    """Build a registered model family, as a run's ``model.*`` keys would.

    Args:
        name: a model family (``zoo.list_models()``), e.g. ``"mlp"``, ``"resnet"``, ``"lstm"``.
        input_shape: the shape of one example, without the batch axis, e.g. ``(64,)``.
        num_outputs: classes (the model ends in logits) or regression targets.
        **knobs: the family's config keys without the ``model.`` prefix (``depth=8``,
            ``activation="selu"``); validated like ``zoo-train``'s, missing ones take their
            defaults (``zoo-train --help`` lists them).

    Returns:
        The ``keras.Model``, its layers named by their place and their roles recorded for the
        instruments.

    Raises:
        InputError: ``name`` is not a registered family (the message lists the known ones),
            ``input_shape`` is not a tuple of positive integers, ``num_outputs`` not one; its
            subclass zoo.config.schema.SpecError: a knob that is unknown or out of range. One line
            naming the argument or key, before anything is built (zoo._arguments).
    """
    from zoo._arguments import check_build_model

    check_build_model(name, input_shape, num_outputs)
    from zoo.training.spec import build_model as build

    return build(name, input_shape, num_outputs, **knobs)


def load_dataset(name: str, **options):
    """Load a registered dataset as numpy arrays, as a run's ``data.*`` keys would.

    Args:
        name: a dataset (``zoo.list_datasets()``), e.g. ``"digits"``, ``"adding"``.
        **options: the dataset's config keys without the ``data.`` prefix (``layout="image"``,
            ``length=150``); validated, missing ones take their defaults.

    Returns:
        A ``zoo.data.Dataset``: ``x_train``, ``y_train``, ``x_val``, ``y_val``, ``task``
        (classification or regression), ``num_outputs`` and the trivial predictors' scores
        (``baselines``).

    Raises:
        InputError: ``name`` is not a registered dataset (the message lists them); its subclass
            zoo.config.schema.SpecError: an option that is unknown or out of range. One line naming
            the argument or key.
    """
    from zoo._arguments import check_load_dataset

    check_load_dataset(name)
    from zoo.training.spec import load_dataset as load

    return load(name, **options)


def train(overrides: list[str] | None = None, sink=None):
    """Run one training job from config overrides, as ``zoo-train`` would.

    Args:
        overrides: ``zoo-train``'s command-line overrides, e.g.
            ``["model.activation=sigmoid", "trainer.epochs=2"]``; None or empty: the default run.
        sink: where the records go (a ``zoo.tracking`` sink). None: in memory only, no MLflow,
            which suits notebooks.

    Returns:
        A ``zoo.training.run.RunResult``: the outcome, the verdict, the progress, every step's statistics
        (``stats``), the final numbers and the trained model.

    Raises:
        InputError: ``overrides`` is not a list of strings or ``sink`` not a sink; its subclass
            zoo.config.schema.SpecError: a config error. One line naming the argument or key, before
            anything is built (and before TensorFlow is imported).
    """
    from zoo._arguments import check_train

    check_train(overrides, sink)
    from zoo.training.run import train as run_job

    return run_job(overrides, sink)


def list_pretrained(pattern: str = "*") -> list[str]:
    """Names of the pretrained comparison models, without importing TensorFlow.

    Args:
        pattern: a shell-style pattern the names must match (``fnmatch``), e.g. ``"mlp20-*"``.

    Returns:
        The matching entry names, sorted (``zoo-pretrained list`` describes them).
    """
    from zoo.pretrained import list_pretrained as names

    return names(pattern)


def load_pretrained(name: str):
    """Load a pretrained entry: its file checked against its sha256, loaded in Keras' safe mode.

    Args:
        name: an entry of ``zoo.list_pretrained()``, e.g. ``"resnet20-digits32"``.

    Returns:
        The trained ``keras.Model``, with the layer roles its builder recorded re-attached (so
        ``zoo.compare`` and the train step see its activations and auxiliary heads).

    Raises:
        InputError: ``name`` is not a string; its subclass
            zoo.pretrained.manifest.UnknownPretrainedError (also a ``KeyError``): ``name`` is
            not an entry (the message lists the entries).
        zoo.pretrained.integrity.IntegrityError: the file's sha256 or size is not the
            manifest's (a flipped byte, a truncated file; the message names the file and both
            hashes).
    """
    from zoo._arguments import check_load_pretrained

    check_load_pretrained(name)
    from zoo.pretrained.load import load_pretrained as load

    return load(name)


def compare(a, b, data=None, **options):
    """Two models' per-layer gradient norms (and gradient through time) on the same batches.

    Each model's own instrumented step runs at learning rate 0: no variable changes, batch-norm
    statistics are put back.

    Args:
        a: a Keras model (Sequential, functional, subclassed, nested, recurrent,
            ``Bidirectional``, several inputs or outputs) or a pretrained entry's name.
        b: the same, the second of the pair.
        data: a dataset name, a ``zoo.data.Dataset``, a dict of ``zoo.load_dataset`` arguments,
            or ``(x, y, task)`` (arrays, or lists / dicts of arrays for several inputs or
            outputs). None: the dataset entry ``a`` was trained on (pretrained entries only).
        **options: ``batches`` (4) of ``batch_size`` (64) training examples drawn with ``seed``
            (0); ``knob``: what differs, for the title (default: the pretrained pair's knob);
            ``loss``: a Keras loss name or object for both (default: each model's compiled loss,
            else the task's).

    Returns:
        A ``zoo.analysis.comparison.Comparison``: ``.table`` (per-layer medians and spreads aligned by
        normalized depth, ratio b / a), ``.figure``, ``.markdown()``, ``.save(path)``.

    Raises:
        InputError: an argument that cannot work, in one line naming it (zoo._arguments): no
            ``data`` for models that are not pretrained entries, an unknown entry or dataset
            name, models that take different input shapes, ``data`` that is not one of its
            forms or does not fit them, ``batches`` or ``batch_size`` below 1, ``seed`` outside
            [0, 2**32).
    """
    _on_tensorflow("zoo.compare", "a", "save both models (model.save('a.keras')) and compare them in a "
                   "process on TensorFlow (KERAS_BACKEND=tensorflow)")
    from zoo.analysis.comparison import compare as run

    return run(a, b, data, **options)


def diagnose(model, data, **options):
    """What is wrong with ``model``'s gradients on ``data`` at its current weights, and what helps.

    The model's instrumented step runs at learning rate 0 (nothing in the model changes); the
    advice comes only from the zoo's studies that reproduced
    (docs/results/studies.md).

    Args:
        model: any Keras model (Sequential, functional, subclassed, nested, recurrent,
            ``Bidirectional``, several inputs or outputs).
        data: ``(x, y)``, ``(x, y, task)``, ``{"x": ..., "y": ...}``, a ``.npz`` path (``x`` /
            ``y`` or ``x_train`` / ``y_train``), a zoo dataset name or a ``zoo.data.Dataset``;
            ``x`` and ``y`` arrays, or lists / dicts of arrays.
        **options: ``loss``: a Keras loss name or object (default: the model's compiled loss,
            else the task's: integer ``y`` sparse categorical cross-entropy, from logits unless
            the model ends in a softmax; else mean squared error); ``batches`` (4) of
            ``batch_size`` (64) examples drawn with ``seed`` (0); ``label``: the model's name in
            the report.

    Returns:
        A ``zoo.analysis.diagnosis.Diagnosis``: ``verdict``, ``problem`` (True unless healthy and nothing
        saturated or dead), ``findings``, ``remedies``, ``markdown()``, ``figure``,
        ``save(folder)``.

    Raises:
        InputError: an argument that cannot work (``model`` not a Keras model, ``data`` not one
            of its forms, ``batches`` or ``batch_size`` below 1, ``seed`` outside [0, 2**32),
            fewer than 2 examples, values not finite in float32, batches of one example for a
            model with batch normalization, inputs whose loss overflows the model's float
            dtype), an unknown task or loss name, inputs that do not fit the model's input, or
            targets that do not fit its output and loss: one line naming what (zoo._arguments).
    """
    _on_tensorflow("zoo.diagnose", "model", "save the model (model.save('m.keras')) and run zoo-diagnose "
                   "m.keras --data ..., which loads it on TensorFlow")
    from zoo.analysis.diagnosis import diagnose as run

    return run(model, data, **options)


def _on_tensorflow(what: str, argument: str, instead: str) -> None:
    """zoo.diagnose and zoo.compare measure with TensorFlow's instrumented step: on another
    backend, say so in one line (InputError) and what does work."""
    backend = keras_backend()
    if backend != "tensorflow":
        raise InputError(f"{what}: {argument}: measured on Keras' TensorFlow backend only, and this process runs "
                         f"{backend!r}; {instead} (zoo.GradientMonitor works on every backend)")


def __getattr__(name: str):
    """``zoo.GradientMonitor`` (a Keras callback: importing it imports TensorFlow) on first use."""
    if name == "GradientMonitor":
        pin_backend()
        from zoo.gradient_monitor.callback import GradientMonitor

        return GradientMonitor
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
