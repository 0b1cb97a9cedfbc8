"""CIFAR ResNet (He et al. 2016, "Deep Residual Learning", section 4.2) and its plain twin.

depth = 6n + 2 layers with weights: a 3x3 stem conv, three stages of n basic blocks (two 3x3
convs each) with width, 2*width and 4*width filters, then global average pooling and a Dense
head. The first block of stages 2 and 3 halves the feature map with stride 2. ``residual=false``
gives the *plain* net of the paper: exactly the same conv layers, no additions, which is the
pair that shows degradation and gradient starvation in the deep plain net.

Shortcuts where a block changes shape: "A" is the paper's parameter-free identity (subsample by
the stride, zero-pad the new channels), so the plain and residual twins have identical
parameters; "B" projects with a 1x1 conv (+ norm). Same-shape shortcuts are identity either way.

``residual_scale`` says how each residual branch F enters its block, out = act(shortcut + F):

- ``one`` (default): F as it is, the paper's block.
- ``skipinit``: SkipInit (De & Smith 2020, "Batch Normalization Biases Residual Blocks Towards
  the Identity Function in Deep Networks", Sec. 4): out = act(shortcut + alpha * F), one learned
  scalar alpha per block, initialized to 0, after the branch's last layer (its second conv, or
  that conv's norm) and before the addition. At initialization every block therefore computes
  act(shortcut): for ReLU, whose input here is always a ReLU output (or a subsampled, zero-padded
  one), exactly its shortcut, i.e. the identity on same-shape blocks. De & Smith use
  pre-activation blocks, where the identity holds for any activation; in this post-activation
  net it holds for activations that leave their own outputs unchanged (ReLU), not for tanh or
  sigmoid. Implemented: the multiplier at alpha = 0 and nothing else; the rest of the net is
  unchanged (with ``norm=none`` the convs keep their biases). Not implemented: a small nonzero
  alpha, or any regularization the paper adds for its test scores. With a norm the multiplier sits after the branch's last norm, so the branch also starts at 0
  (like Goyal et al. 2017's zero-initialized last batch-norm scale); allowed, but SkipInit is
  meant to replace normalization, and the residual_scale study uses ``norm=none``.
- ``fixup``: Fixup (Zhang, Dauphin & Ma 2019, "Fixup Initialization: Residual Learning Without
  Normalization", Sec. 3), its three rules for L = 3n residual branches of m = 2 weight layers:
  (1) the head (kernel and bias) and each branch's last conv start at 0; (2) every other layer
  keeps ``init`` (He by default, the paper's "standard method"), and the weight layers inside
  the branches are scaled by L^(-1/(2m-2)) = L^(-1/2): each branch's first conv draws ``init``
  times L^(-1/2) (its second conv is 0 anyway; the authors' code takes He's std from the fan-out,
  9 x filters, where Keras' He uses the fan-in: the same for every conv but the first of a
  downsampling block, which is sqrt(2) wider here); (3) a scalar multiplier (init 1) on every
  branch and a scalar bias (init 0) before each conv, the head and each element-wise activation,
  placed as in the authors' CIFAR code: ``bias1a`` before conv1, ``bias1b`` before the
  branch's activation, ``bias2a`` before conv2, ``scale`` then ``bias2b`` after conv2 (so before
  the block's output activation), ``stem_bias`` before the stem's activation and ``pool_bias``
  before the head. The convs then have no per-channel bias (the scalar biases replace them, as
  in the authors' code); the head keeps its bias, at 0. Not covered by the paper's rules, and
  done as the authors' code does: the stem conv is not a residual branch and keeps ``init``
  unscaled; the option-A shortcut of a downsampling block subsamples and zero-pads the block
  input *plus* ``bias1a`` (the new channels stay exactly 0), and an option-B projection conv
  takes that biased input too and keeps ``init`` unscaled (it is not inside a branch). Not
  implemented, from the authors' CIFAR training script: a 10x smaller learning rate for the
  scalar biases and multipliers (every variable here has the optimizer's one learning rate),
  weight decay on the scalars (``regularizer`` acts on kernels only) and mixup. Fixup is for nets
  without normalization: it needs ``norm=none`` (a norm after each conv would undo the
  L^(-1/2) scaling and divide the zero-initialized conv's output by its zero variance).

Both need ``residual=true``: a plain net has no residual branch to scale.

Layers are named by place: ``stem_conv``, ``stage2_block1_conv1``, ``stage2_block1_norm1``,
``stage2_block1_conv1_act``, ``stage2_block1_shortcut``, ``stage2_block1_add``,
``stage2_block1_out_act``, ``pool``, ``head``; with skipinit or fixup also
``stage2_block1_scale``, with fixup ``stage2_block1_bias1a`` / ``bias1b`` / ``bias2a`` /
``bias2b``, ``stem_bias`` and ``pool_bias``. Activation layers end in ``_act`` (the monitor
finds them by that suffix).
"""
from __future__ import annotations

from dataclasses import dataclass

from zoo._lazy import keras
from zoo.config.budget import Data, Estimate
from zoo.models import MODELS, blocks
from zoo.models.roles import RoleBook
from zoo.models.serializable import serializable
from zoo.config.schema import Section, SpecError, at_least, choice

SHORTCUTS = ("A", "B")
RESIDUAL_SCALES = ("one", "skipinit", "fixup")
BRANCH_LAYERS = 2  # m of Fixup's rule 2: weight layers per residual branch (two 3x3 convs)


@dataclass
class ResNetConfig(Section):
    depth: int = 20            # 6n+2 weight layers: 8, 14, 20, 32, 44, 56, 110 (n = 1, 2, 3, ...)
    width: int = 16            # filters of stage 1; stages 2 and 3 have 2x and 4x
    activation: str = "relu"   # after every norm (and after each residual addition)
    init: str = "he_normal"    # conv and Dense kernels
    init_std: float = 0.05     # std of init=random_normal; others ignore it
    norm: str = "batch"        # batch | layer | rms | none, after every conv (convs then have no bias)
    residual: bool = True      # false: the plain twin, same convs without the additions
    shortcut: str = "A"        # A: zero-pad identity (no parameters) | B: 1x1 conv projection
    residual_scale: str = "one"  # one: branch added as is | skipinit: x learned scalar from 0 (De & Smith 2020) | fixup: Zhang et al. 2019's init (needs norm=none)
    regularizer: str = "none"  # none | l1 | l2 on every kernel
    reg_strength: float = 1e-4  # factor of the l1 / l2 penalty

    def __post_init__(self):
        at_least(1, depth=self.depth, width=self.width)
        if (self.depth - 2) % 6 or self.depth < 8:
            raise SpecError("depth", f"must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, ...), "
                                     f"got {self.depth}")
        blocks.check_knobs(self)
        choice(SHORTCUTS, shortcut=self.shortcut)
        choice(RESIDUAL_SCALES, residual_scale=self.residual_scale)
        if self.residual_scale != "one" and not self.residual:
            raise SpecError("residual_scale", f"{self.residual_scale} scales residual branches, and "
                                              f"model.residual=false has none; use residual_scale=one "
                                              f"or residual=true")
        if self.residual_scale == "fixup" and self.norm != "none":
            raise SpecError("residual_scale", f"fixup initializes nets without normalization (Zhang et "
                                              f"al. 2019, Sec. 3), and a {self.norm} norm after each conv "
                                              f"would undo its scaling; use model.norm=none, or "
                                              f"residual_scale=skipinit with a norm")


def fixup_factor(branches: int, layers: int = BRANCH_LAYERS) -> float:
    """Fixup's rule 2 factor L^(-1/(2m-2)) on the weight layers inside each of L residual branches
    of m layers (Zhang et al. 2019, Sec. 3): L^(-1/2) for the basic block's m = 2 convs.
    Raises ValueError for m < 2 (the exponent is undefined) or L < 1."""
    if layers < 2 or branches < 1:
        raise ValueError(f"Fixup's factor needs m >= 2 layers per branch and L >= 1 branches, got m={layers}, L={branches}")
    return branches ** (-1.0 / (2 * layers - 2))


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
    """The memory estimate's terms (zoo.config.budget) for (H, W, C) images: parameters of every conv,
    norm and the head; per example each block's conv, norm, activation and addition outputs."""
    if len(data.shape) != 3:
        return None  # a mismatch that zoo.training.spec.check_fit reports
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


@serializable
def ScaledInitializer(keras):
    class ScaledInitializer(keras.initializers.Initializer):
        """``factor`` times the draws of ``initializer`` (a Keras initializer or its config):
        Fixup's L^(-1/2) on a residual branch's first conv (Zhang et al. 2019, Sec. 3, rule 2).
        Seeded as the inner initializer is, so the scaled kernel is exactly ``factor`` times the
        kernel ``residual_scale=one`` draws at the same seed. Serializable: a saved model loads
        in safe mode."""

        def __init__(self, initializer, factor: float):
            self.initializer = keras.initializers.get(initializer)
            self.factor = float(factor)

        def __call__(self, shape, dtype=None):
            return self.initializer(shape, dtype=dtype) * self.factor

        def get_config(self):
            return {"initializer": keras.initializers.serialize(self.initializer), "factor": self.factor}

    return ScaledInitializer


@MODELS.register("resnet", schema=ResNetConfig, input_kind="image", memory=memory,
                 description="CIFAR ResNet (He et al. 2016): 6n+2 layers, 3 stages; plain twin "
                             "with residual=false; SkipInit or Fixup branches with residual_scale")
def build_resnet(input_shape, num_outputs, *, depth, width, activation, init, init_std, norm,
                 residual, shortcut, residual_scale, regularizer, reg_strength):
    n = (depth - 2) // 6
    kernel = blocks.kernel_options(init, init_std, regularizer, reg_strength)
    fixup = residual_scale == "fixup"
    branch_factor = fixup_factor(3 * n) if fixup else 1.0  # rule 2: L = 3n residual branches

    def conv(filters, kernel_size, stride, name, start="init"):
        """start: "init" (the init knob), "branch" (the init times Fixup's factor), "zeros"."""
        options = kernel(name)
        if start == "zeros":
            options["kernel_initializer"] = "zeros"
        elif start == "branch" and branch_factor != 1.0:
            options["kernel_initializer"] = ScaledInitializer(options["kernel_initializer"], branch_factor)
        return keras.layers.Conv2D(
            filters, kernel_size, strides=stride, padding="same", name=name,
            # a following norm's shift makes the bias redundant; Fixup's scalar biases replace it
            use_bias=norm == "none" and not fixup,
            **options)

    def normalize(h, name):
        return blocks.normalized(norm, name, h)

    def bias(h, name):  # Fixup's rule 3: a scalar bias from 0
        return blocks.ScalarBias(name=name)(h) if fixup else h

    roles = RoleBook()
    inputs, h = blocks.image_input(input_shape)
    h = conv(width, 3, 1, "stem_conv")(h)
    h = normalize(h, "stem_norm")
    h = bias(h, "stem_bias")
    h = roles.activation(activation, "stem_act")(h)
    for s in range(1, 4):
        filters = width * 2 ** (s - 1)
        for b in range(1, n + 1):
            prefix = f"stage{s}_block{b}"
            stride = 2 if s > 1 and b == 1 else 1
            block_input = h
            branch_input = bias(block_input, f"{prefix}_bias1a")  # Fixup: x + bias1a, else x
            h = conv(filters, 3, stride, f"{prefix}_conv1", start="branch")(branch_input)
            h = normalize(h, f"{prefix}_norm1")
            h = bias(h, f"{prefix}_bias1b")
            h = roles.activation(activation, f"{prefix}_conv1_act")(h)
            h = bias(h, f"{prefix}_bias2a")
            h = conv(filters, 3, 1, f"{prefix}_conv2", start="zeros" if fixup else "branch")(h)
            h = normalize(h, f"{prefix}_norm2")
            if residual_scale != "one":  # SkipInit's alpha from 0, Fixup's multiplier from 1
                h = blocks.ScalarMultiplier(1.0 if fixup else 0.0, name=f"{prefix}_scale")(h)
            h = bias(h, f"{prefix}_bias2b")
            if residual:
                in_filters = block_input.shape[-1]
                skip = block_input
                if stride != 1 or in_filters != filters:  # from the biased input, as Fixup's code
                    if shortcut == "A":
                        skip = ZeroPadShortcut(stride, filters - in_filters,
                                               name=f"{prefix}_shortcut")(branch_input)
                    else:
                        skip = conv(filters, 1, stride, f"{prefix}_shortcut")(branch_input)
                        skip = normalize(skip, f"{prefix}_shortcut_norm")
                h = keras.layers.Add(name=f"{prefix}_add")([skip, h])
            h = roles.activation(activation, f"{prefix}_out_act")(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    h = bias(h, "pool_bias")
    head = kernel("head")
    if fixup:  # rule 1: the classification layer starts at 0 (its bias is 0 by default)
        head["kernel_initializer"] = "zeros"
    outputs = keras.layers.Dense(num_outputs, name="head", **head)(h)
    return roles.attach(keras.Model(inputs, outputs, name=f"{'resnet' if residual else 'plain'}{depth}"))
