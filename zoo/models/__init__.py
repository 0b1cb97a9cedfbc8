"""The model registry. Every module in this package registers its builders on import.

A builder is ``build(input_shape, num_outputs, **knobs) -> keras.Model`` whose knobs are the
fields of its schema; it returns a functional model with layers named by their place
(``block03_dense``), because the monitor reports statistics under those names. The model's
output is logits (classification) or predictions (regression); heads never apply softmax, so the
loss can use the stable from-logits form.

Tags: ``input_kind`` (what data shape the model takes: "flat", "image", "sequence"; a schema
may refine it with an ``input_kind`` property), ``memory`` (the family's memory estimate,
``(section, zoo.config.budget.Data) -> zoo.config.budget.Estimate | None``, beside its builder). A family's
Keras layers are declared beside its builder too (zoo.models.serializable).
"""
from __future__ import annotations

import importlib
import pkgutil

import zoo.config.budget as budget
from zoo.config.registry import Registry

MODELS = Registry("model")


def estimate(model_name: str, model, data_name: str, data) -> budget.Estimate | None:
    """zoo.config.budget.estimate with the family's estimator looked up by its name: the memory one run
    of ``model_name`` on ``data_name`` needs, or None when either has no estimator."""
    memory = MODELS.get(model_name).tags.get("memory") if model_name in MODELS else None
    return budget.estimate(memory, model, data_name, data)

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
