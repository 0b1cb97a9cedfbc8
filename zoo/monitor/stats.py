"""A run's raw statistics: every step's per-layer numbers, in one machine-readable file.

Saved as ``stats/gradient_stats.npz`` (numpy, no pickles): load it with
``RunStats.load(path)`` or plain ``numpy.load``. Its arrays are declared once, in
:data:`ARRAYS`: the per-step series of zoo.monitor.series (each ``[T, ...]``) and the run's
context (layer names, histogram steps, epochs, instruments). ``help(RunStats)`` lists them with
their shapes. Norms (grad_norm*, weight_norm, time_grad) are float64 and exact over float32's
whole range (zoo.monitor.graph_stats): 0 means every element was 0.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, make_dataclass

import numpy as np

from zoo.monitor.series import AXES, STEP_SERIES

# log10|g| over float32's whole range, 1.4e-45 (smallest denormal) ... 3.4e38: where gradients
# vanish is exactly where the histogram must still see them
HIST_RANGE = (-45.0, 39.0)
HIST_BINS = 336            # a quarter decade per bin
ACT_STATS = ("mean", "std", "saturated_fraction", "dead_fraction")


def hist_edges() -> np.ndarray:
    return np.linspace(*HIST_RANGE, HIST_BINS + 1)


# axis letter -> what it counts (and, below, how long it is in a given file)
DIMENSIONS = {"T": "optimizer steps", **AXES, "H": "histogram steps", "B": "histogram bins (HIST_BINS)",
              "E": "epochs", "A": "activation layers", "K": f"activation statistics ({', '.join(ACT_STATS)})",
              "S": "recurrent layers", "N": "time steps", "G": "LSTM layers"}


@dataclass(frozen=True)
class Array:
    """One array of the raw file: its axes (letters of :data:`DIMENSIONS`; "B+1": the bin
    edges), its kind ("float", "int", "bool" or "text") and what it holds."""
    name: str
    axes: tuple[str, ...]
    kind: str
    doc: str


CONTEXT = (
    Array("step", ("T",), "int", "1-based optimizer step; row t describes the gradient at the weights "
          "*before* update t (row 0: the initialization)"),
    Array("layers", ("L",), "text", "kernel layer names"),
    Array("variables", ("V",), "text", "the other monitored variables' names (V = 0: kernels only)"),
    Array("elements", ("R",), "text", "the recorded gradient elements, as variable[index] (R = 0: none)"),
    Array("aux_heads", ("X",), "text", "auxiliary head names (X = 0 without auxiliary heads)"),
    Array("update_ratio", ("T", "L"), "float", "||W_after - W_before|| / ||W_before|| of each step"),
    Array("hist_step", ("H",), "int", "the steps whose histograms and instruments were read"),
    Array("hist_counts", ("H", "L", "B"), "int", "counts of log10|g| per bin (edges: hist_edges)"),
    Array("hist_zeros", ("H", "L"), "int", "exact zeros (they have no logarithm)"),
    Array("hist_edges", ("B+1",), "float", "bin edges of log10|g|, HIST_RANGE in HIST_BINS bins"),
    Array("act_layers", ("A",), "text", "activation layer names"),
    Array("act_kinds", ("A",), "text", "their activation (registry name)"),
    Array("act_stats", ("H", "A", "K"), "float", "mean, std, saturated and dead fraction of each "
          "activation's output (NaN where a fraction does not apply)"),
    Array("epoch_step", ("E",), "int", "the last step of each epoch"),
    Array("val_loss", ("E",), "float", "validation loss at each epoch's end (NaN without validation data)"),
    Array("val_metric", ("E",), "float", "validation accuracy at each epoch's end"),
    Array("seq_layers", ("S",), "text", "recurrent layer names (S = 0 without recurrent layers)"),
    Array("time_grad", ("H", "S", "N"), "float", "the gradient reaching time step t of each recurrent "
          "layer's input: ||dL/dx_t|| for the first, ||dL/dh_t|| of the layer below for the others (norm "
          "over batch and features)"),
    Array("gate_layers", ("G",), "text", "LSTM layer names (G = 0 without LSTMs)"),
    Array("forget_gate", ("H", "G"), "float", "mean forget-gate activation of each LSTM layer (over batch, "
          "time and units)"),
)
ARRAYS = CONTEXT[:1] + tuple(Array(s.name, ("T", *s.axes), s.raw, s.doc) for s in STEP_SERIES if s.raw) + CONTEXT[1:]


# arrays added after the first files were written, and what a file without them holds
ADDED = {
    "skipped": lambda steps: np.zeros(steps, bool),
    "variables": lambda steps: np.zeros(0, str),
    "elements": lambda steps: np.zeros(0, str),
    "var_grad_norm": lambda steps: np.zeros((steps, 0)),
    "grad_elements": lambda steps: np.zeros((steps, 0)),
}


class _RunStats:
    """Methods of :class:`RunStats`, whose fields are :data:`ARRAYS`."""

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
            missing = [a.name for a in ARRAYS if a.name not in data.files and a.name not in ADDED]
            if missing:
                raise StatsFileError(f"{path}: missing arrays: {', '.join(missing)}")
            try:
                arrays = {a.name: data[a.name] for a in ARRAYS if a.name in data.files}
            except ValueError as err:  # an object array would need pickles
                raise StatsFileError(f"{path}: {str(err).splitlines()[0][:200]}") from None
        steps = len(arrays["step"])
        for name, empty in ADDED.items():  # a file written before these arrays existed
            arrays.setdefault(name, empty(steps))
        stats = cls(**arrays)
        stats.check(path)
        return stats

    def check(self, where="statistics") -> None:
        """Shapes and dtypes agree with :data:`ARRAYS` (the lengths of the axes are read from
        the name arrays: T from ``step``, L from ``layers`` ...; N, the time steps, is free)."""
        size = {"T": len(self.step), "L": len(self.layers), "X": len(self.aux_heads), "H": len(self.hist_step),
                "V": len(self.variables), "R": len(self.elements),
                "B": HIST_BINS, "B+1": HIST_BINS + 1, "E": len(self.epoch_step), "A": len(self.act_layers),
                "K": len(ACT_STATS), "S": len(self.seq_layers), "G": len(self.gate_layers)}
        for a in ARRAYS:
            value = getattr(self, a.name)
            want = tuple(size.get(axis) for axis in a.axes)
            if value.ndim != len(want) or any(w is not None and w != g for w, g in zip(want, value.shape)):
                shown = "(" + ", ".join("steps" if w is None else str(w) for w in want) + ("," if len(want) == 1 else "") + ")"
                raise StatsFileError(f"{where}: {a.name} has shape {value.shape}, expected {shown}")
            allowed = {"text": "U", "int": "iub", "bool": "iub", "float": "f"}[a.kind]
            if value.dtype.kind not in allowed:
                raise StatsFileError(f"{where}: {a.name} has dtype {value.dtype}, expected "
                                     f"{'integer' if a.kind == 'bool' else a.kind}")


def _doc() -> str:
    legend = "; ".join(f"{k} {v}" for k, v in DIMENSIONS.items())
    rows = "\n".join(f"    {a.name} [{', '.join(a.axes)}] ({a.kind}): {a.doc}" for a in ARRAYS)
    return f"A run's raw statistics (zoo.monitor.stats). Axes: {legend}.\n\n{rows}\n"


RunStats = make_dataclass("RunStats", [(a.name, np.ndarray) for a in ARRAYS], bases=(_RunStats,),
                          namespace={"__doc__": _doc(), "__module__": __name__})


class StatsFileError(ValueError):
    """A raw statistics file that is not what gradzoo writes."""

