"""Pictures of a whole study: every variant on one figure, seeds pooled (mean and spread)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from zoo.monitor.stats import RunStats  # noqa: E402
from zoo.monitor.summary import layer_profile  # noqa: E402

FLOOR = 1e-30  # where an underflowed (zero) gradient is drawn on a log axis


def _colors(n: int):
    return plt.cm.tab10(np.arange(n) % 10) if n <= 10 else plt.cm.tab20(np.arange(n) % 20)


def _geomean(rows: list[np.ndarray]) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.exp(np.mean(np.log(np.maximum(np.stack(rows), FLOOR)), axis=0))


def gradient_flow_variants(groups: dict[str, list[RunStats]], path, title: str = "") -> None:
    """Per-layer gradient norm, input (0) to output (1), at the start and the end of training:
    one line per variant (geometric mean over its seeds). Depth is normalized so nets of
    different depth share the axis."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    for ax, which, label in ((axes[0], 0, "first 10% of steps"), (axes[1], -1, "last 10% of steps")):
        for color, (variant, runs) in zip(_colors(len(groups)), groups.items()):
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
    fig, axes = plt.subplots(1, 3, figsize=(18, 4.8))
    for ax, which, label in ((axes[0], 0, "at initialization"), (axes[1], -1, "at the end")):
        for color, (variant, runs) in zip(_colors(len(groups)), groups.items()):
            curves = [s.time_grad[which, 0] / max(s.time_grad[which, 0, -1], FLOOR)
                      for s in runs if s.time_grad.size and np.all(np.isfinite(s.time_grad[which, 0]))]
            if curves and len({len(c) for c in curves}) == 1:
                ax.semilogy(np.maximum(_geomean(curves), FLOOR), color=color, label=variant)
        ax.set_title(f"gradient through time, {label}")
        ax.set_xlabel("time step t")
        ax.set_ylabel("gradient reaching step t / reaching the last step")
        ax.grid(alpha=0.3, which="both")
    for color, (variant, runs) in zip(_colors(len(groups)), groups.items()):
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
    """One panel per table metric: a bar per variant, mean over seeds with the std as error bar;
    log scale where the values span more than two decades."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(5, 4.2 * len(metrics)), 4.8), squeeze=False)
    labels = [", ".join(str(v) for v in r.variant.values()) for r in rows]
    for ax, metric in zip(axes[0], metrics):
        mean = np.array([r.stats.get(metric, (np.nan, np.nan))[0] for r in rows], dtype=float)
        std = np.array([r.stats.get(metric, (np.nan, np.nan))[1] for r in rows], dtype=float)
        ax.bar(np.arange(len(rows)), np.nan_to_num(mean), yerr=np.nan_to_num(std), capsize=3,
               color=_colors(len(rows)))
        positive = mean[np.isfinite(mean) & (mean > 0)]
        if len(positive) and positive.max() / positive.min() > 100 and np.all(mean[np.isfinite(mean)] > 0):
            ax.set_yscale("log")
        ax.set_xticks(np.arange(len(rows)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
