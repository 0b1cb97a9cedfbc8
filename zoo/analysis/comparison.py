"""Two models' gradient flow side by side, measured the way runs measure it.

``zoo.compare(a, b)`` takes two pretrained entries (names) or two keras Models and the data to
probe them with, and passes the same batches through each model's own
:class:`zoo.training.step.InstrumentedStep`, built with plain SGD at learning rate 0 so nothing moves (the
batch-norm moving statistics a training-mode forward pass updates are put back too). The numbers
are therefore the very ``grad_norm`` per kernel (the data objective's gradient, before clipping)
and, for recurrent models, the ``time_grad`` (gradient reaching each time step) that a run logs,
at the models' current weights, exact over float32's range (zoo.instruments.graph_stats). Several
batches (default 4 of 64) give a median and a spread. Each model also gets a run's headline:
the verdict rule (zoo.records.verdict) with the batches as its steps, and progress, the median
batch loss against the best constant predictor's loss on the data under the model's own loss
(zoo.records.posedness.constant_loss), or ``ill-posed`` when that loss cannot read the targets
(binary cross-entropy on labels 0..9: zoo.records.posedness.ill_posed).

The figure aligns the layers by normalized depth (0 = input side, 1 = output), so a 20-layer
net and a 56-layer net line up; gradient norms are on a log scale, exact zeros (every element of
the gradient 0: nothing at all reaches the layer) sit on the floor as ✕, and a second panel
shows the ratio b / a at each aligned position. The table has one row per aligned position.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo._arguments import check_compare
from zoo.analysis.measure import measure
from zoo.data import DATASETS, Dataset
from zoo.data.batches import batches_of
from zoo.pretrained import describe, load_pretrained, read_manifest
from zoo.records import posedness
from zoo.records.summary import describe_progress, headline, progress
from zoo.records.verdict import judge_run
from zoo.training.spec import load_dataset

COLORS = ("#c0392b", "#1f5fa8")  # a: warm red, b: blue
BATCHES, BATCH_SIZE = 4, 64


@dataclass
class Probed:
    """One model's measurements over the probe batches."""
    label: str
    layers: tuple[str, ...]
    grad_norm: np.ndarray                 # [batches, layers]
    loss: np.ndarray                      # [batches]
    seq_layers: tuple[str, ...] = ()
    time_grad: np.ndarray | None = None   # [batches, seq layers, time steps]
    weight_norm: np.ndarray | None = None  # [batches, layers] (the same every batch: lr 0)
    verdict: object = None                # zoo.records.verdict.Verdict, the batches as steps
    progress: tuple[str, float] | None = None  # (label, median batch loss / constant baseline)
    skipped: dict = field(default_factory=dict)  # what an instrument could not measure -> why
    heads: list = field(default_factory=list)  # zoo.training.step.Head of each output
    ill_posed: str | None = None  # why its loss cannot read the targets (zoo.records.posedness)

    @property
    def headline(self) -> str:
        """'vanishing · stalled', as a run's (zoo.records.summary.headline)."""
        return headline(self.verdict.label, self.progress[0] if self.progress else None)

    def describe(self) -> str:
        """One line: the headline, the verdict's reason, the loss against a constant predictor."""
        line = f"{self.label}: {self.headline}; verdict {self.verdict.label} ({self.verdict.reason})"
        if self.progress:
            line += "; progress " + describe_progress(*self.progress, self.ill_posed).replace(
                "final train loss", "loss on these batches")
        return line

    @property
    def depth(self) -> np.ndarray:
        """Normalized position of each layer: 0 at the input side, 1 at the output."""
        n = len(self.layers)
        return np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(n)

    @property
    def median(self) -> np.ndarray:
        return np.median(self.grad_norm, axis=0)


@dataclass
class Comparison:
    a: Probed
    b: Probed
    knob: str
    batches: int
    batch_size: int
    table: list[dict] = field(default_factory=list)
    figure: object = None  # matplotlib.figure.Figure

    def markdown(self) -> str:
        """Each model's verdict and progress, then the table: aligned layers, medians and spreads,
        and the ratio b / a."""
        a, b = self.a.label, self.b.label
        lines = [f"- a = {self.a.describe()}", f"- b = {self.b.describe()}"]
        lines += [f"- {p.label}: not measured: {what} ({why})" for p in (self.a, self.b)
                  for what, why in p.skipped.items()]
        lines += ["",
                 f"| depth | {a} layer | {a} ‖∂L/∂W‖ median [min, max] | {b} layer | "
                 f"{b} ‖∂L/∂W‖ median [min, max] | ratio b/a |",
                 "|---:|---|---:|---|---:|---:|"]
        for row in self.table:
            lines.append(
                f"| {row['depth']:.2f} | {row['layer_a']} | {_num(row['median_a'])} "
                f"[{_num(row['min_a'])}, {_num(row['max_a'])}] | {row['layer_b']} | "
                f"{_num(row['median_b'])} [{_num(row['min_b'])}, {_num(row['max_b'])}] | "
                f"{_num(row['ratio'])} |")
        return "\n".join(lines)

    def save(self, path) -> Path:
        """The figure (``.png``, ``.svg``, ``.pdf``) or the table (``.md``)."""
        path = Path(path)
        if path.suffix == ".md":
            path.write_text(self.markdown() + "\n")
        else:
            self.figure.savefig(path, dpi=120)
        return path

    def _repr_png_(self) -> bytes:  # notebooks show the figure whatever matplotlib's backend
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()

    def __repr__(self) -> str:
        return f"Comparison({self.a.label} vs {self.b.label}; knob {self.knob})\n{self.markdown()}"


def _num(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if x == 0:
        return "0"
    if math.isinf(x):
        return "∞"
    return f"{x:.3g}"


# -- measuring -------------------------------------------------------------------------------

def _resolve(model_or_name):
    """(keras model, label, manifest entry or None)."""
    if isinstance(model_or_name, str):
        return load_pretrained(model_or_name), model_or_name, describe(model_or_name)
    return model_or_name, model_or_name.name, None


def _dataset(data, entry):
    if isinstance(data, Dataset):
        return data
    if data is None:
        if entry is None:
            raise ValueError("compare: pass data= (a dataset name, a zoo Dataset or (x, y, task)) "
                             "when comparing models that are not pretrained entries")
        options = {k: v for k, v in entry.data.items() if k not in ("name", "input_shape", "num_outputs")}
        return DATASETS.build(entry.data["name"], **options)
    if isinstance(data, str):
        return load_dataset(data)
    if isinstance(data, dict):
        return load_dataset(**data)
    x, y, task = data
    return Dataset("custom", x, y, x[:0], y[:0], task, 0)


def probe(model, x_batches, y_batches, task: str, label: str, loss=None) -> Probed:
    """Gradient norms (and gradient through time) of ``model`` on each batch, by its own
    instrumented step at learning rate 0 (zoo.analysis.measure); the model's variables are left as they
    were. ``loss``: as :func:`zoo.analysis.measure.measure` takes it."""
    return probed(measure(model, x_batches, y_batches, task, loss), label)


def probed(measured, label: str) -> Probed:
    """A :class:`Probed` from what zoo.analysis.measure.measure returned."""
    stats = measured.stats
    time_grad = stats.time_grad if len(stats.seq_layers) else None
    return Probed(label, tuple(stats.layers), stats.grad_norm, stats.loss.astype(np.float64),
                  tuple(stats.seq_layers), time_grad, stats.weight_norm, judge_run(stats),
                  skipped=measured.skipped, heads=list(measured.heads))


def judge_progress(p: Probed, targets) -> None:
    """``p.progress`` from its median batch loss, read as its one output's loss reads ``targets``
    (zoo.records.posedness): ill-posed with the reason when the loss cannot read them or fell
    below its floor, else against the best constant predictor's loss on them; None for several
    outputs or a loss with no constant baseline."""
    if len(p.heads) != 1 or not p.heads[0].loss or isinstance(targets, (list, tuple, dict)):
        return
    head, median = p.heads[0], float(np.median(p.loss))
    classes = head.units if head.loss == "sparse_categorical_crossentropy" else None
    p.ill_posed = posedness.ill_posed(head.loss, targets, p.loss, classes)
    baseline = posedness.constant_loss(head.loss, targets)
    if p.ill_posed or (baseline is not None and baseline > 0):
        p.progress = progress(median, baseline or float("nan"), p.ill_posed)


def compare(a, b, data=None, batches: int = BATCHES, batch_size: int = BATCH_SIZE, seed: int = 0,
            knob: str | None = None, loss=None) -> Comparison:
    """Per-layer gradient norms of ``a`` and ``b`` (entry names or keras Models) on the same
    ``batches`` batches of ``batch_size`` training examples drawn with ``seed``.

    ``a`` and ``b``: any Keras models (Sequential, functional, subclassed, nested; recurrent
    layers with or without ``return_sequences``, ``Bidirectional``; several inputs or outputs),
    or pretrained entry names. ``data``: a dataset name, a ``zoo.data.Dataset``, a dict of
    ``zoo.load_dataset`` arguments, or ``(x, y, task)`` (``x``, ``y`` arrays, or lists / dicts
    of arrays for several inputs or outputs); by default the data entry ``a`` was trained on.
    ``knob``: what differs, for the title (by default the pair's knob from the manifest).
    ``loss``: a Keras loss name or object for both (default: each model's compiled loss, else
    the task's, zoo.training.step.data_loss). What an instrument cannot measure on a model is skipped
    and named (each Probed's ``skipped``, and the markdown). Raises zoo.errors.InputError (one
    line naming the argument) for arguments that cannot work (zoo._arguments.check_compare)."""
    check_compare(a, b, data, batches, batch_size, seed, knob, loss)
    model_a, label_a, entry_a = _resolve(a)
    model_b, label_b, entry_b = _resolve(b)
    dataset = _dataset(data, entry_a or entry_b)
    if knob is None:
        knob = ""
        if entry_a is not None and entry_b is not None:
            pair = read_manifest().pair_of(label_a, label_b)
            knob = pair.knob if pair else ""
    xs, ys = batches_of(dataset.x_train, dataset.y_train, batches, batch_size, seed)
    pa = probe(model_a, xs, ys, dataset.task, label_a, loss)
    pb = probe(model_b, xs, ys, dataset.task, label_b, loss)
    for p in (pa, pb):
        judge_progress(p, dataset.y_train)
    result = Comparison(pa, pb, knob, len(xs), batch_size)
    result.table = table(pa, pb)
    result.figure = figure(result)
    return result


# -- the table -------------------------------------------------------------------------------

def _align(pa: Probed, pb: Probed) -> list[tuple[int, int]]:
    """(index in a, index in b) at each aligned position: by index when the depths agree, else
    every layer of the deeper net with the nearest layer of the other by normalized depth."""
    na, nb = len(pa.layers), len(pb.layers)
    if na == nb:
        return [(i, i) for i in range(na)]
    if na > nb:
        return [(i, int(np.argmin(abs(pb.depth - d)))) for i, d in enumerate(pa.depth)]
    return [(int(np.argmin(abs(pa.depth - d))), j) for j, d in enumerate(pb.depth)]


def _ratio(num: float, den: float) -> float:
    if den == 0:
        return math.inf if num > 0 else math.nan
    return num / den


def table(pa: Probed, pb: Probed) -> list[dict]:
    ma, mb = pa.median, pb.median
    rows = []
    for i, j in _align(pa, pb):
        depth = pa.depth[i] if len(pa.layers) >= len(pb.layers) else pb.depth[j]
        rows.append({
            "depth": float(depth),
            "layer_a": pa.layers[i], "median_a": float(ma[i]),
            "min_a": float(pa.grad_norm[:, i].min()), "max_a": float(pa.grad_norm[:, i].max()),
            "layer_b": pb.layers[j], "median_b": float(mb[j]),
            "min_b": float(pb.grad_norm[:, j].min()), "max_b": float(pb.grad_norm[:, j].max()),
            "ratio": _ratio(float(mb[j]), float(ma[i])),
        })
    return rows


# -- the figure ------------------------------------------------------------------------------

def _short(name: str) -> str:
    for old, new in (("_dense", ""), ("_conv", "c"), ("block", "b"), ("stage", "s"),
                     ("inception", "inc"), ("_kernel", "")):
        name = name.replace(old, new)
    return name


def _floor(*arrays) -> float:
    positive = np.concatenate([np.ravel(a)[np.ravel(a) > 0] for a in arrays if a is not None] or [np.ones(1)])
    positive = positive[np.isfinite(positive)]
    low = positive.min() if positive.size else 1.0
    return 10 ** (math.floor(math.log10(low)) - 1)


def finite_max(a) -> float:
    """The largest finite value of ``a`` (0 when none is: a model whose weights are NaN)."""
    a = np.asarray(a, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else 0.0


def flow_panel(ax, p: Probed, color: str, floor: float, marker: str) -> None:
    x, med = p.depth, p.median
    lo, hi = p.grad_norm.min(axis=0), p.grad_norm.max(axis=0)
    shown = np.where(med > 0, med, np.nan)
    flow = med[0] / med[-1] if len(med) and med[-1] > 0 else math.nan
    label = f"{p.label} ({p.headline}):  first/last layer {_num(flow)},  loss {np.median(p.loss):.3g}"
    ax.fill_between(x, np.where(lo > 0, lo, floor), np.where(hi > 0, hi, floor), color=color,
                    alpha=0.18, lw=0, step=None)
    ax.plot(x, shown, marker + "-", color=color, ms=4.5, lw=1.8, label=label)
    zeros = np.flatnonzero(med == 0)
    if len(zeros):
        ax.plot(x[zeros], np.full(len(zeros), floor), "x", color=color, ms=9, mew=2.4, clip_on=False,
                label=f"{p.label}: exactly 0 in {len(zeros)} layer{'s' * (len(zeros) > 1)}")


def _ticks(ax, p: Probed, top: bool, color: str = COLORS[0]) -> None:
    if len(p.layers) > 40:
        return
    names = [_short(n) for n in p.layers]
    if top:
        twin = ax.secondary_xaxis("top")
        twin.set_xticks(p.depth)
        twin.set_xticklabels(names, rotation=90, fontsize=6.5, color=COLORS[1])
    else:
        ax.set_xticks(p.depth)
        ax.set_xticklabels(names, rotation=90, fontsize=6.5, color=color)


def figure(c: Comparison):
    from matplotlib.figure import Figure

    pa, pb = c.a, c.b
    recurrent = pa.time_grad is not None or pb.time_grad is not None
    fig = Figure(figsize=(15 if recurrent else 10.5, 7.4))
    grid = fig.add_gridspec(2, 2 if recurrent else 1, height_ratios=[2.3, 1],
                            width_ratios=[1.25, 1] if recurrent else None, hspace=0.08, wspace=0.22)
    flow = fig.add_subplot(grid[0, 0])
    ratio_ax = fig.add_subplot(grid[1, 0], sharex=flow)
    floor = _floor(pa.grad_norm, pb.grad_norm)
    flow_panel(flow, pa, COLORS[0], floor, "o")
    flow_panel(flow, pb, COLORS[1], floor, "s")
    flow.set_yscale("log")
    top = max(finite_max(pa.grad_norm), finite_max(pb.grad_norm), floor * 10)
    flow.set_ylim(floor / 1.6, top * 6)
    if np.any(pa.median == 0) or np.any(pb.median == 0):  # the floor stands for exactly 0
        flow.axhline(floor, color="0.5", lw=0.8, ls=":")
        flow.text(1.005, floor, "= 0", color="0.3", fontsize=8, va="center", ha="left",
                  transform=flow.get_yaxis_transform(), clip_on=False)
    flow.set_ylabel("‖∂L/∂W‖ of each layer (log scale)")
    flow.grid(True, which="major", alpha=0.3)
    flow.legend(fontsize=8.5, loc="best", framealpha=0.92,
                title="line: median over batches · band: min–max", title_fontsize=7.5)
    flow.tick_params(axis="x", labelbottom=False)
    same_names = pa.layers == pb.layers
    if not same_names:
        _ticks(flow, pb, top=True)

    rows = c.table
    depth = np.array([r["depth"] for r in rows])
    ratios = np.array([r["ratio"] for r in rows], dtype=np.float64)
    finite = np.isfinite(ratios) & (ratios > 0)
    logs = np.where(finite, np.log10(np.where(finite, ratios, 1.0)), 0.0)
    shown = logs[finite]
    hi = max(float(shown.max()) if shown.size else 0.0, 0.5)
    lo = min(float(shown.min()) if shown.size else 0.0, -0.5)
    pad = 0.18 * (hi - lo)
    hi, lo = hi + pad, lo - pad
    width = min(0.8 / max(len(rows) - 1, 1), 0.1)
    bar_colors = np.array([COLORS[1] if v >= 0 else COLORS[0] for v in logs], dtype=object)
    ratio_ax.bar(depth[finite], shown, width=width, color=bar_colors[finite], alpha=0.85)
    for d, r, v in zip(depth, ratios, logs):
        if r == math.inf:  # a is exactly 0, b is not
            ratio_ax.annotate("a = 0 ↑", (d, hi * 0.9), ha="center", va="top", fontsize=7, color=COLORS[0])
        elif r == 0:       # b is exactly 0
            ratio_ax.annotate("b = 0 ↓", (d, lo * 0.9), ha="center", va="bottom", fontsize=7, color=COLORS[1])
        elif math.isnan(r):
            ratio_ax.annotate("both 0", (d, 0), ha="center", va="center", fontsize=6, color="0.3")
    if shown.size:  # the extreme ratio, spelled out
        k = int(np.flatnonzero(finite)[np.argmax(np.abs(shown))])
        ratio_ax.annotate(f"×{_num(ratios[k])}", (depth[k], logs[k]), xytext=(0, 3 if logs[k] >= 0 else -3),
                          textcoords="offset points", ha="center", va="bottom" if logs[k] >= 0 else "top",
                          fontsize=8, fontweight="bold")
    ratio_ax.axhline(0, color="black", lw=0.8)
    ratio_ax.set_ylim(lo, hi)
    ratio_ax.set_ylabel("log10 (b / a)\nb larger ↑ · a larger ↓", fontsize=8)
    names = "" if len(pa.layers) > 40 else ("; layer names below" if same_names
                                             else "; layer names: a below, b above")
    ratio_ax.set_xlabel("normalized depth (0 = input layer, 1 = output layer)" + names)
    ratio_ax.grid(True, axis="y", alpha=0.3)
    _ticks(ratio_ax, pa, top=False, color="black" if same_names else COLORS[0])
    ratio_ax.set_xlim(-0.04, 1.04)

    if recurrent:
        time_panel(fig.add_subplot(grid[:, 1]), [c.a, c.b])
    heads = [fig.text(0.5, 0.975, f"a = {pa.label}   vs   b = {pb.label}", ha="center", va="top",
                      fontsize=13, fontweight="bold"),
             fig.text(0.5, 0.935, f"knob: {c.knob}" if c.knob else "", ha="center", va="top", fontsize=11),
             fig.text(0.5, 0.9, f"gradient of the data loss at the models' current weights, the same {c.batches} batches "
                      f"of {c.batch_size} through each model's instrumented step (lr 0);  ✕ = exactly 0 (every element)",
                      ha="center", va="top", fontsize=8.5, color="0.3")]
    fig.subplots_adjust(left=0.085 if not recurrent else 0.06, right=0.955, top=0.86, bottom=0.12)
    _fit_vertically(fig, heads, fig.axes)
    return fig


MARGIN_INCHES = 0.08  # between the panels' labels and the header above them, or the figure's bottom


def _fit_vertically(fig, heads, axes) -> None:
    """Move the panels' top and bottom so that what is drawn around them (b's rotated layer
    names above, a's below, the axis labels) ends MARGIN_INCHES under the header lines and
    above the figure's bottom edge, measured on the rendered text (names are of any length)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    height = fig.get_figheight() * fig.dpi
    margin = MARGIN_INCHES * fig.dpi
    boxes = [ax.get_tightbbox(renderer) for ax in axes]
    header_bottom = min((t.get_window_extent(renderer).y0 for t in heads if t.get_text()), default=height)
    top = fig.subplotpars.top + (header_bottom - margin - max(b.y1 for b in boxes)) / height
    bottom = fig.subplotpars.bottom + (margin - min(b.y0 for b in boxes)) / height
    fig.subplots_adjust(top=max(top, bottom + 0.3), bottom=bottom)  # names too long for the page: keep a panel


def time_panel(ax, probes: list[Probed], colors=COLORS) -> None:
    """Gradient reaching each step of the first measured sequence, each model: a recurrent
    layer's input (through time), a Transformer block's (across positions)."""
    arrays = [p.time_grad[:, 0, :] for p in probes if p.time_grad is not None]
    floor = _floor(*arrays)
    for p, color in zip(probes, colors):
        if p.time_grad is None:
            continue
        g = p.time_grad[:, 0, :]
        t = np.arange(g.shape[1])
        med, lo, hi = np.median(g, axis=0), g.min(axis=0), g.max(axis=0)
        ax.fill_between(t, np.where(lo > 0, lo, floor), np.where(hi > 0, hi, floor), color=color, alpha=0.18, lw=0)
        ratio = med[0] / med[-1] if med[-1] > 0 else math.nan
        ax.plot(t, np.where(med > 0, med, np.nan), color=color, lw=1.8,
                label=f"{p.label}: ‖∂L/∂x_0‖ / ‖∂L/∂x_T‖ = {_num(ratio)}")
        zeros = np.flatnonzero(med == 0)
        if len(zeros):
            ax.plot(t[zeros], np.full(len(zeros), floor), "x", color=color, ms=5, mew=1.5, clip_on=False,
                    label=f"{p.label}: exactly 0 at {len(zeros)} steps")
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor / 1.6)
    into = " / ".join(dict.fromkeys(p.seq_layers[0] for p in probes if p.time_grad is not None))
    ax.set_xlabel("step t of the sequence: time step or position (input order)")
    ax.set_ylabel(f"‖∂L/∂x_t‖ into {into} (log)")
    ax.text(0.02, 0.98, "gradient reaching each step", transform=ax.transAxes, ha="left", va="top",
            fontsize=10, fontweight="bold")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
