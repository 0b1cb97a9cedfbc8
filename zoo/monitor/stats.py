"""A run's raw statistics: every step's per-layer numbers, in one machine-readable file.

Saved as ``stats/gradient_stats.npz`` (numpy, no pickles): load it with
``RunStats.load(path)`` or plain ``numpy.load``. Arrays, with T steps, L monitored kernels
(input side first), H histogram steps, B bins, A activation layers, E epochs:

  step [T]                       1-based optimizer step
  loss, metric [T]               batch loss of the main head (+ regularization); batch accuracy
                                 (NaN for regression)
  aux_heads [X], aux_loss [T, X] each auxiliary head's loss (X = 0 without auxiliary heads)
  finite [T]                     1 where the loss and every gradient norm were finite
  grad_norm, grad_norm_clipped [T, L]; weight_norm [T, L] (before the update); update_ratio [T, L]
  layers [L]                     kernel layer names
  hist_step [H], hist_counts [H, L, B], hist_zeros [H, L], hist_edges [B + 1]   (log10|g|)
  act_layers [A], act_kinds [A], act_stats [H, A, 4] (mean, std, saturated_fraction, dead_fraction)
  epoch_step [E], val_loss [E], val_metric [E]
  seq_layers [S], time_grad [H, S, T]   the gradient reaching step t of each recurrent layer's
                                 input: ||dL/dx_t|| for the first, the total ||dL/dh_t|| of the
                                 layer below for the others (norm over batch and features), at
                                 the histogram steps; S = 0 without recurrent layers
  gate_layers [G], forget_gate [H, G]  mean forget-gate activation of each LSTM layer (over
                                 batch, time and units) at the histogram steps; G = 0 without LSTMs
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

HIST_RANGE = (-20.0, 4.0)  # log10|g|: float32 gradients below 1e-20 are already lost causes
HIST_BINS = 96             # a quarter decade per bin
ACT_STATS = ("mean", "std", "saturated_fraction", "dead_fraction")


def hist_edges() -> np.ndarray:
    return np.linspace(*HIST_RANGE, HIST_BINS + 1)


@dataclass
class RunStats:
    step: np.ndarray
    loss: np.ndarray
    metric: np.ndarray
    aux_heads: np.ndarray
    aux_loss: np.ndarray
    finite: np.ndarray
    grad_norm: np.ndarray
    grad_norm_clipped: np.ndarray
    weight_norm: np.ndarray
    update_ratio: np.ndarray
    layers: np.ndarray
    hist_step: np.ndarray
    hist_counts: np.ndarray
    hist_zeros: np.ndarray
    hist_edges: np.ndarray
    act_layers: np.ndarray
    act_kinds: np.ndarray
    act_stats: np.ndarray
    epoch_step: np.ndarray
    val_loss: np.ndarray
    val_metric: np.ndarray
    seq_layers: np.ndarray
    time_grad: np.ndarray
    gate_layers: np.ndarray
    forget_gate: np.ndarray

    def save(self, path) -> None:
        np.savez_compressed(path, **{f.name: getattr(self, f.name) for f in fields(self)})

    @classmethod
    def load(cls, path) -> "RunStats":
        with np.load(path, allow_pickle=False) as data:
            return cls(**{f.name: data[f.name] for f in fields(cls)})
