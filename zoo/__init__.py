"""gradzoo: a Keras 3 model zoo for seeing vanishing and exploding gradients, and their remedies.

``import zoo`` is cheap: the public functions below import TensorFlow only when they build or
train something.
"""
from __future__ import annotations

from zoo._lazy import pin_backend

pin_backend()

__version__ = "0.1.0"
__all__ = ["build_model", "list_models", "list_datasets", "load_dataset", "train"]


def list_models(pattern: str = "*") -> list[str]:
    from zoo.models import MODELS

    return MODELS.names(pattern)


def list_datasets(pattern: str = "*") -> list[str]:
    from zoo.data import DATASETS

    return DATASETS.names(pattern)


def build_model(name: str, input_shape, num_outputs: int, **knobs):
    """Build a registered model; ``knobs`` are its config keys (validated, defaults filled)."""
    from zoo.models import MODELS
    from zoo.spec import validate_section

    entry = MODELS.get(name)
    config = validate_section("model", entry, {"name": name, **knobs})
    return entry.builder(tuple(input_shape), num_outputs, **config.kwargs())


def load_dataset(name: str, **options):
    """Load a registered dataset as numpy arrays (see :class:`zoo.data.Dataset`)."""
    from zoo.data import DATASETS
    from zoo.spec import validate_section

    entry = DATASETS.get(name)
    config = validate_section("data", entry, {"name": name, **options})
    return entry.builder(**config.kwargs())


def train(overrides: list[str] | None = None, sink=None):
    """Run one training job from config overrides, as ``zoo-train`` would; returns the result.

    Without ``sink`` the run's records stay in memory (no MLflow), which suits notebooks.
    """
    from zoo.run import run
    from zoo.spec import compose_spec
    from zoo.tracking.memory import MemorySink

    spec = compose_spec(overrides or [])
    return run(spec, sink if sink is not None else MemorySink())
