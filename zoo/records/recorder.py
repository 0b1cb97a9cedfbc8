"""Collects what the train step returns and hands the sink a thinned view, in few calls.

Every step's packed vectors are kept (for the raw statistics file and the plots). The sink sees
each step field the way its :class:`~zoo.instruments.layout.Field` says (``2 learning/loss``,
``2 learning/accuracy``, ``aux_loss/<head>``: means over the window; ``log10_grad_norm/<layer>``:
log10 of the value at the window's last step) and the gradient-flow story
(:func:`flow_story`) once every ``log_every`` steps, and once more for a last, shorter window at
the end (``flush``); at each epoch end ``2 learning/val_loss``, ``2 learning/val_accuracy``,
``update_ratio/<layer>`` (the epoch's median) and each instrument's readings of the latest probe step
(zoo.instruments: ``epoch_metrics``). The names are declared in zoo.instruments.series.
"""
from __future__ import annotations

import numpy as np

from zoo.instruments.layout import flow_ratio, log10_for_charts
from zoo.instruments.series import EPOCH_KEYS, FLOW_STORY, STEP_SERIES
from zoo.records.stats import RunStats
from zoo.tracking.sink import Sink


def flow_story(norms: np.ndarray) -> dict[str, float]:
    """The gradient-flow story of one step for MLflow's first charts: log10 of the first and last
    monitored kernel's gradient norm and of their ratio (the verdict's flow, 0/0 = 1), from
    ``norms`` [L] (input side first). Empty when nothing is monitored."""
    if len(norms) == 0:
        return {}
    first, last = float(norms[0]), float(norms[-1])
    values = log10_for_charts([first, last, flow_ratio(first, last)])
    return {FLOW_STORY[k]: float(v) for k, v in zip(("first", "last", "flow"), values)}


class Recorder:
    """Records the steps one meter (zoo.instruments.meter.Meter) measures: its layouts say what a row
    holds, its instruments what their readings become in the raw file and at an epoch's end."""

    def __init__(self, meter, sink: Sink, log_every: int):
        self.layout, self.probe_layout, self.sink = meter.layout, meter.probe_layout, sink
        self.log_every, self.instruments = log_every, list(meter.instruments)
        self.rows: list[np.ndarray] = []
        self.numbers: list[int] = []  # each row's optimizer step
        self.probe_steps: list[int] = []
        self.probes: list[np.ndarray] = []
        self.epoch_step: list[int] = []
        self.val: list[tuple[float, float]] = []
        self._epoch_start = 0
        self._logged = 0  # steps already sent to the sink
        self._finite_at = self.layout.offset("finite")

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
            for inst in self.instruments:
                metrics.update(inst.epoch_metrics(latest[inst.key][0]))
        self._epoch_start = step
        self.sink.log_metrics(metrics, self.last_step)

    def stats(self) -> RunStats:
        u = self.layout.unpack(np.stack(self.rows)) if self.rows else self.layout.empty()
        p = self.probe_layout.unpack(np.stack(self.probes)) if self.probes else self.probe_layout.empty()
        instruments = {}
        for inst in self.instruments:
            instruments.update(inst.raw(p[inst.key]))
        val = np.array(self.val, dtype=np.float32).reshape(-1, 2)
        kept = {s.name: u[s.name].astype(bool if s.raw == "bool" else np.float64) for s in STEP_SERIES if s.raw}
        return RunStats(
            **kept, **instruments,
            step=np.array(self.numbers, dtype=np.int64),
            aux_heads=np.array(self.layout.field("aux_loss").labels, dtype=str),
            update_ratio=u["update_norm"] / np.maximum(u["weight_norm"], 1e-30),
            layers=np.array(self.layout.field("grad_norm").labels, dtype=str),
            variables=np.array(self.layout.field("var_grad_norm").labels, dtype=str),
            elements=np.array(self.layout.field("grad_elements").labels, dtype=str),
            hist_step=np.array(self.probe_steps, dtype=np.int64),
            epoch_step=np.array(self.epoch_step, dtype=np.int64),
            val_loss=val[:, 0], val_metric=val[:, 1],
        )
