"""A run's few headline numbers (``summary/*``), the ones a study's claim compares across runs.

"init" numbers describe the first window of steps (verdict.windows: 10% of the run, at least
5 steps), where the initialization still rules; "end" numbers the last window. Each is a median
over the window's steps, so one noisy batch does not decide a claim. Gradient through time is
read at the first and the last histogram step, for the first recurrent layer:
||dL/dx_0|| / ||dL/dx_T||, the share of the gradient that reaches the start of the sequence;
and so is the first LSTM layer's mean forget gate (how much of its memory a step keeps).
"""
from __future__ import annotations

import numpy as np

from zoo.monitor.stats import RunStats
from zoo.monitor.verdict import windows

TINY = 1e-45


def layer_profile(stats: RunStats, which: int) -> np.ndarray | None:
    """Per-layer median gradient norm over the first (0) or the last (-1) window of finite steps."""
    g = stats.grad_norm[np.all(np.isfinite(stats.grad_norm), axis=1)]
    return np.median(g[windows(len(g))[which]], axis=0) if len(g) else None


def summarize(stats: RunStats) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, which in (("init", 0), ("end", -1)):
        median = layer_profile(stats, which)
        if median is not None:
            out[f"summary/grad_first_{label}"] = float(median[0])
            out[f"summary/grad_last_{label}"] = float(median[-1])
            out[f"summary/flow_{label}"] = float(median[0] / max(median[-1], TINY))
    if stats.time_grad.size and stats.time_grad.shape[-1] > 1:
        for label, i in (("init", 0), ("end", -1)):
            norms = stats.time_grad[i, 0]
            if np.all(np.isfinite(norms)):
                out[f"summary/time_grad_ratio_{label}"] = float(norms[0] / max(norms[-1], TINY))
    if stats.forget_gate.size:  # the first LSTM layer's mean forget gate, start and end
        out["summary/forget_gate_init"] = float(stats.forget_gate[0, 0])
        out["summary/forget_gate_end"] = float(stats.forget_gate[-1, 0])
    return out
