"""Pictures of a whole study: every variant on one figure, seeds pooled (mean and spread).

``PLOTS`` maps a study's ``plot`` kind to the function that draws it and its file name; a new
kind is one function plus one entry. matplotlib is imported when drawing, so the study loader
can check a kind against this table without paying for it.
"""
from __future__ import annotations

import math

import numpy as np

from zoo.monitor.stats import RunStats
from zoo.monitor.summary import layer_profile
from zoo.studies.metrics import default_scale

FLOOR = 1e-45  # where an exact zero (every element 0) is drawn on a log axis: below every nonzero float32 norm


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(plt, n: int):
    return plt.cm.tab10(np.arange(n) % 10) if n <= 10 else plt.cm.tab20(np.arange(n) % 20)


def _geomean(rows: list[np.ndarray]) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.exp(np.mean(np.log(np.maximum(np.stack(rows), FLOOR)), axis=0))


def gradient_flow_variants(groups: dict[str, list[RunStats]], path, title: str = "") -> None:
    """Per-layer gradient norm, input (0) to output (1), at the start and the end of training:
    one line per variant (geometric mean over its seeds). Depth is normalized so nets of
    different depth share the axis."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    for ax, which, label in ((axes[0], "start", "first 10% of steps"), (axes[1], "end", "last 10% of steps")):
        for color, (variant, runs) in zip(_colors(plt, len(groups)), groups.items()):
            profiles = [p for p in (layer_profile(s, which) for s in runs) if p is not None]
            if not profiles or len({len(p) for p in profiles}) != 1:
                continue
            g = _geomean(profiles)
            x = np.linspace(0, 1, len(g)) if len(g) > 1 else np.zeros(1)
            ax.semilogy(x, np.maximum(g, FLOOR), "-o", ms=2.5, color=color, label=variant)
        ax.set_title(label)
        ax.set_xlabel("layer position (0 = input side, 1 = output head)")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("gradient L2 norm (median over the window)")
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gradient_through_time_variants(groups: dict[str, list[RunStats]], path, title: str = "") -> None:
    """||dL/dx_t|| / ||dL/dx_T|| into the first recurrent layer, at the first and the last
    histogram step: one line per variant (geometric mean over seeds); and, for LSTM variants,
    the mean forget gate over training: how gating earns (or not) its long memory."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    for ax, which, label in ((axes[0], 0, "at initialization"), (axes[1], -1, "at the end")):
        for color, (variant, runs) in zip(_colors(plt, len(groups)), groups.items()):
            curves = [s.time_grad[which, 0] / max(s.time_grad[which, 0, -1], FLOOR)
                      for s in runs if s.time_grad.size and np.all(np.isfinite(s.time_grad[which, 0]))]
            if curves and len({len(c) for c in curves}) == 1:
                ax.semilogy(np.maximum(_geomean(curves), FLOOR), color=color, label=variant)
        ax.set_title(f"gradient through time, {label}")
        ax.set_xlabel("time step t")
        ax.set_ylabel("gradient reaching step t / reaching the last step")
        ax.grid(alpha=0.3, which="both")
    for color, (variant, runs) in zip(_colors(plt, len(groups)), groups.items()):
        gated = [s for s in runs if s.forget_gate.size]
        if gated:
            axes[2].plot(gated[0].hist_step, np.mean([s.forget_gate[:, 0] for s in gated], axis=0),
                         color=color, label=variant)
    axes[2].set_title("LSTM mean forget gate over training")
    axes[2].set_xlabel("step")
    axes[2].set_ylim(0, 1)
    axes[2].grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()  # one legend, in the gate panel's free space
    axes[2].legend(handles, labels, fontsize=7, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def final_metrics(rows, metrics: list[str], path, title: str = "") -> None:
    """One panel per table metric: a bar per variant with the spread over seeds as error bar.
    Log-scale metrics (zoo.studies.metrics) are drawn as geometric mean ×/÷ geometric std on a
    log axis, like the table; others as mean ± sample std."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(5, 4.2 * len(metrics)), 4.8), squeeze=False)
    labels = [", ".join(str(v) for v in r.variant.values()) for r in rows]
    for ax, metric in zip(axes[0], metrics):
        mean = np.array([r.stats.get(metric, (math.nan, math.nan))[0] for r in rows], dtype=float)
        std = np.nan_to_num(np.array([r.stats.get(metric, (math.nan, math.nan))[1] for r in rows], dtype=float))
        if default_scale(metric) == "log":
            center = 10 ** mean
            yerr = np.nan_to_num(np.stack([center - 10 ** (mean - std), 10 ** (mean + std) - center]))
            ax.bar(np.arange(len(rows)), np.nan_to_num(center), yerr=yerr, capsize=3, color=_colors(plt, len(rows)))
            if np.isfinite(mean).any():
                ax.set_yscale("log")
            ax.set_title(f"{metric}\n(geometric mean ×/÷ factor)", fontsize=9)
        else:
            ax.bar(np.arange(len(rows)), np.nan_to_num(mean), yerr=std, capsize=3, color=_colors(plt, len(rows)))
            ax.set_title(metric, fontsize=9)
        ax.set_xticks(np.arange(len(rows)), labels, rotation=60, ha="right", fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# plot kind (a study's `study.plot`) -> (function, file name under the parent run's plots/)
PLOTS = {
    "layers": (gradient_flow_variants, "gradient_flow_variants.png"),
    "time": (gradient_through_time_variants, "gradient_through_time_variants.png"),
}
