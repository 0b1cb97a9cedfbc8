"""The metric names a run logs, in one place, and the scale each is compared on.

A claim or a table that names a metric no run logs would be judged "no data" after the whole
sweep; checking names against :func:`logged` fails the study file before training instead.

Gradient norms and their ratios span 1e-18 … 1e3: their arithmetic mean over seeds is the
largest seed, and a difference of means says nothing about the others. Those metrics
(``LOG_SCALE``) are compared and tabulated as log10 values, so the mean is a geometric mean and
a ``factor`` is a shift by log10(factor). An exact zero (every element 0) counts as ``TINY`` first.
"""
from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from zoo.instruments import REGISTRY
from zoo.instruments.series import mlflow_names
from zoo.models import MODELS
from zoo.models.blocks import ACTIVATIONS

DIVERGED = "diverged"  # pseudo-metric: 1 per diverged run, 0 per clean one (a divergence rate)
TINY = 1e-45           # where an exact zero sits before the log (below every nonzero float32 norm)

# ``*_init``: the value at step 1, before any update; ``*_start``: the median over the first
# window of steps; ``*_end``: the median over the last window (zoo.records.summary).
BASE = (
    DIVERGED,
    "final/val_loss", "final/val_accuracy", "final/train_loss", "final/train_accuracy",
    *(f"summary/{m}_{when}" for m in ("grad_first", "grad_last", "flow", "block_flow", "grad_last_block_out")
      for when in ("init", "start", "end")),
    # the edge of stability, from sharpness readings (trainer.sharpness_every > 0: zoo.records.summary)
    *(f"summary/sharpness_{m}" for m in ("init_over_threshold", "max_over_threshold", "end_over_threshold",
                                         "rise", "reached_step", "in_band")),
    "summary/eos_loss_increases", "summary/eos_loss_ratio",
    "3 sharpness/*",
    "health/flow_min", "health/flow_max", "health/flow_first_window",
    "health/scale_first_window", "health/scale_max",
    "baseline/*",
    "pretrain/recon_loss/*", "pretrain/recon_loss_init/*",
    # per-layer series at their last logged value (an epoch's end)
    "update_ratio/*",
    "progress/train_loss_ratio",
    # the per-step series at their last logged value, as zoo.instruments.series declares them
    *mlflow_names(),
)
LOG_SCALE = ("summary/grad_*", "summary/flow_*", "summary/block_flow_*", "summary/time_grad_ratio_*", "health/flow_*", "health/scale_*")
SCALES = ("linear", "log")


def logged() -> tuple[str, ...]:
    """Every name (pattern) a run can log: the fixed ones, and what each instrument logs at an
    epoch's end and gives a run as summary numbers (zoo.instruments, as registered now)."""
    return (*BASE, *(name for cls in REGISTRY for name in (*cls.mlflow, *cls.summary_names)))


def is_logged(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in logged())


def default_scale(name: str) -> str:
    return "log" if any(fnmatch.fnmatchcase(name, p) for p in LOG_SCALE) else "linear"


def to_scale(value: float, scale: str) -> float:
    """A metric value on its comparison scale; ``nan`` for a negative value on log scale."""
    if scale == "linear":
        return value
    return math.log10(max(value, TINY)) if value >= 0 else math.nan


# --- which runs log a metric at all -------------------------------------------------------------
# Most metrics every run logs; these only runs with the layers that produce them. A claim that
# compares one of them over runs that cannot log it (``saturated_fraction`` of a relu net) would
# be "no data" after the whole sweep: zoo.studies.validate.check_metrics refuses it before.
# A test says, from a job's params (its flattened resolved config), True / False, or None when
# the config cannot tell (``model=custom``: its layers are the user's).
@dataclass(frozen=True)
class Needs:
    patterns: tuple[str, ...]
    what: str                                      # "a sigmoid or tanh activation layer"
    keys: tuple[str, ...]                          # the params that decide, shown in the error
    test: Callable[[Mapping[str, str]], bool | None]


def _model(params: Mapping[str, str]):
    name = params.get("model.name")
    return MODELS.get(name) if name in MODELS and name != "custom" else None


def _activation_tagged(tag: str) -> Callable[[Mapping[str, str]], bool | None]:
    """Runs whose activation layers (the builder's ``model.activation``; none without that key,
    as in lstm, gru, deep_linear) carry the activation registry's ``tag`` (zoo.models.blocks)."""
    def test(params):
        if _model(params) is None:
            return None
        kind = params.get("model.activation")
        if kind is None:
            return False
        return bool(ACTIVATIONS.get(kind).tags.get(tag)) if kind in ACTIVATIONS else None
    return test


def _model_tagged(tag: str, value=True) -> Callable[[Mapping[str, str]], bool | None]:
    def test(params):
        model = _model(params)
        return None if model is None else model.tags.get(tag) == value
    return test


def _blocks(params: Mapping[str, str]) -> bool | None:
    if not _model_tagged("input_kind", "sequence")(params):
        return _model_tagged("input_kind", "sequence")(params)
    try:
        return int(params.get("model.depth", "1")) >= 2
    except ValueError:
        return None


def _sharpness(params: Mapping[str, str]) -> bool | None:
    try:
        return int(params.get("trainer.sharpness_every", "0")) > 0
    except ValueError:
        return None


def _pretrains(params: Mapping[str, str]) -> bool | None:
    try:
        return float(params.get("pretrain.epochs", "0")) > 0
    except ValueError:
        return None


NEEDS = (
    Needs(("saturated_fraction/*",), "a sigmoid or tanh activation layer", ("model.activation",),
          _activation_tagged("saturation")),
    Needs(("dead_fraction/*",), "a ReLU activation layer", ("model.activation",), _activation_tagged("dies")),
    Needs(("time_grad_ratio/*", "summary/time_grad_ratio_*"), "a sequence model (simple_rnn, lstm, gru, transformer)",
          ("model.name",), _model_tagged("input_kind", "sequence")),
    Needs(("summary/block_flow_*",), "a sequence model of at least 2 blocks (model.depth >= 2)",
          ("model.name", "model.depth"), _blocks),
    Needs(("forget_gate/*", "summary/forget_gate_*"), "an LSTM", ("model.name",), _model_tagged("forget_gates")),
    Needs(("pretrain/*",), "pretraining (pretrain.epochs > 0)", ("pretrain.epochs",), _pretrains),
    Needs(("summary/grad_last_block_out_*",), "a sequence model (simple_rnn, lstm, gru, transformer)",
          ("model.name",), _model_tagged("input_kind", "sequence")),
    Needs(("summary/sharpness_*", "summary/eos_*", "3 sharpness/*"), "sharpness readings (trainer.sharpness_every > 0)",
          ("trainer.sharpness_every",), _sharpness),
)


def needs_of(name: str) -> Needs | None:
    """What a run needs to log metric ``name``; None when every run logs it."""
    return next((n for n in NEEDS if any(fnmatch.fnmatchcase(name, p) for p in n.patterns)), None)
