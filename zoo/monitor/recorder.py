"""Collects what the train step returns and hands the sink a thinned view, in few calls.

Every step's packed vector is kept (for the raw statistics file and the plots); the sink sees
``loss``/``accuracy``/``aux_loss/<head>`` (means over the last ``log_every`` steps) and ``grad_norm/<layer>`` (the
value at that step) once every ``log_every`` steps, and at each epoch end ``val_loss``,
``val_accuracy``, ``update_ratio/<layer>`` (the epoch's median) and the latest
``saturated_fraction/<act>`` / ``dead_fraction/<act>`` where they apply.
"""
from __future__ import annotations

import numpy as np

from zoo.monitor.stats import ACT_STATS, HIST_BINS, RunStats, hist_edges
from zoo.step import StepLayout
from zoo.tracking.sink import Sink


MLFLOW_ACT_STATS = ("saturated_fraction", "dead_fraction")


class Recorder:
    def __init__(self, layout: StepLayout, activation_kinds, sink: Sink, log_every: int,
                 clipping: bool, seq_layers=(), gate_layers=()):
        self.layout, self.kinds, self.sink = layout, tuple(activation_kinds), sink
        self.log_every, self.clipping = log_every, clipping
        self.rows: list[np.ndarray] = []
        self.hist_step: list[int] = []
        self.hists: list[np.ndarray] = []
        self.acts: list[np.ndarray] = []
        self.seq_layers = tuple(seq_layers)
        self.times: list[np.ndarray] = []  # ||dL/dh_t|| [seq layers, T] per histogram step
        self.gate_layers = tuple(gate_layers)
        self.gates: list[np.ndarray] = []  # mean LSTM forget gate [gate layers] per histogram step
        self.epoch_step: list[int] = []
        self.val: list[tuple[float, float]] = []
        self._epoch_start = 0

    @property
    def steps(self) -> int:
        return len(self.rows)

    def on_step(self, packed: np.ndarray, hist=None, act=None, time=None, gates=None) -> bool:
        """Record one step; returns False when its loss or gradients were not finite."""
        self.rows.append(packed)
        step = len(self.rows)
        if hist is not None:
            self.hist_step.append(step)
            self.hists.append(hist)
            self.acts.append(act)
            if time is not None and len(self.seq_layers):
                self.times.append(time)
            if gates is not None and len(self.gate_layers):
                self.gates.append(gates)
        finite = bool(packed[2])
        if step % self.log_every == 0 or not finite:
            self._log_window(step)
        return finite

    def _log_window(self, step: int) -> None:
        start = (step - 1) // self.log_every * self.log_every
        u = self.layout.unpack(np.stack(self.rows[start:step]))
        metrics = {"loss": float(np.mean(u["loss"]))}
        if not np.all(np.isnan(u["metric"])):
            metrics["accuracy"] = float(np.mean(u["metric"]))
        for i, head in enumerate(self.layout.aux_heads):
            metrics[f"aux_loss/{head}"] = float(np.mean(u["aux_loss"][:, i]))
        for i, layer in enumerate(self.layout.kernels):
            metrics[f"grad_norm/{layer}"] = float(u["grad_norm"][-1, i])
        self.sink.log_metrics(metrics, step)

    def on_epoch_end(self, val_loss: float, val_metric: float) -> dict[str, float]:
        step = len(self.rows)
        self.epoch_step.append(step)
        self.val.append((val_loss, val_metric))
        metrics = {"val_loss": val_loss}
        if not np.isnan(val_metric):
            metrics["val_accuracy"] = val_metric
        u = self.layout.unpack(np.stack(self.rows[self._epoch_start:step]))
        ratio = u["update_norm"] / np.maximum(u["weight_norm"], 1e-30)
        for i, layer in enumerate(self.layout.kernels):
            metrics[f"update_ratio/{layer}"] = float(np.median(ratio[:, i]))
        if self.acts:  # the fractions that apply; means and stds stay in the raw file
            for layer, values in zip(self.layout.activations, self.acts[-1]):
                for name, value in zip(ACT_STATS, values):
                    if name in MLFLOW_ACT_STATS and not np.isnan(value):
                        metrics[f"{name}/{layer}"] = float(value)
        if self.times:  # the gradient reaching the first step relative to the last
            for layer, norms in zip(self.seq_layers, self.times[-1]):
                metrics[f"time_grad_ratio/{layer}"] = float(norms[0] / max(norms[-1], 1e-45))
        if self.gates:
            for layer, value in zip(self.gate_layers, self.gates[-1]):
                metrics[f"forget_gate/{layer}"] = float(value)
        self._epoch_start = step
        self.sink.log_metrics(metrics, step)
        return metrics

    def stats(self) -> RunStats:
        n_layers, n_acts = len(self.layout.kernels), len(self.layout.activations)
        u = self.layout.unpack(np.stack(self.rows) if self.rows
                               else np.zeros((0, self.layout.width), np.float32))
        hists = np.stack(self.hists) if self.hists else np.zeros((0, n_layers, HIST_BINS + 1))
        acts = np.stack(self.acts) if self.acts else np.zeros((0, n_acts, len(ACT_STATS)))
        val = np.array(self.val, dtype=np.float32).reshape(-1, 2)
        return RunStats(
            step=np.arange(1, len(self.rows) + 1), loss=u["loss"], metric=u["metric"],
            aux_heads=np.array(self.layout.aux_heads, dtype=str), aux_loss=u["aux_loss"],
            finite=u["finite"].astype(bool),
            grad_norm=u["grad_norm"], grad_norm_clipped=u["grad_norm_clipped"],
            weight_norm=u["weight_norm"],
            update_ratio=u["update_norm"] / np.maximum(u["weight_norm"], 1e-30),
            layers=np.array(self.layout.kernels, dtype=str),
            hist_step=np.array(self.hist_step, dtype=np.int64),
            hist_counts=hists[:, :, :-1].astype(np.int64), hist_zeros=hists[:, :, -1].astype(np.int64),
            hist_edges=hist_edges(),
            act_layers=np.array(self.layout.activations, dtype=str),
            act_kinds=np.array([k or "" for k in self.kinds], dtype=str),
            act_stats=acts.astype(np.float32),
            epoch_step=np.array(self.epoch_step, dtype=np.int64),
            val_loss=val[:, 0], val_metric=val[:, 1],
            seq_layers=np.array(self.seq_layers, dtype=str),
            time_grad=(np.stack(self.times) if self.times
                       else np.zeros((len(self.hist_step), len(self.seq_layers), 0))).astype(np.float32),
            gate_layers=np.array(self.gate_layers, dtype=str),
            forget_gate=(np.stack(self.gates) if self.gates
                         else np.zeros((len(self.hist_step), len(self.gate_layers)))).astype(np.float32),
        )
