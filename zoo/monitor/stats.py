"""A run's raw statistics: every step's per-layer numbers, in one machine-readable file.

Saved as ``stats/gradient_stats.npz`` (numpy, no pickles): load it with
``RunStats.load(path)`` or plain ``numpy.load``. Arrays, with T steps, L monitored kernels
(input side first), H histogram steps, B bins, A activation layers, E epochs:

  step [T]                       1-based optimizer step; row t describes the gradient at the
                                 weights *before* update t (row 0: the initialization)
  loss, metric [T]               batch data loss of the main head (no weight penalty); batch
                                 accuracy (NaN for regression)
  penalty [T]                    the weight penalty's value (0 without a regularizer)
  aux_heads [X], aux_loss [T, X] each auxiliary head's loss (X = 0 without auxiliary heads)
  finite [T]                     1 where the loss and every gradient norm were finite
  Norms (grad_norm*, weight_norm, time_grad) are float64 and exact over float32's whole range
  (zoo.monitor.graph_stats): 0 means every element was 0.
  grad_norm [T, L]               gradient of the data objective (main + weighted auxiliary
                                 losses), before clipping: what vanishes or explodes
  grad_norm_total [T, L]         data objective + weight penalty, before clipping
  grad_norm_clipped [T, L]       what the optimizer received (total, after clipping)
  weight_norm [T, L] (before the update); update_ratio [T, L] = ||W_after - W_before|| / ||W_before||
  layers [L]                     kernel layer names
  hist_step [H], hist_counts [H, L, B], hist_zeros [H, L], hist_edges [B + 1]   (log10|g|)
  act_layers [A], act_kinds [A] (activation names), act_stats [H, A, 4] (mean, std,
                                 saturated_fraction, dead_fraction; NaN where it does not apply)
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

# log10|g| over float32's whole range, 1.4e-45 (smallest denormal) ... 3.4e38: where gradients
# vanish is exactly where the histogram must still see them
HIST_RANGE = (-45.0, 39.0)
HIST_BINS = 336            # a quarter decade per bin
ACT_STATS = ("mean", "std", "saturated_fraction", "dead_fraction")


def hist_edges() -> np.ndarray:
    return np.linspace(*HIST_RANGE, HIST_BINS + 1)


@dataclass
class RunStats:
    step: np.ndarray
    loss: np.ndarray
    metric: np.ndarray
    penalty: np.ndarray
    aux_heads: np.ndarray
    aux_loss: np.ndarray
    finite: np.ndarray
    grad_norm: np.ndarray
    grad_norm_total: np.ndarray
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
        """Read a raw statistics file, refusing anything that is not one: a file that is not an
        npz of plain arrays, a missing array, a wrong dtype or a shape that disagrees with the
        others is named with what is wrong (never loaded with pickles)."""
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise StatsFileError(f"{path}: not a gradzoo statistics file (.npz of plain arrays): "
                                 f"{str(err).splitlines()[0][:200]}") from None
        with data:
            missing = [f.name for f in fields(cls) if f.name not in data.files]
            if missing:
                raise StatsFileError(f"{path}: missing arrays: {', '.join(missing)}")
            try:
                arrays = {f.name: data[f.name] for f in fields(cls)}
            except ValueError as err:  # an object array would need pickles
                raise StatsFileError(f"{path}: {str(err).splitlines()[0][:200]}") from None
        stats = cls(**arrays)
        stats.check(path)
        return stats

    def check(self, where="statistics") -> None:
        """Shapes and dtypes agree with the layout documented above."""
        T, L = len(self.step), len(self.layers)
        H, A = len(self.hist_step), len(self.act_layers)
        expected = {
            "loss": (T,), "metric": (T,), "penalty": (T,), "finite": (T,),
            "aux_loss": (T, len(self.aux_heads)), "grad_norm": (T, L), "grad_norm_total": (T, L),
            "grad_norm_clipped": (T, L), "weight_norm": (T, L), "update_ratio": (T, L),
            "hist_counts": (H, L, HIST_BINS), "hist_zeros": (H, L), "hist_edges": (HIST_BINS + 1,),
            "act_kinds": (A,), "act_stats": (H, A, len(ACT_STATS)),
            "val_loss": (len(self.epoch_step),), "val_metric": (len(self.epoch_step),),
            "forget_gate": (H, len(self.gate_layers)),
        }
        for name, shape in expected.items():
            got = getattr(self, name).shape
            if got != shape:
                raise StatsFileError(f"{where}: {name} has shape {got}, expected {shape}")
        if self.time_grad.shape[:2] != (H, len(self.seq_layers)):
            raise StatsFileError(f"{where}: time_grad has shape {self.time_grad.shape}, expected "
                                 f"({H}, {len(self.seq_layers)}, steps)")
        for f in fields(self):
            kind = getattr(self, f.name).dtype.kind
            want = "U" if f.name in TEXT else "iub" if f.name in INTEGER else "f"
            if kind not in want:
                raise StatsFileError(f"{where}: {f.name} has dtype {getattr(self, f.name).dtype}, "
                                     f"expected {'text' if want == 'U' else 'integer' if want == 'iub' else 'float'}")


class StatsFileError(ValueError):
    """A raw statistics file that is not what gradzoo writes."""


TEXT = ("aux_heads", "layers", "act_layers", "act_kinds", "seq_layers", "gate_layers")
INTEGER = ("step", "hist_step", "hist_counts", "hist_zeros", "epoch_step", "finite")
