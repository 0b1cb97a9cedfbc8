"""A scaled-down GoogLeNet (Szegedy et al. 2015, "Going Deeper with Convolutions").

Stem conv, then ``depth`` Inception modules in three stages separated by 3x3/2 max pooling
(GoogLeNet's 3a-3b | 4a-4e | 5a-5b, here depth//3 per stage, the middle stage taking the rest),
global average pooling and a Dense head. Every module has the paper's four branches with its
3a proportions, u = ``width`` x 2^(stage-1) filters: 1x1 (2u), 1x1 reduce (3u) -> 3x3 (4u),
1x1 reduce (u/2) -> 5x5 (u), 3x3/1 max pool -> 1x1 projection (u), concatenated.

``aux_heads`` auxiliary classifiers hang off intermediate modules (GoogLeNet puts them after 4a
and 4d, a third and two thirds of the way up: here after modules round(depth/3) and
round(2*depth/3), the first ``aux_heads`` of those). Each is 1x1 conv (2u) -> global average
pool -> Dense (8u) -> Dense head, named ``aux1_*``, ``aux2_*``. Their losses are added with
weight ``aux_weight`` (0.3 in the paper) to give early modules a short gradient path; the model
returns ``[main, aux1, ...]``, and evaluation and inference use the main head only
(:func:`zoo.models.blocks.main_head`). Dropout is left out: it is not a gradient knob and would cost determinism.
"""
from __future__ import annotations

from dataclasses import dataclass

from zoo._lazy import keras
from zoo.config.budget import Data, Estimate
from zoo.models import MODELS, blocks
from zoo.models.roles import RoleBook
from zoo.config.schema import Section, SpecError, at_least


@dataclass
class InceptionConfig(Section):
    depth: int = 6             # Inception modules (GoogLeNet has 9)
    width: int = 8             # u of stage 1: branch filters 2u, 3u->4u, u/2->u, u; doubling per stage
    activation: str = "relu"   # after every conv (and its norm)
    init: str = "he_normal"    # conv and Dense kernels
    init_std: float = 0.05     # std of init=random_normal; others ignore it
    norm: str = "none"         # none (GoogLeNet v1) | batch | layer | rms, after every conv
    aux_heads: int = 0         # 0, 1 or 2 auxiliary classifiers on intermediate modules
    aux_weight: float = 0.3    # weight of each auxiliary loss in the training objective
    regularizer: str = "none"  # none | l1 | l2 on every kernel
    reg_strength: float = 1e-4  # factor of the l1 / l2 penalty

    def __post_init__(self):
        at_least(1, depth=self.depth, width=self.width)
        blocks.check_knobs(self)
        if self.aux_heads not in (0, 1, 2):
            raise SpecError("aux_heads", f"must be 0, 1 or 2, got {self.aux_heads}")
        if self.aux_heads > len(aux_positions(self.depth)):
            raise SpecError("aux_heads", f"{self.aux_heads} auxiliary heads need more modules than "
                                         f"depth={self.depth} (at least {3 * self.aux_heads})")
        at_least(0, aux_weight=self.aux_weight)


def aux_positions(depth: int) -> list[int]:
    """Modules (1-based) whose outputs feed auxiliary heads: a third and two thirds of the way."""
    return sorted({p for p in (round(depth / 3), round(2 * depth / 3)) if 1 <= p < depth})


def stage_of(module: int, depth: int) -> int:
    """Stage 1, 2 or 3 of a 1-based module: depth//3 modules in stages 1 and 3, the rest in 2."""
    first = depth // 3
    return 1 if module <= first else 3 if module > depth - first else 2


def memory(m, data: Data) -> Estimate | None:
    """The memory estimate's terms (zoo.config.budget) for (H, W, C) images, module by module in the
    proportions of the paper's module 3a."""
    if len(data.shape) != 3:
        return None  # a mismatch that zoo.training.spec.check_fit reports
    h, w, c = data.shape
    u = m.width
    params, activations = 9 * c * 2 * u, h * w * 2 * u * 3
    channels = 2 * u
    for module in range(1, m.depth + 1):
        stage = stage_of(module, m.depth)
        um, pixels = u * 2 ** (stage - 1), h * w // 4 ** (stage - 1)
        # 1x1 2u; 1x1 3u -> 3x3 4u; 1x1 u/2 -> 5x5 u; pool -> 1x1 u (the paper's 3a proportions)
        params += channels * (2 + 3 + 0.5 + 1) * um + 9 * 3 * 4 * um * um + 25 * 0.5 * um * um
        activations += pixels * (2 + 3 + 4 + 0.5 + 1 + 1 + 8) * um * 3
        channels = 8 * um
    params += channels * data.outputs
    return Estimate(int(params), int(activations), 6 * m.depth + 2, 0)


@MODELS.register("inception", schema=InceptionConfig, input_kind="image", memory=memory,
                 description="scaled-down GoogLeNet: Inception modules, 0-2 auxiliary heads")
def build_inception(input_shape, num_outputs, *, depth, width, activation, init, init_std, norm,
                    aux_heads, aux_weight, regularizer, reg_strength):
    kernel = blocks.kernel_options(init, init_std, regularizer, reg_strength)

    def conv(h, filters, size, name):
        h = keras.layers.Conv2D(filters, size, padding="same", name=name, use_bias=norm == "none",
                                **kernel(name))(h)
        h = blocks.normalized(norm, f"{name}_norm", h)
        return roles.activation(activation, f"{name}_act")(h)

    def dense(h, units, name):
        return keras.layers.Dense(units, name=name, **kernel(name))(h)

    roles = RoleBook()
    inputs, h = blocks.image_input(input_shape)
    h = conv(h, 2 * width, 3, "stem_conv")
    aux_at = aux_positions(depth)[:aux_heads]
    aux_outputs = []
    for m in range(1, depth + 1):
        stage = stage_of(m, depth)
        if m > 1 and stage != stage_of(m - 1, depth):
            h = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{stage}")(h)
        u, p = width * 2 ** (stage - 1), f"inc{m}"
        b1 = conv(h, 2 * u, 1, f"{p}_1x1")
        b3 = conv(conv(h, 3 * u, 1, f"{p}_3x3_reduce"), 4 * u, 3, f"{p}_3x3")
        b5 = conv(conv(h, max(1, u // 2), 1, f"{p}_5x5_reduce"), u, 5, f"{p}_5x5")
        bp = keras.layers.MaxPooling2D(3, strides=1, padding="same", name=f"{p}_pool")(h)
        bp = conv(bp, u, 1, f"{p}_pool_proj")
        h = keras.layers.Concatenate(name=f"{p}_concat")([b1, b3, b5, bp])
        if m in aux_at:
            a = f"aux{len(aux_outputs) + 1}"
            x = conv(h, 2 * u, 1, f"{a}_conv")
            x = keras.layers.GlobalAveragePooling2D(name=f"{a}_pool")(x)
            x = roles.activation(activation, f"{a}_dense_act")(dense(x, 8 * u, f"{a}_dense"))
            aux_outputs.append(dense(x, num_outputs, f"{a}_head"))
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    outputs = dense(h, num_outputs, "head")
    model = keras.Model(inputs, [outputs, *aux_outputs] if aux_outputs else outputs,
                        name=f"inception{depth}")
    return roles.attach(model, aux_heads=[f"aux{i}_head" for i in range(1, len(aux_outputs) + 1)],
                        aux_weight=aux_weight)
