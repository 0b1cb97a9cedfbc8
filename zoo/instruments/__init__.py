"""What is measured inside the compiled step, for every client (the zoo's loop,
zoo.GradientMonitor, a custom loop, zoo.compare and zoo.diagnose).

    meter.py        what one optimizer step reports: the one set of instruments every client uses
    series.py       every per-step series, declared once; layout.py: the packed fields
    graph_stats.py  the in-graph math every instrument shares: exact norms, finiteness, packing
    discover.py     what can be measured in any Keras model, found by looking at it
    sharpness.py    lambda_max of the loss Hessian by Hessian-vector products (sharpness_record.py:
                    its readings, file and MLflow names, numpy only)
    base.py         what a probe-step instrument declares; then one file per instrument:
                    histograms.py, activations.py, time.py, forget_gates.py, targets.py

Importing this package registers the probe-step instruments, in the order the raw file lists
them; it imports no TensorFlow (meter, graph_stats, discover and sharpness do).
"""
from zoo.instruments.base import REGISTRY, Array, Instrument, ModelView, Probe
from zoo.instruments.histograms import GradientHistograms
from zoo.instruments.activations import ActivationStats
from zoo.instruments.time import GradientThroughTime
from zoo.instruments.forget_gates import ForgetGates
from zoo.instruments.targets import TargetRange

__all__ = ["REGISTRY", "Array", "Instrument", "ModelView", "Probe", "GradientHistograms", "ActivationStats",
           "GradientThroughTime", "ForgetGates", "TargetRange", "instruments_for"]


def instruments_for(view: ModelView) -> list[Instrument]:
    """Every registered instrument that applies to the model ``view`` shows, in registry order."""
    found = [cls.applies(view) for cls in REGISTRY]
    return [inst for inst in found if inst is not None]
