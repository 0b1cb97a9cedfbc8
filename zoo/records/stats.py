"""A run's raw statistics: every step's per-layer numbers, in one machine-readable file.

Saved as ``stats/gradient_stats.npz`` (numpy, no pickles): load it with
``RunStats.load(path)`` or plain ``numpy.load``. Its arrays are declared where they are
measured, never here: the per-step series by zoo.instruments.series (each ``[T, ...]``), the
instruments of probe steps by their own files (zoo.instruments: each ``[H, ...]``, with
the arrays that name its axes), and the run's context below (:data:`CONTEXT`). :func:`declared`
lists them all; ``help(RunStats)`` shows them with their shapes. Norms (grad_norm*,
weight_norm, time_grad) are float64 and exact over float32's whole range
(zoo.instruments.graph_stats): 0 means every element was 0.
"""
from __future__ import annotations

import numpy as np

from zoo.instruments import REGISTRY, Array
from zoo.instruments.histograms import HIST_BINS
from zoo.instruments.series import AXES, STEP_SERIES

# axis letter -> what it counts (and, in check(), how long it is in a given file); an
# instrument's own axes are declared in its file (dimensions())
DIMENSIONS = {"T": "optimizer steps", **AXES, "H": "probe steps (histograms and instruments)",
              "B": "histogram bins (HIST_BINS)", "E": "epochs"}

CONTEXT = (
    Array("step", ("T",), "int", "1-based optimizer step; row t describes the gradient at the weights "
          "*before* update t (row 0: the initialization)"),
    Array("layers", ("L",), "text", "kernel layer names"),
    Array("variables", ("V",), "text", "the other monitored variables' names (V = 0: kernels only)"),
    Array("elements", ("R",), "text", "the recorded gradient elements, as variable[index] (R = 0: none)"),
    Array("aux_heads", ("X",), "text", "auxiliary head names (X = 0 without auxiliary heads)"),
    Array("update_ratio", ("T", "L"), "float", "||W_after - W_before|| / ||W_before|| of each step "
          "(GradientMonitor in fit: its probe steps, NaN between them)"),
    Array("hist_step", ("H",), "int", "the probe steps, whose histograms and instruments were read"),
    Array("epoch_step", ("E",), "int", "the last step of each epoch"),
    Array("val_loss", ("E",), "float", "validation loss at each epoch's end (NaN without validation data)"),
    Array("val_metric", ("E",), "float", "validation accuracy at each epoch's end"),
)
STEP_ARRAYS = tuple(Array(s.name, ("T", *s.axes), s.raw, s.doc) for s in STEP_SERIES if s.raw)


def declared() -> tuple[Array, ...]:
    """Every array of the raw file: the context, the per-step series and each registered
    instrument's (zoo.instruments, as registered now: a new instrument's file adds its own)."""
    return CONTEXT[:1] + STEP_ARRAYS + CONTEXT[1:] + tuple(a for cls in REGISTRY for a in cls.arrays())


def dimensions() -> dict[str, str]:
    """Every axis letter and what it counts, the instruments' own included."""
    return {**DIMENSIONS, **{k: v for cls in REGISTRY for k, v in cls.dims.items()}}

# arrays added after the first files were written (besides instruments', which RunStats fills
# itself), and what a file without them holds, from its number of steps
ADDED = {
    "skipped": lambda steps: np.zeros(steps, bool),
    "variables": lambda steps: np.zeros(0, str),
    "elements": lambda steps: np.zeros(0, str),
    "var_grad_norm": lambda steps: np.zeros((steps, 0)),
    "grad_elements": lambda steps: np.zeros((steps, 0)),
}


class RunStats:
    """A run's raw statistics; every array of :func:`declared` is an attribute (``stats.grad_norm``).
    Built from keyword arrays: an instrument's arrays that are not given are those of a run it
    did not measure (empty)."""

    def __init__(self, **arrays):
        unknown = set(arrays) - {a.name for a in declared()}
        if unknown:
            raise TypeError(f"RunStats: unknown arrays {sorted(unknown)}")
        probes = len(arrays.get("hist_step", ()))
        for cls in REGISTRY:
            for name, value in cls.empty(probes).items():
                arrays.setdefault(name, value)
        missing = [a.name for a in declared() if a.name not in arrays]
        if missing:
            raise TypeError(f"RunStats: missing arrays {missing}")
        self.__dict__.update({a.name: arrays[a.name] for a in declared()})

    def arrays(self) -> dict[str, np.ndarray]:
        return {a.name: getattr(self, a.name) for a in declared()}

    def save(self, path) -> None:
        np.savez_compressed(path, **self.arrays())

    @classmethod
    def load(cls, path) -> "RunStats":
        """Read a raw statistics file, refusing anything that is not one: a file that is not an
        npz of plain arrays, a missing array, a wrong dtype or a shape that disagrees with the
        others is named with what is wrong (never loaded with pickles). A file written before an
        array existed gets what a run then recorded (:data:`ADDED`; an instrument's: empty)."""
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise StatsFileError(f"{path}: not a gradzoo statistics file (.npz of plain arrays): "
                                 f"{str(err).splitlines()[0][:200]}") from None
        optional = set(ADDED) | {name for cls in REGISTRY for name in cls.empty(0)}
        with data:
            missing = [a.name for a in declared() if a.name not in data.files and a.name not in optional]
            if missing:
                raise StatsFileError(f"{path}: missing arrays: {', '.join(missing)}")
            try:
                arrays = {a.name: data[a.name] for a in declared() if a.name in data.files}
            except ValueError as err:  # an object array would need pickles
                raise StatsFileError(f"{path}: {str(err).splitlines()[0][:200]}") from None
        for name, empty in ADDED.items():
            arrays.setdefault(name, empty(len(arrays["step"])))
        stats = cls(**arrays)
        stats.check(path)
        return stats

    def check(self, where="statistics") -> None:
        """Shapes and dtypes agree with :func:`declared` (the lengths of the axes are read from
        the name arrays: T from ``step``, L from ``layers`` ...; a free axis is not checked)."""
        size = {"T": len(self.step), "L": len(self.layers), "X": len(self.aux_heads), "H": len(self.hist_step),
                "V": len(self.variables), "R": len(self.elements), "B": HIST_BINS, "B+1": HIST_BINS + 1,
                "E": len(self.epoch_step)}
        for cls in REGISTRY:
            for letter, length in cls.sizes.items():
                size[letter] = len(getattr(self, length)) if isinstance(length, str) else length
        for a in declared():
            value = getattr(self, a.name)
            want = tuple(size.get(axis) for axis in a.axes)
            if value.ndim != len(want) or any(w is not None and w != g for w, g in zip(want, value.shape)):
                shown = "(" + ", ".join("steps" if w is None else str(w) for w in want) + ("," if len(want) == 1 else "") + ")"
                raise StatsFileError(f"{where}: {a.name} has shape {value.shape}, expected {shown}")
            allowed = {"text": "U", "int": "iub", "bool": "iub", "float": "f"}[a.kind]
            if value.dtype.kind not in allowed:
                raise StatsFileError(f"{where}: {a.name} has dtype {value.dtype}, expected "
                                     f"{'integer' if a.kind == 'bool' else a.kind}")

    def __repr__(self) -> str:
        return f"RunStats({len(self.step)} steps, {len(self.layers)} kernels, {len(self.hist_step)} probe steps)"


def _doc() -> str:
    legend = "; ".join(f"{k} {v}" for k, v in dimensions().items())
    rows = "\n".join(f"    {a.name} [{', '.join(a.axes)}] ({a.kind}): {a.doc}" for a in declared())
    return f"A run's raw statistics (zoo.records.stats). Axes: {legend}.\n\n{rows}\n"


RunStats.__doc__ = (RunStats.__doc__ or "") + "\n\n" + _doc()


class StatsFileError(ValueError):
    """A raw statistics file that is not what gradzoo writes."""
