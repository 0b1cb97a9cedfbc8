"""CIFAR ResNet (He et al. 2016, "Deep Residual Learning", section 4.2) and its plain twin.

depth = 6n + 2 layers with weights: a 3x3 stem conv, three stages of n basic blocks (two 3x3
convs each) with width, 2*width and 4*width filters, then global average pooling and a Dense
head. The first block of stages 2 and 3 halves the feature map with stride 2. ``residual=false``
gives the *plain* net of the paper: exactly the same conv layers, no additions, which is the
pair that shows degradation and gradient starvation in the deep plain net.

Shortcuts where a block changes shape: "A" is the paper's parameter-free identity (subsample by
the stride, zero-pad the new channels), so the plain and residual twins have identical
parameters; "B" projects with a 1x1 conv (+ norm). Same-shape shortcuts are identity either way.

Layers are named by place: ``stem_conv``, ``stage2_block1_conv1``, ``stage2_block1_norm1``,
``stage2_block1_conv1_act``, ``stage2_block1_shortcut``, ``stage2_block1_add``,
``stage2_block1_out_act``, ``pool``, ``head``. Activation layers end in ``_act`` (the monitor
finds them by that suffix).
"""
from __future__ import annotations

from dataclasses import dataclass

from zoo._lazy import keras
from zoo.budget import Data, Estimate
from zoo.models import MODELS, blocks
from zoo.models.roles import RoleBook
from zoo.models.serializable import serializable
from zoo.schema import Section, SpecError, at_least, choice

SHORTCUTS = ("A", "B")


@dataclass
class ResNetConfig(Section):
    depth: int = 20            # 6n+2 weight layers: 8, 14, 20, 32, 44, 56, 110 (n = 1, 2, 3, ...)
    width: int = 16            # filters of stage 1; stages 2 and 3 have 2x and 4x
    activation: str = "relu"   # after every norm (and after each residual addition)
    init: str = "he_normal"    # conv and Dense kernels
    init_std: float = 0.05     # std of init=random_normal; others ignore it
    norm: str = "batch"        # batch | layer | none, after every conv (convs then have no bias)
    residual: bool = True      # false: the plain twin, same convs without the additions
    shortcut: str = "A"        # A: zero-pad identity (no parameters) | B: 1x1 conv projection
    regularizer: str = "none"  # none | l1 | l2 on every kernel
    reg_strength: float = 1e-4  # factor of the l1 / l2 penalty

    def __post_init__(self):
        at_least(1, depth=self.depth, width=self.width)
        if (self.depth - 2) % 6 or self.depth < 8:
            raise SpecError("depth", f"must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), "
                                     f"got {self.depth}")
        blocks.check_knobs(self)
        choice(SHORTCUTS, shortcut=self.shortcut)


@serializable
def ZeroPadShortcut(keras):
    class ZeroPadShortcut(keras.layers.Layer):
        """ResNet option A (He et al. 2016): keep every ``stride``-th pixel, then zero-pad
        ``extra`` channels, split between both sides. No parameters."""

        def __init__(self, stride: int, extra: int, **kwargs):
            super().__init__(**kwargs)
            self.stride, self.extra = int(stride), int(extra)

        def call(self, t):
            t = t[:, ::self.stride, ::self.stride, :]
            before = self.extra // 2
            return keras.ops.pad(t, [[0, 0], [0, 0], [0, 0], [before, self.extra - before]])

        def compute_output_shape(self, shape):
            def down(n):
                return None if n is None else -(-n // self.stride)
            return (shape[0], down(shape[1]), down(shape[2]), shape[3] + self.extra)

        def get_config(self):
            return {**super().get_config(), "stride": self.stride, "extra": self.extra}

    return ZeroPadShortcut


def memory(m, data: Data) -> Estimate | None:
    """The memory estimate's terms (zoo.budget) for (H, W, C) images: parameters of every conv,
    norm and the head; per example each block's conv, norm, activation and addition outputs."""
    if len(data.shape) != 3:
        return None  # a mismatch that zoo.spec.check_fit reports
    h, w, c = data.shape
    n, width = max(1, (m.depth - 2) // 6), m.width
    per_channel = 2 if m.norm != "none" else 1  # gamma and beta, or a bias
    params = (9 * c + per_channel) * width + (4 * width + 1) * data.outputs
    activations = h * w * width * 3  # stem conv, norm, activation
    previous = width
    for stage in range(3):
        filters, pixels = width * 2**stage, h * w // 4**stage
        params += 9 * previous * filters + (2 * n - 1) * 9 * filters * filters
        params += 2 * n * per_channel * filters
        activations += 2 * n * pixels * filters * 4  # conv, norm, activation, addition
        previous = filters
    return Estimate(params, activations, m.depth, 0)


@MODELS.register("resnet", schema=ResNetConfig, input_kind="image", memory=memory,
                 description="CIFAR ResNet (He et al. 2016): 6n+2 layers, 3 stages; plain twin "
                             "with residual=false")
def build_resnet(input_shape, num_outputs, *, depth, width, activation, init, init_std, norm,
                 residual, shortcut, regularizer, reg_strength):
    n = (depth - 2) // 6
    kernel = blocks.kernel_options(init, init_std, regularizer, reg_strength)

    def conv(filters, kernel_size, stride, name):
        return keras.layers.Conv2D(
            filters, kernel_size, strides=stride, padding="same", name=name,
            use_bias=norm == "none",  # a following norm's shift makes the bias redundant
            **kernel(name))

    def normalize(h, name):
        return blocks.normalized(norm, name, h)

    roles = RoleBook()
    inputs, h = blocks.image_input(input_shape)
    h = conv(width, 3, 1, "stem_conv")(h)
    h = normalize(h, "stem_norm")
    h = roles.activation(activation, "stem_act")(h)
    for s in range(1, 4):
        filters = width * 2 ** (s - 1)
        for b in range(1, n + 1):
            prefix = f"stage{s}_block{b}"
            stride = 2 if s > 1 and b == 1 else 1
            block_input = h
            h = conv(filters, 3, stride, f"{prefix}_conv1")(h)
            h = normalize(h, f"{prefix}_norm1")
            h = roles.activation(activation, f"{prefix}_conv1_act")(h)
            h = conv(filters, 3, 1, f"{prefix}_conv2")(h)
            h = normalize(h, f"{prefix}_norm2")
            if residual:
                in_filters = block_input.shape[-1]
                skip = block_input
                if stride != 1 or in_filters != filters:
                    if shortcut == "A":
                        skip = ZeroPadShortcut(stride, filters - in_filters,
                                               name=f"{prefix}_shortcut")(block_input)
                    else:
                        skip = conv(filters, 1, stride, f"{prefix}_shortcut")(block_input)
                        skip = normalize(skip, f"{prefix}_shortcut_norm")
                h = keras.layers.Add(name=f"{prefix}_add")([skip, h])
            h = roles.activation(activation, f"{prefix}_out_act")(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    outputs = keras.layers.Dense(num_outputs, name="head", **kernel("head"))(h)
    return roles.attach(keras.Model(inputs, outputs, name=f"{'resnet' if residual else 'plain'}{depth}"))
