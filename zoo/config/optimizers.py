"""The optimizer registry, and the gradient-clipping keys that travel with it.

Clipping keys sit in the optimizer group because that is where Keras users look for them
(``keras.optimizers.Adam(clipnorm=...)``). gradzoo applies them itself, in the train step and
before the optimizer, so it can record the gradient norms both before and after clipping; the
Keras optimizer is therefore built without them. Semantics match Keras: ``clipnorm`` clips each
variable's gradient to that L2 norm, ``global_clipnorm`` rescales all gradients together so
their joint norm is at most that, ``clipvalue`` clips each element to [-v, v]. At most one.

``warmup_steps`` W ramps every optimizer's learning rate up linearly over its first W updates:
update t = 0, 1, ... uses ``lr * min(1, (t + 1) / W)`` (Xiong et al. 2020, "On Layer
Normalization in the Transformer Architecture", Sec. 3.1, the warm-up equation
lr(t) = t / T_warmup * lr_max for t <= T_warmup, its t counting updates from 1, ours from 0).
W = 0 (off) and W = 1 both mean the constant ``lr``; the optimizer is then built exactly as
without the key. A warm-up longer than the run is refused at validation (zoo.training.spec).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from zoo._lazy import keras
from zoo.config.registry import Registry
from zoo.config.schema import Section, SpecError, at_least, positive

OPTIMIZERS = Registry("optimizer")
CLIP_KEYS = ("clipnorm", "global_clipnorm", "clipvalue")


@dataclass
class OptimizerConfig(Section):
    lr: float = 1e-3                        # learning rate
    clipnorm: Optional[float] = None        # rescale each variable's gradient to at most this L2 norm
    global_clipnorm: Optional[float] = None  # rescale all gradients together to at most this joint L2 norm
    clipvalue: Optional[float] = None       # clip every gradient element to [-v, v]; at most one clip
    warmup_steps: int = 0                   # linear warm-up: update t uses lr * min(1, (t+1)/warmup_steps) (Xiong et al. 2020, Sec. 3.1); 0 = off

    def __post_init__(self):
        positive(lr=self.lr)
        at_least(0, warmup_steps=self.warmup_steps)
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


def learning_rate(lr: float, warmup_steps: int):
    """What a Keras optimizer's ``learning_rate`` takes: ``lr`` itself (a float) without warm-up
    (``warmup_steps`` 0 or 1), else a schedule of the optimizer's update count t = 0, 1, ...
    whose value is ``lr * min(1, (t + 1) / warmup_steps)``: linear warm-up (Xiong et al. 2020,
    "On Layer Normalization in the Transformer Architecture", Sec. 3.1).

    Keras' ``PolynomialDecay`` with power 1 from lr/W to lr over W-1 steps is exactly that line:
    at t <= W-1 it gives lr/W + (lr - lr/W) t/(W-1) = lr (t+1)/W, and it holds lr after
    (``tests/test_warmup.py`` checks it against the closed form). A built-in schedule, so the
    optimizer's config serializes without a custom class. Values are float32, as Keras computes
    them. Keras evaluates the schedule at ``optimizer.iterations`` before incrementing it, so
    the first update uses t = 0.

    lr: > 0, in the optimizer's own units (step size per unit gradient).
    warmup_steps: W >= 0, in optimizer updates (training steps).
    Raises ValueError for a negative W (zoo.training.spec refuses it earlier, naming the key)."""
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if warmup_steps <= 1:
        return lr
    return keras.optimizers.schedules.PolynomialDecay(
        initial_learning_rate=lr / warmup_steps, decay_steps=warmup_steps - 1,
        end_learning_rate=lr, power=1.0)


@OPTIMIZERS.register("adam", schema=OptimizerConfig, description="Adam (Kingma & Ba 2015)")
def build_adam(*, lr, warmup_steps):
    return keras.optimizers.Adam(learning_rate=learning_rate(lr, warmup_steps))


@OPTIMIZERS.register("sgd", schema=SGDConfig, description="SGD, optionally with (Nesterov) momentum")
def build_sgd(*, lr, momentum, nesterov, warmup_steps):
    return keras.optimizers.SGD(learning_rate=learning_rate(lr, warmup_steps), momentum=momentum,
                                nesterov=nesterov)


@OPTIMIZERS.register("rmsprop", schema=OptimizerConfig, description="RMSprop (Tieleman & Hinton 2012)")
def build_rmsprop(*, lr, warmup_steps):
    return keras.optimizers.RMSprop(learning_rate=learning_rate(lr, warmup_steps))
