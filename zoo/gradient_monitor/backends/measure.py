"""What one optimizer step reports on JAX and PyTorch, in backend-neutral ``keras.ops``: the
per-step series of zoo.instruments.series (gradient, clipped-gradient, weight and update norms,
the other variables' gradient norms, recorded elements, finiteness, a loss scaler's skip) from
the gradients the optimizer receives and the weights before and after its update; and the
host's float64 row in the layout the recorder reads (zoo.instruments.layout), the same row
TensorFlow's compiled step packs (zoo.instruments.meter).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from keras import ops

from zoo.gradient_monitor import _keras
from zoo.gradient_monitor.backends import exact
from zoo.gradient_monitor.hooks import inner, skips_nonfinite
from zoo.instruments.histograms import HIST_BINS, HIST_RANGE, GradientHistograms
from zoo.instruments.layout import Layout
from zoo.instruments.series import step_fields


@dataclass
class PortableMeter:
    """The monitored variables of one model (as zoo.instruments.discover.Found names them) and
    the layouts of their rows; of the probe-step instruments, the gradient histograms."""
    variables: list
    kernel_index: list[int]
    kernels: tuple[str, ...]
    others: tuple = ()
    elements: tuple = ()
    instruments: list = field(init=False)

    def __post_init__(self):
        labels = tuple(f"{name}[{i}]" for at, name in self.elements
                       for i in range(int(np.prod(self.variables[at].shape))))
        self.layout = Layout(step_fields(self.kernels, (), False, tuple(name for _, name in self.others), labels))
        self.instruments = [GradientHistograms(self.kernels)] if self.kernels else []
        self.probe_layout = Layout(tuple(f for inst in self.instruments for f in inst.fields))

    def measure(self, grads: list, before: list, after: list, optimizer, scale=None, probing: bool = False) -> dict:
        """One step's tensors (float64 norms; see zoo.gradient_monitor.backends.exact):
        ``grads`` what the optimizer receives for each of ``variables`` (None: no gradient),
        divided by the loss ``scale`` they carry; on a ``probing`` step also the weight norms,
        the update's size (``before`` / ``after``: the monitored kernels' values around the
        update, a kernel's None where the optimizer does not update it: NaN norms; the lists
        None elsewhere when ``probing`` is a Python bool) and the gradient histograms
        ("hist"). ``probing``: a Python bool, or a boolean tensor (the probe part then runs
        under ``ops.cond`` and "probed" says whether it did). Call it while the step runs
        (traced on JAX)."""
        if scale is not None:
            grads = [None if g is None else ops.divide(g, ops.cast(scale, g.dtype)) for g in grads]
        clipped = _keras.clip(inner(optimizer), grads)  # the optimizer's own clipping, its own arithmetic
        kernels = [grads[i] for i in self.kernel_index]
        with exact.wide():
            every = exact.norms(grads)  # each variable's: the kernels', the others', finiteness
            grad_norm = _take(every, self.kernel_index)
            out = {
                "grad_norm": grad_norm,
                "grad_norm_clipped": grad_norm if clipped is None
                else exact.norms([clipped[i] for i in self.kernel_index]),
                "var_grad_norm": _take(every, [at for at, _ in self.others]),
                "grad_elements": (ops.concatenate([exact.exact_values(grads[at]) if grads[at] is not None
                                                   else ops.zeros([int(np.prod(self.variables[at].shape))], "float64")
                                                   for at, _ in self.elements], 0)
                                  if self.elements else ops.zeros([0], "float64")),
                "finite": ops.all(ops.isfinite(every)),
            }
            n = len(self.kernel_index)

            def probe():  # as TensorFlow's monitor in fit: weights, the update, histograms on probe steps
                hist = exact.log_histograms([ops.zeros(v.shape) if g is None else g
                                             for g, v in zip(kernels, self.kernels_of(self.variables))],
                                            HIST_BINS, *HIST_RANGE) if self.instruments else ops.zeros([0], "int32")
                weight, update = exact.norms(before), exact.norms(after, minus=before)
                unseen = np.array([b is None for b in before])  # kernels the optimizer does not update: not read
                if unseen.any():
                    weight, update = (ops.where(unseen, _nan(n), t) for t in (weight, update))
                return weight, update, hist

            def between():
                shape = [n, HIST_BINS + 1] if self.instruments else [0]
                return _nan(n), _nan(n), ops.zeros(shape, "int32")

            if isinstance(probing, bool):  # chosen in Python (PyTorch's eager step)
                out["weight_norm"], out["update_norm"], hist = probe() if probing else between()
                if probing and self.instruments:
                    out["hist"] = hist
            else:  # a traced boolean (JAX: one compiled step, the probe part under a conditional)
                out["weight_norm"], out["update_norm"], out["hist"] = ops.cond(probing, probe, between)
                out["probed"] = probing
        out["skipped"] = (ops.logical_not(out["finite"]) if skips_nonfinite(optimizer)
                          else ops.convert_to_tensor(False))
        return out

    def kernels_of(self, values: list) -> list:
        return [values[i] for i in self.kernel_index]

    def pack(self, measured: dict, loss=None) -> dict:
        """One step's row: ``measure``'s tensors and the step's loss (None: not read, NaN) as one
        float64 vector in the layout's order ("row", zoo.instruments.layout), and on probe
        steps the histograms ("hist"): the fewest arrays for a step to hand out."""
        with exact.wide():
            finite = measured["finite"]
            if loss is None:
                loss = ops.full([], np.nan, "float64")
            else:
                loss = ops.cast(loss, "float64")
                finite = ops.logical_and(finite, ops.isfinite(loss))
            values = {**measured, "loss": loss, "finite": finite, "metric": ops.full([], np.nan, "float64"),
                      "penalty": ops.zeros([], "float64"), "grad_norm_total": measured["grad_norm"]}
            row = ops.concatenate([ops.reshape(ops.cast(values[f.name], "float64"), [f.size])
                                   for f in self.layout.fields if f.size], 0)
        return {"row": row, **{k: measured[k] for k in ("hist", "probed") if k in measured}}

    def unpack(self, packed: dict) -> tuple[np.ndarray, np.ndarray | None]:
        """(the row, the probe row or None) of one step's ``pack`` on the host, for the recorder."""
        hist = packed.get("hist")
        if "probed" in packed and not bool(to_host(packed["probed"])):
            hist = None
        return (to_host(packed["row"]),
                None if hist is None or not self.probe_layout.width else to_host(hist).astype(np.float64).reshape(-1))

def _take(values, positions: list[int]):
    return ops.take(values, ops.convert_to_tensor(np.asarray(positions, "int32")), axis=0) if positions \
        else ops.zeros([0], "float64")


def _nan(n: int):
    return ops.full([n], np.nan, "float64")


def to_host(t) -> np.ndarray:
    """A JAX array or torch tensor as numpy (keras.ops.convert_to_numpy warns on torch with
    numpy 2: its ``__array__`` takes no ``copy``)."""
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)
