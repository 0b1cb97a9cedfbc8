"""Every per-step series the monitor measures, declared once.

A :class:`Series` is one quantity measured at every optimizer step: its axes (none, one value
per monitored kernel, one per auxiliary head), what it means, how a ``log_every`` window of it
reaches MLflow, and how the raw statistics file keeps it. Everything else is derived from
:data:`STEP_SERIES`:

- the packed vector the compiled step returns (``Meter.layout``, zoo.instruments.meter), whose
  values the meter computes under these names;
- the MLflow points per window (zoo.records.recorder, through ``Field.window_metrics``);
- the raw file's arrays, their shapes, dtypes and documentation (zoo.records.stats.RunStats);
- the MLflow names a study may compare (zoo.studies.metrics.logged).

So a new per-step series is one entry here and its computation in ``Meter.before_update`` (or
``after_update``). The instruments of histogram steps declare their fields where they are
computed (zoo.instruments).

numpy only: no TensorFlow.
"""
from __future__ import annotations

from dataclasses import dataclass

from zoo.instruments.layout import Field

AXES = {"L": "monitored kernel (input side first)", "X": "auxiliary head",
        "V": "other monitored variable (GradientMonitor(variables=...): biases, norm scales, ...)",
        "R": "recorded gradient element (GradientMonitor(elements=...))"}


@dataclass(frozen=True)
class Series:
    name: str
    axes: tuple[str, ...]            # after the step axis: () a scalar, or one axis of AXES
    doc: str
    window: str | None = None        # how a log_every window reaches MLflow: "mean" | "last" | None
    mlflow_name: str | None = None   # MLflow key (prefix for per-layer series); default: name
    undefined_nan: bool = False      # NaN means "does not apply" (accuracy of a regression): not logged
    penalized_only: bool = False     # sent to MLflow only when the model has a weight penalty
    raw: str | None = "float"        # in the raw file as "float" (float64) or "bool"; None: not kept
    log10: bool = False              # MLflow gets log10 of the value (zoo.instruments.layout.log10_for_charts)

    def field(self, labels: dict[str, tuple[str, ...]], penalized: bool) -> Field:
        """This series for one model: ``labels`` names each axis' entries (``{"L": kernels,
        "X": aux_heads}``)."""
        return Field(self.name, tuple(len(labels[a]) for a in self.axes),
                     labels[self.axes[0]] if self.axes else (),
                     window=None if self.penalized_only and not penalized else self.window,
                     mlflow_name=self.mlflow_name, undefined_nan=self.undefined_nan, log10=self.log10)

    def mlflow_names(self) -> tuple[str, ...]:
        """The MLflow keys (``*`` for a label) this series can log; none without a window."""
        if self.window is None:
            return ()
        key = self.mlflow_name or self.name
        return (f"{key}/*",) if self.axes else (key,)


# MLflow's run page (*Model metrics*) draws one chart per key, in sections named by the key's
# part before its last "/", sorted by name with the unprefixed keys last (MLflow 3.17: by code
# point for a run without images, as localeCompare with them; digits sort before letters in
# both). So the story's two sections are numbered: the first screen is the gradient flow, then
# learning, before the per-layer series and the end-of-run numbers (baseline/*, final/*, ...).
GRADIENT = "1 gradient flow"
LEARNING = "2 learning"
# per window, from grad_norm at the window's last step: the first (input side) and last (output
# side) monitored kernel's gradient norm and their ratio, the verdict's flow, all as log10
FLOW_STORY = {"first": f"{GRADIENT}/log10_first_layer", "last": f"{GRADIENT}/log10_last_layer",
              "flow": f"{GRADIENT}/log10_flow"}
EPOCH_KEYS = {"val_loss": f"{LEARNING}/val_loss", "val_accuracy": f"{LEARNING}/val_accuracy"}
HISTOGRAM_IMAGES = f"{GRADIENT}/histograms"  # the image series of log10|g| histograms (zoo.report.run_report)

STEP_SERIES = (
    Series("loss", (), "batch data loss of the main head (no weight penalty)", window="mean",
           mlflow_name=f"{LEARNING}/loss"),
    Series("metric", (), "batch accuracy (NaN for regression)", window="mean",
           mlflow_name=f"{LEARNING}/accuracy", undefined_nan=True),
    Series("finite", (), "True where the loss and every gradient were finite", raw="bool"),
    Series("skipped", (), "True where the optimizer applied no update: a loss scaler skipped the step "
           "because its float16 gradient overflowed (mixed precision)", raw="bool"),
    Series("penalty", (), "the weight penalty's value (0 without a regularizer)", window="mean",
           mlflow_name=f"{LEARNING}/penalty", penalized_only=True),
    Series("aux_loss", ("X",), "each auxiliary head's loss", window="mean"),
    Series("grad_norm", ("L",), "gradient of the data objective (main + weighted auxiliary losses), "
           "before clipping: what vanishes or explodes", window="last", mlflow_name="log10_grad_norm",
           log10=True),
    Series("grad_norm_total", ("L",), "data objective + weight penalty, before clipping", window="last",
           mlflow_name="log10_grad_norm_total", log10=True, penalized_only=True),
    Series("grad_norm_clipped", ("L",), "what the optimizer received (total, after clipping)"),
    Series("weight_norm", ("L",), "the kernel's norm before the update"),
    Series("update_norm", ("L",), "||W_after - W_before|| of the step (kept as update_ratio)", raw=None),
    Series("var_grad_norm", ("V",), "gradient norm of each other monitored variable, as grad_norm is for "
           "the kernels", window="last", mlflow_name="log10_grad_norm", log10=True),
    Series("grad_elements", ("R",), "the gradient's elements of each variable recorded element by element",
           window="last", mlflow_name="grad_element"),
)


def step_fields(kernels: tuple[str, ...], aux_heads: tuple[str, ...], penalized: bool,
                others: tuple[str, ...] = (), elements: tuple[str, ...] = ()) -> tuple[Field, ...]:
    """:data:`STEP_SERIES` for one model: its kernels, auxiliary heads, other monitored
    variables and recorded gradient elements, with or without a weight penalty."""
    labels = {"L": tuple(kernels), "X": tuple(aux_heads), "V": tuple(others), "R": tuple(elements)}
    return tuple(s.field(labels, penalized) for s in STEP_SERIES)


def mlflow_key(name: str) -> str:
    """The MLflow key (prefix, for a per-layer series) of the step series ``name``."""
    series = next(s for s in STEP_SERIES if s.name == name)
    return series.mlflow_name or series.name


def mlflow_names() -> tuple[str, ...]:
    """Every MLflow key (pattern) the per-step series can log, with the flow story and the
    epoch's validation numbers."""
    return (*(name for s in STEP_SERIES for name in s.mlflow_names()), *FLOW_STORY.values(),
            *EPOCH_KEYS.values())
