"""Pictures of one run, drawn from its RunStats (no training code, no TensorFlow).

Every figure is a ``matplotlib.figure.Figure`` built without pyplot: nothing here chooses a
backend, so drawing a run's plots never changes the user's (a notebook's figures keep showing
inline after ``zoo.train()``). ``Figure.savefig`` renders a file with Agg by itself, and
:func:`rgb` renders to pixels through an Agg canvas of its own.
"""
from __future__ import annotations

import warnings

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from zoo.records.stats import RunStats
from zoo.records.verdict import Verdict, windows

MAX_SNAPSHOTS = 6
MAX_HIST_PANELS = 6
MAX_TIME_COLUMNS = 4  # panels per row of the gradient-through-time figure
MAX_STEP_IMAGES = 20   # histogram images per run for MLflow's step slider (first and last always in)
DPI = 110
STEP_IMAGE_DPI = 100
STEP_IMAGE_INCHES = 5.2


def _positive_log10(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(a) & (a > 0), np.log10(a), np.nan)


def _short(names) -> list[str]:
    return [str(n).replace("_dense", "").replace("block", "b") for n in names]


def save(fig: Figure, path) -> None:
    fig.savefig(path, dpi=DPI)


def rgb(fig: Figure, dpi: int = STEP_IMAGE_DPI) -> np.ndarray:
    """The figure's pixels, [height, width, 3] uint8, rendered by an Agg canvas of its own."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def snapshot_windows(n_steps: int) -> list[slice]:
    """The windows of steps the left panel of :func:`gradient_flow_figure` draws: at most
    MAX_SNAPSHOTS, spread from the first to the last."""
    spans = windows(n_steps) if n_steps else []
    if not spans:
        return []
    picks = np.unique(np.linspace(0, len(spans) - 1, min(MAX_SNAPSHOTS, len(spans))).astype(int))
    return [spans[i] for i in picks]


def window_median(grad_norm: np.ndarray, w: slice) -> np.ndarray:
    """Per layer, the median gradient norm over the finite steps of window ``w`` (NaN where none is)."""
    g = grad_norm[w]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a window of non-finite steps: a gap, said by the verdict
        return np.nanmedian(np.where(np.isfinite(g), g, np.nan), axis=0)


def gradient_flow(stats: RunStats, path, verdict: Verdict | None = None, title: str = "") -> None:
    """:func:`gradient_flow_figure`, saved to ``path``."""
    save(gradient_flow_figure(stats, verdict, title), path)


def gradient_flow_figure(stats: RunStats, verdict: Verdict | None = None, title: str = "") -> Figure:
    """Left: gradient norm per layer (input -> output) at several points of training.
    Right: the same over every step as a heatmap, so a front of vanishing is visible."""
    fig = Figure(figsize=(13, 4.8))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    n_steps, n_layers = stats.grad_norm.shape
    x = np.arange(n_layers)
    spans = snapshot_windows(n_steps)
    colors = colormaps["viridis"](np.linspace(0, 1, max(len(spans), 1)))
    if n_steps and np.all(np.isfinite(stats.grad_norm[0])):  # the gradient before any update
        first = stats.grad_norm[0]
        left.plot(x, np.where(first > 0, first, np.nan), "--", color="black", lw=1.2,
                  label="step 1 (initialization)")
    underflow = np.array([], dtype=int)
    for color, w in zip(colors, spans):
        g = window_median(stats.grad_norm, w)
        left.plot(x, np.where(g > 0, g, np.nan), "o-", color=color, ms=3,
                  label=f"steps {w.start + 1}-{w.stop}")
        underflow = np.flatnonzero(g == 0)  # the last window's
    left.set_yscale("log")
    if len(underflow):  # exact zeros have no logarithm: mark them on the floor
        floor = left.get_ylim()[0]
        left.plot(underflow, np.full(len(underflow), floor), "x", color="crimson", ms=8, mew=2,
                  label="gradient exactly 0 (every element)", clip_on=False)
    left.set_xticks(x)
    left.set_xticklabels(_short(stats.layers), rotation=90, fontsize=7)
    left.set_xlabel("layer (input → output)")
    left.set_ylabel("‖∂L/∂W‖, data loss (median over steps)")
    left.grid(True, which="both", alpha=0.3)
    if len(spans):
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
    _fixed_margins(fig, _short(stats.layers))
    return fig


def _fixed_margins(fig: Figure, names: list[str]) -> None:
    """Margins for :func:`gradient_flow_figure` from its layer names' length, in inches: what
    ``tight_layout`` found by drawing the figure once more (half its cost)."""
    width, height = fig.get_size_inches()
    label = 0.06 * max((len(n) for n in names), default=1)  # a 7-point character is ~0.06 in
    left, right, gap = 1.05, 0.2, 0.6 + label  # the gap holds the right panel's layer names and "layer"
    axes = (width - left - right - gap) / 2
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - 0.75 / height,
                        bottom=(0.5 + label) / height, wspace=gap / axes)


def hist_panels(n_layers: int) -> np.ndarray:
    """The layers :func:`gradient_histograms_figure` shows: at most MAX_HIST_PANELS, input to output."""
    return np.unique(np.linspace(0, n_layers - 1, min(MAX_HIST_PANELS, n_layers)).astype(int))


def entry_shares(stats: RunStats) -> tuple[np.ndarray, np.ndarray]:
    """(share of each layer's entries per bin [H, L, B], share that is exactly 0 [H, L]) at
    every histogram step: counts over all of the layer's entries, zeros included."""
    counts = stats.hist_counts.astype(np.float64)
    zeros = stats.hist_zeros.astype(np.float64)
    totals = counts.sum(axis=-1) + zeros
    safe = np.where(totals > 0, totals, 1.0)
    return counts / safe[..., None], zeros / safe


def step_edges(steps: np.ndarray) -> np.ndarray:
    """Cell edges on the step axis, one cell per histogram step centred on it: halfway between
    neighbours, and half a gap beyond the ends (one step wide for a single histogram)."""
    steps = np.asarray(steps, dtype=np.float64)
    if len(steps) == 1:
        return np.array([steps[0] - 0.5, steps[0] + 0.5])
    mids = (steps[1:] + steps[:-1]) / 2
    return np.concatenate([[2 * steps[0] - mids[0]], mids, [2 * steps[-1] - mids[-1]]])


def gradient_histograms(stats: RunStats, path, title: str = "") -> None:
    """:func:`gradient_histograms_figure`, saved to ``path``."""
    save(gradient_histograms_figure(stats, title), path)


def gradient_histograms_figure(stats: RunStats, title: str = "") -> Figure:
    """Histograms of log10|g| over time for a few layers from input to output (TensorBoard's
    'distributions' view, on a log axis so vanishing shows as a downward drift): each column is
    one histogram step, its colour the share of the layer's entries in each bin."""
    picks = hist_panels(len(stats.layers))
    fig = Figure(figsize=(3.2 * len(picks), 3.8))
    axes = fig.subplots(1, len(picks), sharey=True, squeeze=False)[0]
    lo, hi = occupied_range(stats)
    steps = stats.hist_step
    shares, zeros = entry_shares(stats)
    for ax, layer in zip(axes, picks):
        if len(steps):
            edges = step_edges(steps)
            if np.allclose(np.diff(edges), edges[1] - edges[0]):  # evenly spaced: one raster, quick to draw
                ax.imshow(shares[:, layer, :].T, aspect="auto", origin="lower", cmap="Blues", vmin=0,
                          interpolation="nearest", extent=(edges[0], edges[-1], stats.hist_edges[0], stats.hist_edges[-1]))
            else:
                ax.pcolormesh(edges, stats.hist_edges, shares[:, layer, :].T, cmap="Blues", vmin=0, shading="flat")
            ax.set_title(f"{stats.layers[layer]}\nexactly 0 at step {steps[-1]}: {zeros[-1, layer]:.1%}",
                         fontsize=8)
        else:
            ax.set_title(f"{stats.layers[layer]}\nno histogram recorded", fontsize=8)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("step")
    axes[0].set_ylabel("log10 |g|")
    fig.suptitle(title or "gradient histograms over time (share of a layer's entries per bin)", fontsize=10)
    # fixed margins, in inches (tight_layout drew the figure once more to find about these)
    width, height = fig.get_size_inches()
    left, right, gap = 0.7, 0.15, 0.25
    panel = (width - left - right - gap * (len(picks) - 1)) / len(picks)
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=0.5 / height, top=1 - 0.85 / height,
                        wspace=gap / panel)
    return fig


def occupied_range(stats: RunStats, pad: float = 1.0) -> tuple[float, float]:
    """The log10|g| span the histograms cover (a decade of margin each side): the bins span all
    of float32 (1e-45 ... 1e39), which would squash a run's few decades into a line."""
    edges = stats.hist_edges
    used = np.flatnonzero(stats.hist_counts.sum(axis=(0, 1))) if stats.hist_counts.size else []
    if not len(used):
        return float(edges[0]), float(edges[-1])
    return (max(float(edges[used[0]]) - pad, float(edges[0])),
            min(float(edges[used[-1] + 1]) + pad, float(edges[-1])))


def image_steps(n_hist: int, most: int = MAX_STEP_IMAGES) -> np.ndarray:
    """Indices of the histogram steps drawn as images: all of them up to ``most``, else
    ``most`` spread evenly, the first and the last always in."""
    return np.unique(np.linspace(0, n_hist - 1, min(most, n_hist)).round().astype(int)) if n_hist else np.array([], int)


def histogram_step_figure(stats: RunStats, h: int, title: str = "") -> Figure:
    """Every layer's histogram of log10|g| at histogram step ``h``, one row per layer (input at
    the bottom), and the share of its entries that is exactly 0 beside it. The axes and the
    colour scale are the run's, the same at every step, so MLflow's step slider shows the
    distribution move: vanishing is mass drifting left, starting from the input side."""
    fig, show, _ = _step_figure(stats, title)
    show(h)
    return fig


def _step_figure(stats: RunStats, title: str, animated: bool = False):
    """(figure, show(h) that puts histogram step h's data in it, the artists show changes):
    one figure for every step, so a series of images redraws only what changes."""
    n_layers = len(stats.layers)
    # square: MLflow's image chart shows a 256-px square thumbnail (click: the full image); fixed
    # margins, no layout engine (a series of images must be quick)
    fig = Figure(figsize=(STEP_IMAGE_INCHES, STEP_IMAGE_INCHES))
    grid = fig.add_gridspec(1, 3, width_ratios=[4, 1, 0.2], wspace=0.1, left=0.2, right=0.86, bottom=0.13, top=0.85)
    hist_ax = fig.add_subplot(grid[0])
    zero_ax = fig.add_subplot(grid[1], sharey=hist_ax)
    shares, zeros = entry_shares(stats)
    vmax = float(shares.max()) if shares.size and shares.max() > 0 else 1.0
    # the bins are equal in log10 and the layers in index, so one raster holds the grid (a
    # QuadMesh of the same cells took most of an image's drawing)
    mesh = hist_ax.imshow(np.zeros((n_layers, len(stats.hist_edges) - 1)), aspect="auto", origin="lower",
                          extent=(stats.hist_edges[0], stats.hist_edges[-1], -0.5, n_layers - 0.5),
                          cmap="Blues", vmin=0, vmax=vmax, interpolation="nearest")
    hist_ax.set_xlim(*occupied_range(stats))
    named = np.unique(np.linspace(0, n_layers - 1, min(n_layers, 24)).round().astype(int))
    hist_ax.set_yticks(named, [_short(stats.layers)[i] for i in named], fontsize=7 if n_layers <= 12 else 6)
    hist_ax.set_xlabel("log10 |g|, entries of each layer's gradient", fontsize=8)
    hist_ax.set_ylabel("layer (input at the bottom)", fontsize=8)
    hist_ax.tick_params(axis="x", labelsize=8)
    bars = zero_ax.barh(np.arange(n_layers), np.zeros(n_layers), height=0.8, color="crimson")
    zero_ax.set_xlim(0, 1)
    zero_ax.set_xticks([0, 1], ["0", "100%"], fontsize=7)
    zero_ax.set_xlabel("exactly 0", fontsize=8)
    zero_ax.tick_params(axis="y", labelleft=False)
    zero_ax.set_ylim(-0.5, n_layers - 0.5)
    bar = fig.colorbar(mesh, cax=fig.add_subplot(grid[2]))
    bar.set_label("share of the layer's entries", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    head = fig.text(0.5, 0.975, "", ha="center", va="top", fontsize=15, fontweight="bold")
    fig.text(0.5, 0.905, title, ha="center", va="top", fontsize=7, color="0.3", wrap=True)
    changing = [mesh, *bars.patches, head]
    for artist in changing:
        artist.set_animated(animated)
    frames = [*hist_ax.spines.values(), *zero_ax.spines.values()]  # drawn over the cells again

    def show(h: int) -> None:
        mesh.set_data(shares[h])
        for bar, share in zip(bars.patches, zeros[h]):
            bar.set_width(share)
        step = int(stats.hist_step[h])
        head.set_text(f"step {step}" + (" (before any update)" if step == 1 else ""))

    return fig, show, changing + frames


def histogram_step_images(stats: RunStats, title: str = "", most: int = MAX_STEP_IMAGES):
    """(step, RGB image of :func:`histogram_step_figure`) at up to ``most`` histogram steps. The
    axes are drawn once and only the histogram, the zero bars and the title per step (blitting:
    ~10 ms an image instead of ~200 ms)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    picks = image_steps(len(stats.hist_step), most)
    if not len(picks):
        return
    fig, show, changing = _step_figure(stats, title, animated=True)
    fig.set_dpi(STEP_IMAGE_DPI)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # everything that is not animated: axes, ticks, labels, colour bar
    background = canvas.copy_from_bbox(fig.bbox)
    for h in picks:
        show(int(h))
        canvas.restore_region(background)
        for artist in changing:
            fig.draw_artist(artist)
        yield int(stats.hist_step[h]), np.asarray(canvas.buffer_rgba())[..., :3].copy()


def gradient_through_time(stats: RunStats, path, title: str = "") -> None:
    """:func:`gradient_through_time_figure`, saved to ``path``."""
    save(gradient_through_time_figure(stats, title), path)


def gradient_through_time_figure(stats: RunStats, title: str = "") -> Figure:
    """Gradient reaching step t of each measured sequence (a recurrent layer's input, a
    Transformer block's: ||dL/dx_t|| for the first, ||dL/dh_t|| of the layer below for the others)
    against t, at most MAX_TIME_COLUMNS panels a row, one panel per layer, one curve per point
    of training: the signature of vanishing gradients through time is a curve that falls
    steeply towards t = 0, and a gated cell earns its keep by flattening it during training."""
    n_seq = len(stats.seq_layers)
    cols = min(n_seq, MAX_TIME_COLUMNS)  # a 12-block Transformer wraps onto 3 rows, not 72 inches
    rows = -(-n_seq // cols)
    fig = Figure(figsize=(5.5 * cols, 4.0 * rows))
    grid = fig.subplots(rows, cols, squeeze=False).ravel()
    for spare in grid[n_seq:]:
        spare.set_visible(False)
    axes = grid[:n_seq]
    picks = np.unique(np.linspace(0, len(stats.hist_step) - 1,
                                  min(MAX_SNAPSHOTS, len(stats.hist_step))).astype(int))
    colors = colormaps["viridis"](np.linspace(0, 1, max(len(picks), 1)))
    for s, ax in enumerate(axes):
        for color, h in zip(colors, picks):
            norms = stats.time_grad[h, s]
            ax.plot(np.arange(len(norms)), np.where(norms > 0, norms, np.nan), color=color,
                    label=f"step {stats.hist_step[h]}")
        ax.set_yscale("log")
        ax.set_xlabel("step t: time step or position (input order)")
        ax.set_ylabel("‖∂L/∂h_t‖, h: the sequence entering it")
        ax.set_title(f"into {stats.seq_layers[s]}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or "gradient through time", fontsize=10)
    fig.tight_layout()
    return fig
