"""gradzoo: a Keras 3 model zoo for seeing vanishing and exploding gradients, and their remedies.

``import zoo`` is cheap: the public functions below import TensorFlow only when they build or
train something.
"""
from __future__ import annotations

from zoo._lazy import pin_backend
from zoo.errors import InputError

pin_backend()

__version__ = "0.1.0"
__all__ = ["GradientMonitor", "InputError", "build_model", "compare", "diagnose", "list_models", "list_datasets", "list_pretrained",
           "load_dataset", "load_pretrained", "train"]


def list_models(pattern: str = "*") -> list[str]:
    from zoo.models import MODELS

    return MODELS.names(pattern)


def list_datasets(pattern: str = "*") -> list[str]:
    from zoo.data import DATASETS

    return DATASETS.names(pattern)


def build_model(name: str, input_shape, num_outputs: int, **knobs):
    """Build a registered model; ``knobs`` are its config keys (validated, defaults filled).
    See :func:`zoo.spec.build_model`. Raises InputError (a config value's: zoo.schema.SpecError)."""
    from zoo.arguments import check_build_model

    check_build_model(name, input_shape, num_outputs)
    from zoo.spec import build_model as build

    return build(name, input_shape, num_outputs, **knobs)


def load_dataset(name: str, **options):
    """Load a registered dataset as numpy arrays (see :class:`zoo.data.Dataset`). See
    :func:`zoo.spec.load_dataset`. Raises InputError (a config value's: zoo.schema.SpecError)."""
    from zoo.arguments import check_load_dataset

    check_load_dataset(name)
    from zoo.spec import load_dataset as load

    return load(name, **options)


def train(overrides: list[str] | None = None, sink=None):
    """Run one training job from config overrides, as ``zoo-train`` would; returns the result.
    Without ``sink`` the run's records stay in memory (no MLflow), which suits notebooks. See
    :func:`zoo.run.train`. Raises InputError (a config value's: zoo.schema.SpecError) before
    anything is built."""
    from zoo.arguments import check_train

    check_train(overrides, sink)
    from zoo.run import train as run_job

    return run_job(overrides, sink)


def list_pretrained(pattern: str = "*") -> list[str]:
    """Names of the pretrained comparison models (``zoo-pretrained list`` describes them)."""
    from zoo.pretrained import list_pretrained as names

    return names(pattern)


def load_pretrained(name: str):
    """A pretrained entry's keras.Model: sha256-verified, loaded in Keras' safe mode, with the
    layer roles its builder recorded (so ``zoo.compare`` and the train step see its activations
    and auxiliary heads). Raises InputError (an unknown name's: zoo.pretrained.UnknownPretrainedError)."""
    from zoo.arguments import check_load_pretrained

    check_load_pretrained(name)
    from zoo.pretrained.load import load_pretrained as load

    return load(name)


def compare(a, b, data=None, **options):
    """Two models' per-layer gradient norms (and gradient through time) on the same batches, side
    by side: ``.table``, ``.figure``, ``.save(path)``. See :func:`zoo.comparison.compare`. Raises
    InputError, one line naming the argument, for arguments that cannot work (zoo.arguments)."""
    from zoo.comparison import compare as run

    return run(a, b, data, **options)


def diagnose(model, data, **options):
    """What is wrong with ``model``'s gradients on ``data`` at its current weights, and what the
    zoo's reproduced studies support: ``.markdown()``, ``.figure``, ``.save(folder)``,
    ``.problem``. See :func:`zoo.diagnosis.diagnose`. Raises InputError, one line naming the
    argument, for arguments or data that cannot work (zoo.arguments)."""
    from zoo.diagnosis import diagnose as run

    return run(model, data, **options)


def __getattr__(name: str):
    """``zoo.GradientMonitor`` (a Keras callback: importing it imports TensorFlow) on first use."""
    if name == "GradientMonitor":
        pin_backend()
        from zoo.monitor.callback import GradientMonitor

        return GradientMonitor
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
