"""Pictures of one run, drawn from its RunStats (no training code, no TensorFlow)."""
from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from zoo.monitor.stats import RunStats  # noqa: E402
from zoo.monitor.verdict import Verdict, windows  # noqa: E402

MAX_SNAPSHOTS = 6
MAX_HIST_PANELS = 6


def _positive_log10(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(a) & (a > 0), np.log10(a), np.nan)


def _short(names) -> list[str]:
    return [str(n).replace("_dense", "").replace("block", "b") for n in names]


def gradient_flow(stats: RunStats, path, verdict: Verdict | None = None, title: str = "") -> None:
    """:func:`gradient_flow_figure`, saved to ``path``."""
    fig = gradient_flow_figure(stats, verdict, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gradient_flow_figure(stats: RunStats, verdict: Verdict | None = None, title: str = ""):
    """Left: gradient norm per layer (input -> output) at several points of training.
    Right: the same over every step as a heatmap, so a front of vanishing is visible."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [1, 1.3]})
    n_steps, n_layers = stats.grad_norm.shape
    x = np.arange(n_layers)
    spans = windows(n_steps) if n_steps else []
    picks = np.unique(np.linspace(0, len(spans) - 1, min(MAX_SNAPSHOTS, len(spans))).astype(int)) if spans else []
    colors = plt.cm.viridis(np.linspace(0, 1, max(len(picks), 1)))
    if n_steps and np.all(np.isfinite(stats.grad_norm[0])):  # the gradient before any update
        first = stats.grad_norm[0]
        left.plot(x, np.where(first > 0, first, np.nan), "--", color="black", lw=1.2,
                  label="step 1 (initialization)")
    for color, i in zip(colors, picks):
        w = spans[i]
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a window of non-finite steps: a gap, said by the verdict
            g = np.nanmedian(np.where(np.isfinite(stats.grad_norm[w]), stats.grad_norm[w], np.nan), axis=0)
        left.plot(x, np.where(g > 0, g, np.nan), "o-", color=color, ms=3,
                  label=f"steps {w.start + 1}-{w.stop}")
        underflow = np.flatnonzero(g == 0)
    left.set_yscale("log")
    if len(picks) and len(underflow):  # exact zeros have no logarithm: mark them on the floor
        floor = left.get_ylim()[0]
        left.plot(underflow, np.full(len(underflow), floor), "x", color="crimson", ms=8, mew=2,
                  label="gradient exactly 0 (every element)", clip_on=False)
    left.set_xticks(x)
    left.set_xticklabels(_short(stats.layers), rotation=90, fontsize=7)
    left.set_xlabel("layer (input → output)")
    left.set_ylabel("‖∂L/∂W‖, data loss (median over steps)")
    left.grid(True, which="both", alpha=0.3)
    if len(picks):
        left.legend(fontsize=7)
    heat = _positive_log10(stats.grad_norm.T) if n_steps else np.zeros((n_layers, 1))
    im = right.imshow(heat, aspect="auto", origin="lower", cmap="magma", interpolation="nearest",
                      extent=(0.5, max(n_steps, 1) + 0.5, -0.5, n_layers - 0.5))
    right.set_yticks(x)
    right.set_yticklabels(_short(stats.layers), fontsize=7)
    right.set_xlabel("step")
    right.set_ylabel("layer")
    fig.colorbar(im, ax=right, label="log10 ‖∂L/∂W‖")
    head = title or "gradient flow"
    if verdict is not None:
        head += f"\nverdict: {verdict.label} — {verdict.reason}"
    fig.suptitle(head, fontsize=10)
    fig.tight_layout()
    return fig


def gradient_histograms(stats: RunStats, path, title: str = "") -> None:
    """Histograms of log10|g| over time for a few layers from input to output (TensorBoard's
    'distributions' view, on a log axis so vanishing shows as a downward drift)."""
    n_layers = len(stats.layers)
    picks = np.unique(np.linspace(0, n_layers - 1, min(MAX_HIST_PANELS, n_layers)).astype(int))
    fig, axes = plt.subplots(1, len(picks), figsize=(3.2 * len(picks), 3.8), sharey=True, squeeze=False)
    lo, hi = _occupied_range(stats)
    steps = stats.hist_step
    for ax, layer in zip(axes[0], picks):
        counts = stats.hist_counts[:, layer, :].astype(np.float64) if len(steps) else np.zeros((1, 1))
        totals = counts.sum(axis=1, keepdims=True) + (stats.hist_zeros[:, layer:layer + 1] if len(steps) else 0)
        frac = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        edges = stats.hist_edges
        extent = (steps[0], steps[-1] if len(steps) > 1 else steps[0] + 1, edges[0], edges[-1]) if len(steps) else (0, 1, edges[0], edges[-1])
        ax.imshow(frac.T, aspect="auto", origin="lower", cmap="Blues", extent=extent, interpolation="nearest")
        ax.set_ylim(lo, hi)
        zeros = float(stats.hist_zeros[-1, layer] / max(totals[-1, 0], 1)) if len(steps) else 0.0
        ax.set_title(f"{stats.layers[layer]}\nzeros at end: {zeros:.1%}", fontsize=8)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("log10 |g|")
    fig.suptitle(title or "gradient histograms over time (share of a layer's entries per bin)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _occupied_range(stats: RunStats, pad: float = 1.0) -> tuple[float, float]:
    """The log10|g| span the histograms cover (a decade of margin each side): the bins span all
    of float32 (1e-45 ... 1e39), which would squash a run's few decades into a line."""
    edges = stats.hist_edges
    used = np.flatnonzero(stats.hist_counts.sum(axis=(0, 1))) if stats.hist_counts.size else []
    if not len(used):
        return float(edges[0]), float(edges[-1])
    return (max(float(edges[used[0]]) - pad, float(edges[0])),
            min(float(edges[used[-1] + 1]) + pad, float(edges[-1])))


def gradient_through_time(stats: RunStats, path, title: str = "") -> None:
    """Gradient reaching step t of each recurrent layer's input (||dL/dx_t|| for the first layer,
    ||dL/dh_t|| of the layer below for the others) against t, one panel per layer, one curve per point
    of training: the signature of vanishing gradients through time is a curve that falls
    steeply towards t = 0, and a gated cell earns its keep by flattening it during training."""
    n_seq = len(stats.seq_layers)
    fig, axes = plt.subplots(1, n_seq, figsize=(6 * n_seq, 4.2), squeeze=False)
    picks = np.unique(np.linspace(0, len(stats.hist_step) - 1,
                                  min(MAX_SNAPSHOTS, len(stats.hist_step))).astype(int))
    colors = plt.cm.viridis(np.linspace(0, 1, max(len(picks), 1)))
    for s, ax in enumerate(axes[0]):
        for color, h in zip(colors, picks):
            norms = stats.time_grad[h, s]
            ax.plot(np.arange(len(norms)), np.where(norms > 0, norms, np.nan), color=color,
                    label=f"step {stats.hist_step[h]}")
        ax.set_yscale("log")
        ax.set_xlabel("time step t (input order)")
        ax.set_ylabel("‖∂L/∂x_t‖" if s == 0 else "‖∂L/∂h_t‖ (layer below)")
        ax.set_title(f"into {stats.seq_layers[s]}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or "gradient through time", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
