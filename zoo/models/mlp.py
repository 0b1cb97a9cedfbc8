"""Deep multilayer perceptron: the textbook case for vanishing and exploding gradients."""
from __future__ import annotations

import math
from dataclasses import dataclass

from zoo._lazy import keras
from zoo.config.budget import Data, Estimate
from zoo.models import MODELS, blocks
from zoo.models.roles import RoleBook
from zoo.config.schema import Section, at_least


@dataclass
class MLPConfig(Section):
    depth: int = 20            # Dense layers, output head included: depth=1 is logistic regression
    width: int = 64            # units of every hidden layer
    activation: str = "relu"   # of every hidden layer; the head has none (logits)
    init: str = "he_normal"    # kernels; biases start at zero
    init_std: float = 0.05     # std of init=random_normal (Keras' default); others ignore it
    norm: str = "none"         # none | batch | layer | rms, between each hidden Dense and its activation
    residual: bool = False     # h <- h + block(h) for hidden blocks whose shapes match
    regularizer: str = "none"  # none | l1 | l2 on every kernel
    reg_strength: float = 1e-4  # factor of the l1 / l2 penalty

    def __post_init__(self):
        at_least(1, depth=self.depth, width=self.width)
        blocks.check_knobs(self)


def memory(m, data: Data) -> Estimate:
    """The memory estimate's terms (zoo.config.budget) of a stack of ``depth`` Dense layers of ``width``
    units (also the deep linear net's): parameters exactly, per example each layer's Dense,
    [norm,] and activation outputs."""
    n_in, width, depth = math.prod(data.shape), m.width, m.depth
    if depth == 1:
        params = (n_in + 1) * data.outputs
    else:
        params = (n_in + 1) * width + (depth - 2) * (width + 1) * width + (width + 1) * data.outputs
    per_layer = 3 if getattr(m, "norm", "none") != "none" else 2  # Dense, [norm,] activation
    return Estimate(params, width * depth * per_layer, depth, 0)


@MODELS.register("mlp", schema=MLPConfig, input_kind="flat", pretrainable=True, memory=memory,
                 description="deep MLP: depth Dense layers of equal width")
def build_mlp(input_shape, num_outputs, *, depth, width, activation, init, init_std, norm,
              residual, regularizer, reg_strength):
    digits = max(2, len(str(depth)))
    kernel = blocks.kernel_options(init, init_std, regularizer, reg_strength)
    roles = RoleBook()
    inputs, h = blocks.flat_input(input_shape)
    for i in range(1, depth):
        prefix = f"block{i:0{digits}d}"
        block_input = h
        h = keras.layers.Dense(width, name=f"{prefix}_dense", **kernel(f"{prefix}_dense"))(h)
        h = blocks.normalized(norm, f"{prefix}_norm", h)
        h = roles.activation(activation, f"{prefix}_act")(h)
        roles.block(prefix, f"{prefix}_dense", *([f"{prefix}_norm"] if norm != "none" else []),
                    f"{prefix}_act")
        if residual and block_input.shape[-1] == width:
            h = keras.layers.Add(name=f"{prefix}_add")([block_input, h])
    outputs = keras.layers.Dense(num_outputs, name="head", **kernel("head"))(h)
    return roles.attach(keras.Model(inputs, outputs, name=f"mlp{depth}"))
