"""Collects what the train step returns and hands the sink a thinned view, in few calls.

Every step's packed vectors are kept (for the raw statistics file and the plots). The sink sees
each step field the way its :class:`~zoo.monitor.layout.Field` says (``2 learning/loss``,
``2 learning/accuracy``, ``aux_loss/<head>``: means over the window; ``log10_grad_norm/<layer>``:
log10 of the value at the window's last step) and the gradient-flow story
(:func:`flow_story`) once every ``log_every`` steps, and once more for a last, shorter window at
the end (``flush``); at each epoch end ``2 learning/val_loss``, ``2 learning/val_accuracy``,
``update_ratio/<layer>`` (the epoch's median) and the latest instrument readings in
:data:`EPOCH_READINGS`. The names are declared in zoo.monitor.series.
"""
from __future__ import annotations

import numpy as np

from zoo.monitor.layout import Layout, log10_for_charts
from zoo.monitor.series import EPOCH_KEYS, FLOW_STORY, STEP_SERIES
from zoo.monitor.stats import ACT_STATS, HIST_BINS, RunStats, hist_edges
from zoo.monitor.verdict import flow_ratio
from zoo.tracking.sink import Sink


def _activation_fractions(layout: Layout, latest: np.ndarray) -> dict[str, float]:
    """saturated_fraction/<act>, dead_fraction/<act> where they apply (means and stds stay in
    the raw file)."""
    out = {}
    for layer, values in zip(layout.field("act_stats").labels, latest):
        for name, value in zip(ACT_STATS, values):
            if name in ("saturated_fraction", "dead_fraction") and not np.isnan(value):
                out[f"{name}/{layer}"] = float(value)
    return out


def _time_grad_ratio(layout: Layout, latest: np.ndarray) -> dict[str, float]:
    """The gradient reaching the first step relative to the last, per recurrent layer."""
    return {f"time_grad_ratio/{layer}": flow_ratio(float(norms[0]), float(norms[-1]))
            for layer, norms in zip(layout.field("time_grad").labels, latest)}


def _forget_gates(layout: Layout, latest: np.ndarray) -> dict[str, float]:
    return {f"forget_gate/{layer}": float(v) for layer, v in zip(layout.field("forget_gate").labels, latest)}


def flow_story(norms: np.ndarray) -> dict[str, float]:
    """The gradient-flow story of one step for MLflow's first charts: log10 of the first and last
    monitored kernel's gradient norm and of their ratio (the verdict's flow, 0/0 = 1), from
    ``norms`` [L] (input side first). Empty when nothing is monitored."""
    if len(norms) == 0:
        return {}
    first, last = float(norms[0]), float(norms[-1])
    values = log10_for_charts([first, last, flow_ratio(first, last)])
    return {FLOW_STORY[k]: float(v) for k, v in zip(("first", "last", "flow"), values)}


# instrument field -> its MLflow readings at an epoch's end, from the latest histogram step
EPOCH_READINGS = {"act_stats": _activation_fractions, "time_grad": _time_grad_ratio,
                  "forget_gate": _forget_gates}


class Recorder:
    def __init__(self, layout: Layout, probe_layout: Layout, sink: Sink, log_every: int,
                 activation_kinds: tuple[str, ...] = ()):
        self.layout, self.probe_layout, self.sink = layout, probe_layout, sink
        self.log_every, self.activation_kinds = log_every, tuple(activation_kinds)
        self.rows: list[np.ndarray] = []
        self.numbers: list[int] = []  # each row's optimizer step
        self.probe_steps: list[int] = []
        self.probes: list[np.ndarray] = []
        self.epoch_step: list[int] = []
        self.val: list[tuple[float, float]] = []
        self._epoch_start = 0
        self._logged = 0  # steps already sent to the sink
        self._finite_at = layout.offset("finite")

    @property
    def steps(self) -> int:
        return len(self.rows)

    @property
    def last_step(self) -> int:
        """The optimizer step of the latest row (more than ``steps`` when some were lost)."""
        return self.numbers[-1] if self.numbers else 0

    def on_step(self, packed: np.ndarray, probed: np.ndarray | None = None, step: int | None = None) -> bool:
        """Record one step (``step``: its 1-based number, default the next one; a client whose
        buffer lost rows says which step this is); returns False when its loss or gradients
        were not finite."""
        self.rows.append(packed)
        self.numbers.append(self.last_step + 1 if step is None else int(step))
        if probed is not None:
            self.probe_steps.append(self.last_step)
            self.probes.append(probed)
        finite = bool(packed[self._finite_at])
        if len(self.rows) % self.log_every == 0 or not finite:
            self.flush()
        return finite

    def flush(self) -> None:
        """Send the steps not yet logged as one window (the last one may be shorter)."""
        step = len(self.rows)
        if step == self._logged:
            return
        window = self.layout.unpack(np.stack(self.rows[self._logged:step]))
        metrics = {}
        for f in self.layout.fields:
            metrics.update(f.window_metrics(window[f.name]))
        metrics.update(flow_story(window["grad_norm"][-1]))
        self._logged = step
        self.sink.log_metrics(metrics, self.last_step)

    def on_epoch_end(self, val_loss: float, val_metric: float) -> None:
        step = len(self.rows)
        self.epoch_step.append(self.last_step)
        self.val.append((val_loss, val_metric))
        metrics = {} if np.isnan(val_loss) else {EPOCH_KEYS["val_loss"]: val_loss}  # NaN: no validation data
        if not np.isnan(val_metric):
            metrics[EPOCH_KEYS["val_accuracy"]] = val_metric
        if step > self._epoch_start:  # an epoch without a recorded step has no update ratio
            u = self.layout.unpack(np.stack(self.rows[self._epoch_start:step]))
            ratio = u["update_norm"] / np.maximum(u["weight_norm"], 1e-30)
            measured = ~np.isnan(ratio).all(axis=1)  # GradientMonitor measures the update on probe steps
            if measured.any():
                for layer, values in zip(self.layout.field("weight_norm").labels, ratio[measured].T):
                    metrics[f"update_ratio/{layer}"] = float(np.median(values))
        if self.probes:
            latest = self.probe_layout.unpack(self.probes[-1])
            for f in self.probe_layout.fields:
                if f.name in EPOCH_READINGS:
                    metrics.update(EPOCH_READINGS[f.name](self.probe_layout, latest[f.name][0]))
        self._epoch_start = step
        self.sink.log_metrics(metrics, self.last_step)

    def stats(self) -> RunStats:
        u = self.layout.unpack(np.stack(self.rows)) if self.rows else self.layout.empty()
        p = self.probe_layout.unpack(np.stack(self.probes)) if self.probes else self.probe_layout.empty()
        labels = {f.name: f.labels for f in self.probe_layout.fields}
        kernels = self.layout.field("grad_norm").labels
        n_hist = len(self.probe_steps)

        def probed(name, *shape):  # an instrument that did not apply to this model: no rows
            return p[name] if name in p else np.zeros((n_hist, *shape), np.float64)

        hists = probed("hist", len(kernels), HIST_BINS + 1)
        val = np.array(self.val, dtype=np.float32).reshape(-1, 2)
        kept = {s.name: u[s.name].astype(bool if s.raw == "bool" else np.float64) for s in STEP_SERIES if s.raw}
        return RunStats(
            **kept,
            step=np.array(self.numbers, dtype=np.int64),
            aux_heads=np.array(self.layout.field("aux_loss").labels, dtype=str),
            update_ratio=u["update_norm"] / np.maximum(u["weight_norm"], 1e-30),
            layers=np.array(kernels, dtype=str),
            variables=np.array(self.layout.field("var_grad_norm").labels, dtype=str),
            elements=np.array(self.layout.field("grad_elements").labels, dtype=str),
            hist_step=np.array(self.probe_steps, dtype=np.int64),
            hist_counts=hists[:, :, :-1].astype(np.int64), hist_zeros=hists[:, :, -1].astype(np.int64),
            hist_edges=hist_edges(),
            act_layers=np.array(labels.get("act_stats", ()), dtype=str),
            act_kinds=np.array(self.activation_kinds, dtype=str),
            act_stats=probed("act_stats", 0, len(ACT_STATS)).astype(np.float32),
            epoch_step=np.array(self.epoch_step, dtype=np.int64),
            val_loss=val[:, 0], val_metric=val[:, 1],
            seq_layers=np.array(labels.get("time_grad", ()), dtype=str),
            time_grad=probed("time_grad", 0, 0),  # float64: exact norms (graph_stats)
            gate_layers=np.array(labels.get("forget_gate", ()), dtype=str),
            forget_gate=probed("forget_gate", 0).astype(np.float32),
        )
