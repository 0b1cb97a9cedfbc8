"""The instruments of probe steps, one file each (zoo.monitor.instruments.base says what a file
declares). Importing this package registers them all, in the order the raw file lists them."""
from zoo.monitor.instruments.base import REGISTRY, Array, Instrument, ModelView, Probe
from zoo.monitor.instruments.histograms import GradientHistograms
from zoo.monitor.instruments.activations import ActivationStats
from zoo.monitor.instruments.time import GradientThroughTime
from zoo.monitor.instruments.forget_gates import ForgetGates
from zoo.monitor.instruments.targets import TargetRange

__all__ = ["REGISTRY", "Array", "Instrument", "ModelView", "Probe", "GradientHistograms", "ActivationStats",
           "GradientThroughTime", "ForgetGates", "TargetRange", "instruments_for"]


def instruments_for(view: ModelView) -> list[Instrument]:
    """Every registered instrument that applies to the model ``view`` shows, in registry order."""
    found = [cls.applies(view) for cls in REGISTRY]
    return [inst for inst in found if inst is not None]
