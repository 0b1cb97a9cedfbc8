"""The optimizer registry, and the gradient-clipping keys that travel with it.

Clipping keys sit in the optimizer group because that is where Keras users look for them
(``keras.optimizers.Adam(clipnorm=...)``). gradzoo applies them itself, in the train step and
before the optimizer, so it can record the gradient norms both before and after clipping; the
Keras optimizer is therefore built without them. Semantics match Keras: ``clipnorm`` clips each
variable's gradient to that L2 norm, ``global_clipnorm`` rescales all gradients together so
their joint norm is at most that, ``clipvalue`` clips each element to [-v, v]. At most one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from zoo._lazy import keras
from zoo.registry import Registry
from zoo.schema import Section, SpecError, at_least, positive

OPTIMIZERS = Registry("optimizer")
CLIP_KEYS = ("clipnorm", "global_clipnorm", "clipvalue")


@dataclass
class OptimizerConfig(Section):
    lr: float = 1e-3                        # learning rate
    clipnorm: Optional[float] = None        # rescale each variable's gradient to at most this L2 norm
    global_clipnorm: Optional[float] = None  # rescale all gradients together to at most this joint L2 norm
    clipvalue: Optional[float] = None       # clip every gradient element to [-v, v]; at most one clip

    def __post_init__(self):
        positive(lr=self.lr)
        chosen = [k for k in CLIP_KEYS if getattr(self, k) is not None]
        for key in chosen:
            positive(**{key: getattr(self, key)})
        if len(chosen) > 1:
            raise SpecError("", f"set at most one of {', '.join(CLIP_KEYS)}; got {', '.join(chosen)}")

    def kwargs(self):
        return {k: v for k, v in super().kwargs().items() if k not in CLIP_KEYS}

    def clipping(self) -> tuple[str, float] | None:
        """(kind, threshold) of the one clip that is set, or None."""
        return next(((k, getattr(self, k)) for k in CLIP_KEYS if getattr(self, k) is not None), None)


@dataclass
class SGDConfig(OptimizerConfig):
    lr: float = 1e-2           # learning rate
    momentum: float = 0.0      # heavy-ball momentum in [0, 1]; 0 = plain SGD
    nesterov: bool = False     # Nesterov momentum (Sutskever et al. 2013)

    def __post_init__(self):
        super().__post_init__()
        at_least(0, momentum=self.momentum)
        if self.momentum > 1:  # Keras' SGD refuses it, but only once TensorFlow is up
            raise SpecError("momentum", f"must be in [0, 1] (Keras' SGD), got {self.momentum:g}")


@OPTIMIZERS.register("adam", schema=OptimizerConfig, description="Adam (Kingma & Ba 2015)")
def build_adam(*, lr):
    return keras.optimizers.Adam(learning_rate=lr)


@OPTIMIZERS.register("sgd", schema=SGDConfig, description="SGD, optionally with (Nesterov) momentum")
def build_sgd(*, lr, momentum, nesterov):
    return keras.optimizers.SGD(learning_rate=lr, momentum=momentum, nesterov=nesterov)


@OPTIMIZERS.register("rmsprop", schema=OptimizerConfig, description="RMSprop (Tieleman & Hinton 2012)")
def build_rmsprop(*, lr):
    return keras.optimizers.RMSprop(learning_rate=lr)
