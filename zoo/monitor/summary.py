"""A run's few headline numbers (``summary/*``), the ones a study's claim compares across runs.

- ``*_init``: at initialization, i.e. the gradient of step 1, computed before any update. A
  batch-normalized net is already another net after one step (Yang et al. 2019), so "the first
  10% of training" is not initialization.
- ``*_start``: the median over the first window of steps (verdict.windows: 10% of the run, at
  least 5 steps), where the initialization still rules but one batch does not decide;
- ``*_end``: the median over the last window.

Per layer numbers are the first (input side) and last (output head) monitored kernels' gradient
norms and their ratio, the flow. Gradient through time is read at the first (step 1) and the
last histogram step, for the first recurrent layer: ||dL/dx_0|| / ||dL/dx_T||, the share of the
gradient that reaches the start of the sequence; and so is the first LSTM layer's mean forget
gate (how much of its memory a step keeps).
"""
from __future__ import annotations

import numpy as np

from zoo.monitor.stats import RunStats
from zoo.monitor.verdict import windows

TINY = 1e-45
POINTS = ("init", "start", "end")


def layer_profile(stats: RunStats, which: str) -> np.ndarray | None:
    """Per-layer gradient norm at step 1 (``init``), or its median over the first (``start``) or
    last (``end``) window of finite steps."""
    g = stats.grad_norm[np.all(np.isfinite(stats.grad_norm), axis=1)]
    if not len(g):
        return None
    if which == "init":
        return g[0]
    return np.median(g[windows(len(g))[0 if which == "start" else -1]], axis=0)


def summarize(stats: RunStats) -> dict[str, float]:
    out: dict[str, float] = {}
    for label in POINTS:
        profile = layer_profile(stats, label)
        if profile is not None:
            out[f"summary/grad_first_{label}"] = float(profile[0])
            out[f"summary/grad_last_{label}"] = float(profile[-1])
            out[f"summary/flow_{label}"] = float(profile[0] / max(profile[-1], TINY))
    if stats.time_grad.size and stats.time_grad.shape[-1] > 1:
        for label, i in (("init", 0), ("end", -1)):
            norms = stats.time_grad[i, 0]
            if np.all(np.isfinite(norms)):
                out[f"summary/time_grad_ratio_{label}"] = float(norms[0] / max(norms[-1], TINY))
    if stats.forget_gate.size:  # the first LSTM layer's mean forget gate, start and end
        out["summary/forget_gate_init"] = float(stats.forget_gate[0, 0])
        out["summary/forget_gate_end"] = float(stats.forget_gate[-1, 0])
    return out


STALLED_FRACTION = 0.95


def progress(train_loss: float, baseline: float) -> tuple[str, float]:
    """('learning' | 'stalled', train loss / baseline): a run whose whole-training-split loss is
    not below 95% of what the best constant predictor scores has not learned, whatever its
    gradient flow says (plain-56 can be "healthy" at train accuracy 0.17)."""
    ratio = train_loss / baseline if baseline > 0 else float("nan")
    return ("learning" if ratio < STALLED_FRACTION else "stalled"), float(ratio)
