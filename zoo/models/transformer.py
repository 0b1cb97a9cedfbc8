"""Transformer encoder (Vaswani et al. 2017, Sec. 3) for sequences, with the knobs that decide
whether a deep one trains: where the norm sits, which norm, and a learned residual weight.

    inputs (batch, T, F) -> Dense(width) "embed"          feature vectors, projected linearly
    inputs (batch, T) ids -> Embedding(vocab_size) "embed" tokens (model.vocab_size > 0)
    + learned positions "positions" (T x width; BERT's N(0, 0.02^2))
    depth x block: multi-head self-attention, then an MLP (width -> mlp_ratio*width -> width)
    head: mean over positions -> Dense (sequence-to-one) | Dense at every position (sequence)

``norm_position`` (Xiong et al. 2020, "On Layer Normalization in the Transformer
Architecture", Fig. 1): ``post`` is the original Transformer's x <- Norm(x + F(x)) after each
sub-layer; ``pre`` is x <- x + F(Norm(x)), with one more Norm after the last block. ``norm``:
``layer`` (Ba et al. 2016), ``rms`` (Zhang & Sennrich 2019: no centring, no shift) or ``none``.
``residual_scale=rezero`` (Bachlechner et al. 2020, "ReZero is All You Need", eq. 4): every
sub-layer's output is multiplied by a learned scalar alpha starting at 0, x <- x + alpha F(x), so
every block starts as the identity map; the paper uses it with ``norm=none``.

Attention is built from Dense layers (``blockNN_query``, ``_key``, ``_value``, ``_attn_out``,
each d x d, Xavier / the ``init`` knob with its true fan-in and fan-out) around a parameter-free
``MultiHeadDotProduct``: softmax(Q K^T / sqrt(d_k)) V per head, no mask (an encoder). Keras'
MultiHeadAttention would draw its four kernels from one initializer (identical Q and K for a
seeded one) with fans computed over its 3-D kernels.

The monitor measures the gradient reaching each position of the sequence entering every block
(the "gradient through time" of a recurrent net, here across positions): the builder records
those tensors (``RoleBook.sequence``). Layers are named by place: ``blockNN_attn_norm``,
``blockNN_attn_add``, ``blockNN_mlp_dense1``, ``blockNN_mlp_act``, ``blockNN_mlp_add``...
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from zoo._lazy import keras
from zoo.config.budget import Data, Estimate
from zoo.models import MODELS, blocks
from zoo.models.roles import RoleBook
from zoo.models.serializable import serializable
from zoo.config.schema import Section, SpecError, at_least, choice

NORM_POSITIONS = ("pre", "post")
NORMS = ("layer", "rms", "none")
RESIDUAL_SCALES = ("one", "rezero")
HEADS = ("mean", "sequence")
POSITION_STD = 0.02  # learned positions ~ N(0, 0.02^2), as BERT and GPT-2 initialize them


@dataclass
class TransformerConfig(Section):
    depth: int = 2               # encoder blocks (attention + MLP each)
    width: int = 64              # model width d: embedding, attention and residual stream
    heads: int = 4               # attention heads; width must be a multiple (d_k = width / heads)
    mlp_ratio: int = 4           # the MLP's hidden units per unit of width (4 in Vaswani et al.)
    activation: str = "relu"     # the MLP's hidden activation (relu as in Vaswani et al.; gelu as BERT)
    init: str = "glorot_uniform"  # every Dense kernel (Xavier, as in Xiong et al. 2020)
    init_std: float = 0.05       # std of init=random_normal; others ignore it
    norm_position: str = "pre"   # pre: x + F(Norm(x)), a final Norm | post: Norm(x + F(x)) (original)
    norm: str = "layer"          # layer | rms | none
    residual_scale: str = "one"  # one: x + F(x) | rezero: x + alpha F(x), alpha learned from 0
    head: str = "mean"           # mean: mean over positions, one output per sequence | sequence: per position
    vocab_size: int = 0          # 0: inputs are feature vectors (batch, T, F) | > 0: token ids (batch, T) < vocab_size
    regularizer: str = "none"    # none | l1 | l2 on every kernel
    reg_strength: float = 1e-4   # factor of the l1 / l2 penalty

    PER_SEQUENCE_HEAD = "mean"  # zoo.training.spec.check_head: the head that gives one output per sequence

    def __post_init__(self):
        at_least(1, depth=self.depth, width=self.width, heads=self.heads, mlp_ratio=self.mlp_ratio)
        at_least(0, vocab_size=self.vocab_size)
        if self.width % self.heads:
            raise SpecError("heads", f"must divide model.width ({self.width}) into equal heads, "
                                     f"got {self.heads}")
        choice(NORM_POSITIONS, norm_position=self.norm_position)
        choice(NORMS, norm=self.norm)
        choice(RESIDUAL_SCALES, residual_scale=self.residual_scale)
        choice(HEADS, head=self.head)
        blocks.check_knobs(self)

    def check_data(self, data) -> None:
        """Token ids (``vocab_size`` > 0) must be whole numbers in [0, vocab_size): an Embedding
        would truncate other values and clip ids silently. data=arrays hands them over as
        float32, exact for ids below 2**24, so whole-valued floats are ids; standardized ones
        are not (data.standardize=false keeps them)."""
        import numpy as np

        if not self.vocab_size:
            return
        for split in ("x_train", "x_val"):
            x = np.asarray(getattr(data, split))
            if x.size and not np.array_equal(x, np.round(x)):
                raise SpecError("vocab_size", f"> 0 reads token ids, but {split} holds values that are not "
                                              f"whole numbers (with data=arrays, set data.standardize=false); "
                                              f"model.vocab_size=0 reads feature vectors")
            if x.size and (x.min() < 0 or x.max() >= self.vocab_size):
                raise SpecError("vocab_size", f"must exceed every token id: {split} holds ids in "
                                              f"[{x.min():g}, {x.max():g}], got {self.vocab_size}")

    @property
    def data_hint(self) -> str | None:
        """What fits when no registered dataset does (zoo.training.spec.check_fit)."""
        return "data=arrays with integer token ids x of shape (N, T)" if self.vocab_size else None

    @property
    def input_kind(self) -> str:
        """Token ids are one integer per position, (batch, T): a "flat" array; feature vectors
        are a "sequence" (batch, T, F)."""
        return "flat" if self.vocab_size else "sequence"


def memory(m: TransformerConfig, data: Data) -> Estimate | None:
    """The memory estimate's terms (zoo.config.budget) for ``data``: parameters counted exactly,
    activations per example as the outputs each block keeps for the backward pass."""
    if len(data.shape) != (1 if m.vocab_size else 2):
        return None  # a mismatch that zoo.training.spec.check_fit reports
    steps, d, hidden = data.shape[0], m.width, m.width * m.mlp_ratio
    params = parameter_count(m, data.shape, data.outputs)
    per_block = steps * (10 * d + 2 * hidden) + 3 * m.heads * steps * steps  # + scores, softmax
    return Estimate(params, steps * 2 * d + m.depth * per_block, 6 * m.depth + 3, 0)


def parameter_count(m: TransformerConfig, input_shape, outputs: int) -> int:
    """Trainable weights of the model :func:`build_transformer` makes, in closed form."""
    steps, d, hidden = input_shape[0], m.width, m.width * m.mlp_ratio
    embed = m.vocab_size * d if m.vocab_size else (input_shape[1] + 1) * d
    norm = {"layer": 2 * d, "rms": d, "none": 0}[m.norm]
    scale = 2 if m.residual_scale == "rezero" else 0
    block = 4 * (d * d + d) + (d + 1) * hidden + (hidden + 1) * d + 2 * norm + scale
    final = norm if m.norm_position == "pre" else 0
    return embed + steps * d + m.depth * block + final + (d + 1) * outputs


@serializable
def PositionEmbedding(keras):
    class PositionEmbedding(keras.layers.Layer):
        """x + P with P a learned (T, width) table, one row per position: (batch, T, width) ->
        (batch, T, width). Initialized N(0, ``std``^2) with the given seed."""

        def __init__(self, std: float = POSITION_STD, seed: int | None = None, **kwargs):
            super().__init__(**kwargs)
            self.std, self.seed = float(std), seed

        def build(self, shape):
            # not "embeddings": the monitor takes those for a layer's kernel (zoo.instruments.layout),
            # and this table is the input's companion, not a layer of the profile
            self.table = self.add_weight(
                name="table", shape=(shape[1], shape[2]),
                initializer=keras.initializers.RandomNormal(stddev=self.std, seed=self.seed))

        def call(self, x):
            return x + keras.ops.cast(self.table, x.dtype)

        def compute_output_shape(self, shape):
            return shape

        def get_config(self):
            return {**super().get_config(), "std": self.std, "seed": self.seed}

    return PositionEmbedding


@serializable
def MultiHeadDotProduct(keras):
    class MultiHeadDotProduct(keras.layers.Layer):
        """Scaled dot-product attention per head (Vaswani et al. 2017, Sec. 3.2.1-3.2.2), no
        parameters: [Q, K, V], each (batch, T, width) -> (batch, T, width), heads concatenated."""

        def __init__(self, heads: int, **kwargs):
            super().__init__(**kwargs)
            self.heads = int(heads)

        def call(self, inputs):
            q, k, v = inputs
            ops = keras.ops
            batch, steps, width = ops.shape(q)[0], ops.shape(q)[1], q.shape[-1]
            d_k = width // self.heads

            def split(t):  # (batch, T, width) -> (batch, heads, T, d_k)
                return ops.transpose(ops.reshape(t, (batch, steps, self.heads, d_k)), (0, 2, 1, 3))

            scores = ops.matmul(split(q), ops.transpose(split(k), (0, 1, 3, 2))) / math.sqrt(d_k)
            mixed = ops.matmul(ops.softmax(scores, axis=-1), split(v))
            return ops.reshape(ops.transpose(mixed, (0, 2, 1, 3)), (batch, steps, width))

        def compute_output_shape(self, shapes):
            return shapes[0]

        def get_config(self):
            return {**super().get_config(), "heads": self.heads}

    return MultiHeadDotProduct


@serializable
def MeanOverPositions(keras):
    class MeanOverPositions(keras.layers.Layer):
        """The mean over positions: (batch, T, width) -> (batch, width)."""

        def call(self, x):
            return keras.ops.mean(x, axis=1)

        def compute_output_shape(self, shape):
            return (shape[0], shape[2])

    return MeanOverPositions


@MODELS.register("transformer", schema=TransformerConfig, input_kind="sequence", memory=memory,
                 description="Transformer encoder: Pre-LN | Post-LN, layer | rms | no norm, ReZero")
def build_transformer(input_shape, num_outputs, *, depth, width, heads, mlp_ratio, activation, init,
                      init_std, norm_position, norm, residual_scale, head, vocab_size, regularizer,
                      reg_strength):
    kernel = blocks.kernel_options(init, init_std, regularizer, reg_strength)
    digits = max(2, len(str(depth)))
    roles = RoleBook()

    def dense(units, name, h):
        return keras.layers.Dense(units, name=name, **kernel(name))(h)

    def residual(prefix, part, x, branch):
        """(x + F(x) around sub-layer ``part``, with the norm where ``norm_position`` puts it,
        the name of the layer that outputs it)."""
        f = branch(blocks.normalized(norm, f"{prefix}_{part}_norm", x) if norm_position == "pre" else x)
        if residual_scale == "rezero":
            f = blocks.ScalarMultiplier(0.0, name=f"{prefix}_{part}_rezero")(f)
        x = keras.layers.Add(name=f"{prefix}_{part}_add")([x, f])
        if norm_position == "post" and norm != "none":
            return blocks.normalized(norm, f"{prefix}_{part}_norm", x), f"{prefix}_{part}_norm"
        return x, f"{prefix}_{part}_add"

    def attention(prefix):
        def branch(h):
            q, k, v = (dense(width, f"{prefix}_{part}", h) for part in ("query", "key", "value"))
            mixed = MultiHeadDotProduct(heads, name=f"{prefix}_attention")([q, k, v])
            return dense(width, f"{prefix}_attn_out", mixed)
        return branch

    def mlp(prefix):
        def branch(h):
            h = dense(width * mlp_ratio, f"{prefix}_mlp_dense1", h)
            h = roles.activation(activation, f"{prefix}_mlp_act")(h)
            return dense(width, f"{prefix}_mlp_dense2", h)
        return branch

    inputs = keras.Input(shape=tuple(input_shape), name="inputs", dtype="int32" if vocab_size else "float32")
    if vocab_size:
        h = keras.layers.Embedding(vocab_size, width, name="embed", embeddings_initializer=blocks.initializer(
            "random_normal", POSITION_STD, "embed/embeddings"))(inputs)
    else:
        h = dense(width, "embed", inputs)
    h = PositionEmbedding(POSITION_STD, blocks.layer_seed("positions/embeddings"), name="positions")(h)
    source = "positions"
    for i in range(1, depth + 1):
        prefix = f"block{i:0{digits}d}"
        roles.sequence(prefix, source)  # the gradient reaching each position of the block's input
        h, _ = residual(prefix, "attn", h, attention(prefix))
        h, source = residual(prefix, "mlp", h, mlp(prefix))
    if norm_position == "pre":
        h = blocks.normalized(norm, "final_norm", h)
    if head == "mean":
        h = MeanOverPositions(name="pool")(h)
    outputs = dense(num_outputs, "head", h)
    name = f"transformer{depth}-{norm_position}{'' if norm == 'layer' else '-' + norm}"
    return roles.attach(keras.Model(inputs, outputs, name=name))
