"""Pictures of a whole study: every variant on one figure, seeds pooled (mean and spread).

``PLOTS`` maps a study's ``plot`` kind to the function that draws it and its file name; a new
kind is one function plus one entry. matplotlib is imported when drawing, so the study loader
can check a kind against this table without paying for it; figures are
``matplotlib.figure.Figure`` objects without pyplot, so no backend is ever chosen (see
zoo.report.plots).
"""
from __future__ import annotations

import math

import numpy as np

from zoo.records.stats import RunStats
from zoo.records.summary import layer_profile
from zoo.records.verdict import MIN_WINDOW, windows
from zoo.report.colors import style
from zoo.studies.metrics import default_scale
from zoo.studies.tables import cell

FLOOR = 1e-45  # where an exact zero (every element 0) is drawn on a log axis: below every nonzero float32 norm
DPI = 110


def _figure(**kwargs):
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _geomean(rows: list[np.ndarray]) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.exp(np.mean(np.log(np.maximum(np.stack(rows), FLOOR)), axis=0))


def variant_profiles(groups: dict[str, list[RunStats]], which: str) -> dict[str, np.ndarray]:
    """Per variant, the geometric mean over its seeds of ``layer_profile(stats, which)``
    ("start" or "end"); a variant whose runs have no profile or disagree on depth is left out."""
    out = {}
    for variant, runs in groups.items():
        profiles = [p for p in (layer_profile(s, which) for s in runs) if p is not None]
        if profiles and len({len(p) for p in profiles}) == 1:
            out[variant] = _geomean(profiles)
    return out


def _window_label(groups: dict[str, list[RunStats]], which: str) -> str:
    """The panel's window (zoo.records.verdict.windows: 10% of the steps, at least MIN_WINDOW):
    its steps when every run has the same number of finite steps, else the rule."""
    counts = {int(np.all(np.isfinite(s.grad_norm), axis=1).sum()) for runs in groups.values() for s in runs}
    side = "first" if which == "start" else "last"
    if len(counts) == 1 and (n := counts.pop()) > 0:
        w = windows(n)[0 if which == "start" else -1]
        return f"{side} window: steps {w.start + 1}-{w.stop} of {n}"
    return f"{side} 10% of steps (at least {MIN_WINDOW})"


def gradient_flow_variants(groups: dict[str, list[RunStats]], path, title: str = "") -> None:
    """:func:`gradient_flow_variants_figure`, saved to ``path``."""
    gradient_flow_variants_figure(groups, title).savefig(path, dpi=DPI)


def gradient_flow_variants_figure(groups: dict[str, list[RunStats]], title: str = ""):
    """Per-layer gradient norm, input (0) to output (1), at the start and the end of training:
    one line per variant (geometric mean over its seeds). Depth is normalized so nets of
    different depth share the axis."""
    fig = _figure(figsize=(13, 4.8))
    axes = fig.subplots(1, 2, sharey=True)
    order = {variant: i for i, variant in enumerate(groups)}
    for ax, which in ((axes[0], "start"), (axes[1], "end")):
        for variant, g in variant_profiles(groups, which).items():
            x = np.linspace(0, 1, len(g)) if len(g) > 1 else np.zeros(1)
            ax.semilogy(x, np.maximum(g, FLOOR), ms=2.5, label=variant, **style(order[variant]))
        ax.set_title(_window_label(groups, which))
        ax.set_xlabel("layer position (0 = input side, 1 = output head)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("gradient L2 norm (median over the window)")
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def time_curves(groups: dict[str, list[RunStats]], which: int) -> dict[str, np.ndarray]:
    """Per variant, ||dL/dx_t|| / ||dL/dx_T|| into the first recurrent layer at histogram step
    ``which`` (0: the first, -1: the last), geometric mean over its seeds."""
    out = {}
    for variant, runs in groups.items():
        curves = [s.time_grad[which, 0] / max(s.time_grad[which, 0, -1], FLOOR)
                  for s in runs if s.time_grad.size and np.all(np.isfinite(s.time_grad[which, 0]))]
        if curves and len({len(c) for c in curves}) == 1:
            out[variant] = _geomean(curves)
    return out


def gradient_through_time_variants(groups: dict[str, list[RunStats]], path, title: str = "") -> None:
    """:func:`gradient_through_time_variants_figure`, saved to ``path``."""
    gradient_through_time_variants_figure(groups, title).savefig(path, dpi=DPI)


def gradient_through_time_variants_figure(groups: dict[str, list[RunStats]], title: str = ""):
    """||dL/dx_t|| / ||dL/dx_T|| into the first recurrent layer, at the first and the last
    histogram step: one line per variant (geometric mean over seeds); and, for LSTM variants,
    the mean forget gate over training: how gating earns (or not) its long memory."""
    fig = _figure(figsize=(18, 4.8))
    axes = fig.subplots(1, 3)
    order = {variant: i for i, variant in enumerate(groups)}
    for ax, which, label in ((axes[0], 0, "at initialization"), (axes[1], -1, "at the end")):
        for variant, curve in time_curves(groups, which).items():
            ax.semilogy(np.maximum(curve, FLOOR), label=variant, **{**style(order[variant]), "marker": None})
        ax.set_title(f"gradient through time, {label}")
        ax.set_xlabel("step t: time step or position")
        ax.set_ylabel("gradient reaching step t / reaching the last step")
        ax.grid(alpha=0.3, which="both")
    for variant, runs in groups.items():
        gated = [s for s in runs if s.forget_gate.size]
        if gated:
            axes[2].plot(gated[0].hist_step, np.mean([s.forget_gate[:, 0] for s in gated], axis=0),
                         label=variant, **{**style(order[variant]), "marker": None})
    axes[2].set_title("LSTM mean forget gate over training")
    axes[2].set_xlabel("step")
    axes[2].set_ylim(0, 1)
    axes[2].grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()  # one legend, in the gate panel's free space
    axes[2].legend(handles, labels, fontsize=7, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def pooled(row, metric: str) -> tuple[float, float, float]:
    """(centre, low, high) of a table cell on the metric's own scale: the geometric mean and
    ×/÷ the geometric std factor for log-scale metrics, else mean ± sample std; NaN without data."""
    mean, std = row.stats.get(metric, (math.nan, math.nan))
    std = std if math.isfinite(std) else 0.0
    if default_scale(metric) == "log":
        return 10 ** mean, 10 ** (mean - std), 10 ** (mean + std)
    return mean, mean - std, mean + std


MIN_DECADES = 2.0  # the least a log axis of final_metrics spans: a factor 1.6 is a tenth of its height


def value_range(values: list[float], log: bool) -> tuple[float, float]:
    """The y range of a :func:`final_metrics_figure` panel: on a log axis at least MIN_DECADES
    around the values (an axis zoomed to 0.656 ... 1.03 makes 1.6× look like 10×); on a linear
    axis from 0 (or below, for negative values) to the largest value, with a margin."""
    v = np.array([x for x in values if math.isfinite(x) and (x > 0 or not log)], dtype=np.float64)
    if log:
        if not v.size:
            return 0.1, 10.0
        a, b = np.log10(v.min()), np.log10(v.max())
        pad = max(0.08 * (b - a), (MIN_DECADES - (b - a)) / 2)
        return 10 ** (a - pad), 10 ** (b + pad)
    lo, hi = min(0.0, float(v.min()) if v.size else 0.0), max(0.0, float(v.max()) if v.size else 1.0)
    if hi == lo:
        hi = lo + 1.0
    margin = 0.1 * (hi - lo)
    return (lo - margin if lo < 0 else 0.0), hi + margin


def final_metrics(rows, metrics: list[str], path, title: str = "") -> None:
    """:func:`final_metrics_figure`, saved to ``path``."""
    final_metrics_figure(rows, metrics, title).savefig(path, dpi=DPI)


def final_metrics_figure(rows, metrics: list[str], title: str = ""):
    """One panel per table metric: a dot per variant at its pooled value (as in the table),
    whiskers for the spread over seeds, the number written beside it.

    Dots, not bars: a bar's length reads as the value, so a bar is honest only on a linear axis
    starting at 0. Gradient norms span decades and need a log axis, where a bar would start at
    an arbitrary floor (1.03 against 0.656 drawn as more than 10×); on a log axis the distance
    between dots is the ratio. Linear metrics get an axis that includes 0, so their dots' heights
    compare as ratios too."""
    fig = _figure(figsize=(max(5, 4.2 * len(metrics)), 4.8))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    labels = [", ".join(f"{k.split('.')[-1]}={v}" for k, v in r.variant.items()) for r in rows]
    x = np.arange(len(rows))
    for ax, metric in zip(axes, metrics):
        log = default_scale(metric) == "log"
        shown = []  # every drawn value and whisker end, for the axis range
        for i, row in enumerate(rows):
            centre, lo, hi = pooled(row, metric)
            if not math.isfinite(centre):
                ax.annotate("no data", (i, 0.5), xycoords=("data", "axes fraction"), ha="center",
                            fontsize=7, color="0.4")
                continue
            shown += [centre, lo, hi]
            look = style(i)
            ax.errorbar([i], [centre], yerr=[[centre - lo], [hi - centre]], fmt=look["marker"], ms=7,
                        color=look["color"], capsize=4, lw=1.5)
            ax.annotate(cell(row, metric), (i, centre), xytext=(7, 0), textcoords="offset points",
                        va="center", fontsize=7.5)
        ax.set_ylim(*value_range(shown, log))
        if log:
            ax.set_yscale("log")
            ax.set_title(f"{metric}\n(geometric mean ×/÷ factor, log axis)", fontsize=9)
        else:
            ax.set_title(metric, fontsize=9)
        ax.set_xlim(-0.6, len(rows) - 0.4)
        ax.set_xticks(x, labels, rotation=60 if len(rows) > 3 else 0, ha="right" if len(rows) > 3 else "center",
                      fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


# plot kind (a study's `study.plot`) -> (function, file name under the parent run's plots/)
PLOTS = {
    "layers": (gradient_flow_variants, "gradient_flow_variants.png"),
    "time": (gradient_through_time_variants, "gradient_through_time_variants.png"),
}
