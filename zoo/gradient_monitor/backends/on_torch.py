"""``fit``'s steps on PyTorch: Keras' torch trainer runs each step eagerly (``jit_compile`` is
False by default there) and ends it with ``optimizer.apply(gradients, trainable_weights)``, as
TensorFlow's does; so the seams are the same (zoo.gradient_monitor.hooks): ``apply`` wrapped on
the optimizer object, measured around the original call, and ``scale_loss`` for the step's loss.
Every ``apply`` is measured, so a custom loop that calls it is measured too."""
from __future__ import annotations

from keras import ops

from zoo.gradient_monitor import _keras
from zoo.gradient_monitor.patches import Patches
from zoo.gradient_monitor.hooks import loss_scale


class TorchSteps:
    """The seams on one optimizer: ``receive(packed)`` gets each step's row (PortableMeter.pack), with
    the gradient histograms every ``histogram_every``-th step from the first."""

    def __init__(self, meter, optimizer, receive, histogram_every: int):
        self.meter, self.optimizer, self.receive, self.every = meter, optimizer, receive, histogram_every
        self.patches = Patches()
        self._loss = None
        self._steps = 0  # measured so far: every histogram_every-th from the first is a probe step

    def install(self, model=None) -> None:
        self.patches.wrap(self.optimizer, "scale_loss", self._scale_loss)
        self.patches.wrap(self.optimizer, "apply", self._apply)

    def remove(self) -> None:
        self.patches.remove()

    def flush(self) -> list:
        """Nothing waits here: each step handed its row to ``receive`` as it ran."""
        return []

    def _scale_loss(self, original):
        def scale_loss(loss):
            self._loss = ops.convert_to_tensor(loss).detach()  # the step's loss, unscaled
            return original(loss)
        return scale_loss

    def _apply(self, original):
        meter, optimizer = self.meter, self.optimizer

        def apply(grads, trainable_variables=None):
            variables = list(trainable_variables) if trainable_variables is not None \
                else _keras.applied_variables(optimizer)
            at = {id(v): i for i, v in enumerate(variables)}
            if not any(id(v) in at for v in meter.variables):  # another model's variables
                return original(grads, trainable_variables)
            grads = list(grads)
            ours = [grads[at[id(v)]] if id(v) in at else None for v in meter.variables]
            scale = loss_scale(optimizer)
            if scale is not None:  # read before apply changes a dynamic scale
                scale = ops.copy(ops.convert_to_tensor(scale))
            probing = self._steps % self.every == 0
            kernels = meter.kernels_of(meter.variables)
            before = [ops.copy(v.value) for v in kernels] if probing else None  # the update is in place
            result = original(grads, trainable_variables)
            after = [v.value for v in kernels] if probing else None
            self.receive(meter.pack(meter.measure(ours, before, after, optimizer, scale, probing), self._loss))
            self._loss, self._steps = None, self._steps + 1
            return result
        return apply
