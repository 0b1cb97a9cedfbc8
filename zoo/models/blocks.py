"""The mitigation knobs every model family shares: activation, initializer, norm, regularizer.

Each knob is a registry, so an unknown name fails at config validation with the list of valid
names, and adding a choice is one registered function. Factories build Keras objects only when
called; importing this module costs no TensorFlow.

Activation tags tell the monitor what to measure on a layer's output (zoo.instruments.graph_stats):
``saturation`` ("sigmoid" | "tanh"): the fraction of outputs in the flat tails, where the local
derivative is under 1% of its peak (sigmoid output outside [0.0025, 0.9975]; |tanh| > 0.995);
``dies``: the fraction of dead units, which give no positive output on any example and so pass
no gradient at all. Only ReLU dies: LeakyReLU and PReLU keep a slope below zero, and ELU, SELU
and GELU a smooth one, so a unit that is negative everywhere still learns.

Every random initializer is seeded per layer, from the run's seed and the layer's name
(:func:`layer_seed`): adding a layer (an auxiliary head, a projection shortcut, a norm) leaves
every other layer's initial weights unchanged, so two variants that differ by one knob start
from the same weights wherever they share layers. Keras' default, one global stream of draws
in build order, would shift every later layer's weights instead.
"""
from __future__ import annotations

import zlib

from zoo._lazy import keras
from zoo.models.serializable import serializable
from zoo.config.registry import Registry
from zoo.config.schema import at_least, one_of, positive

ACTIVATIONS = Registry("activation")
INITIALIZERS = Registry("initializer")
NORMS = Registry("norm")
REGULARIZERS = Registry("regularizer")


# --- activations: factory(name) -> keras layer ------------------------------------------------
def _plain(fn: str, **tags):
    def factory(name: str):
        return keras.layers.Activation(fn, name=name)

    ACTIVATIONS.register(fn, description=f"keras '{fn}'", **tags)(factory)


# tag ``init``: the initializer its paper pairs it with (Glorot & Bengio 2010 for the saturating
# ones, He et al. 2015 for rectifiers, Klambauer et al. 2017 for SELU); the config resolver
# ${zoo.matched_init:${model.activation}} reads it, so a sweep over activations can keep each
# one with its own init.
_plain("sigmoid", saturation="sigmoid", init="glorot_uniform")
_plain("tanh", saturation="tanh", init="glorot_uniform")
_plain("relu", dies=True, init="he_normal")
_plain("elu", init="he_normal")
_plain("selu", init="lecun_normal")
_plain("gelu", init="he_normal")
_plain("linear", init="glorot_uniform")


@ACTIVATIONS.register("leaky_relu", init="he_normal")
def _leaky_relu(name: str):
    """LeakyReLU with slope 0.01 for x < 0 (Maas et al. 2013), not Keras' default 0.3."""
    return keras.layers.LeakyReLU(negative_slope=0.01, name=name)


@ACTIVATIONS.register("prelu", init="he_normal")
def _prelu(name: str):
    """PReLU (He et al. 2015): a learned negative slope per unit, starting at 0.25 as in the paper."""
    return keras.layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25), name=name)


# --- initializers: factory(std, seed) -> keras initializer ----------------------------------------
# ``std`` is read by random_normal only: the "naive" init whose scale does not follow fan-in.
@INITIALIZERS.register("random_normal")
def _random_normal(std: float, seed: int | None = None):
    """N(0, std^2) whatever the layer size: small std vanishes, large std explodes."""
    return keras.initializers.RandomNormal(stddev=std, seed=seed)


def _named(name: str, doc: str):
    def factory(std: float, seed: int | None = None):
        init = keras.initializers.get(name)
        config = init.get_config()
        if "seed" not in config:  # identity: nothing random
            return init
        return type(init).from_config({**config, "seed": seed})

    INITIALIZERS.register(name, description=doc)(factory)


_named("glorot_uniform", "Glorot & Bengio 2010: Var = 2/(fan_in+fan_out), uniform")
_named("glorot_normal", "Glorot & Bengio 2010: Var = 2/(fan_in+fan_out), truncated normal")
_named("he_uniform", "He et al. 2015: Var = 2/fan_in, for ReLU, uniform")
_named("he_normal", "He et al. 2015: Var = 2/fan_in, for ReLU, truncated normal")
_named("lecun_normal", "LeCun 1998: Var = 1/fan_in; with SELU gives self-normalizing nets")
_named("orthogonal", "Saxe et al. 2014: orthogonal matrix, all singular values 1")
_named("identity", "identity matrix (Le et al. 2015 IRNN); rectangular eye for non-square")


# --- normalization: factory(name) -> keras layer --------------------------------------------
@NORMS.register("batch")
def _batch_norm(name: str):
    """Ioffe & Szegedy 2015: normalize each unit over the batch."""
    return keras.layers.BatchNormalization(name=name)


@NORMS.register("layer")
def _layer_norm(name: str):
    """Ba et al. 2016: normalize each example over its units; batch-size independent."""
    return keras.layers.LayerNormalization(name=name)


@NORMS.register("rms")
def _rms_norm(name: str):
    """Zhang & Sennrich 2019: divide each example by the root mean square of its units, times a
    learned gain; no centring and no shift (Keras' RMSNormalization)."""
    return keras.layers.RMSNormalization(name=name)


@NORMS.register("none")
def _no_norm(name: str):
    return None


# --- learned scalars on residual branches (ReZero, SkipInit, Fixup) ---------------------------
@serializable
def ScalarMultiplier(keras):
    class ScalarMultiplier(keras.layers.Layer):
        """x -> alpha * x with one learned scalar alpha, starting at ``initial``: the residual
        weight of ReZero (Bachlechner et al. 2020, eq. 4) and SkipInit (De & Smith 2020, Sec. 4),
        both starting at 0 so every residual block starts as the identity map; Fixup's scalar
        multiplier (Zhang et al. 2019, Sec. 3, rule 3), starting at 1."""

        def __init__(self, initial: float = 0.0, **kwargs):
            super().__init__(**kwargs)
            self.initial = float(initial)

        def build(self, shape):
            self.alpha = self.add_weight(name="alpha", shape=(),
                                         initializer=keras.initializers.Constant(self.initial))

        def call(self, x):
            return x * keras.ops.cast(self.alpha, x.dtype)

        def compute_output_shape(self, shape):
            return shape

        def get_config(self):
            return {**super().get_config(), "initial": self.initial}

    return ScalarMultiplier


@serializable
def ScalarBias(keras):
    class ScalarBias(keras.layers.Layer):
        """x -> x + b with one learned scalar b starting at 0: Fixup's scalar biases
        (Zhang et al. 2019, Sec. 3, rule 3), before each convolution and activation."""

        def build(self, shape):
            self.bias = self.add_weight(name="bias", shape=(), initializer="zeros")

        def call(self, x):
            return x + keras.ops.cast(self.bias, x.dtype)

        def compute_output_shape(self, shape):
            return shape

    return ScalarBias


# --- weight regularizers: factory(strength) -> keras regularizer | None ----------------------
@REGULARIZERS.register("none")
def _no_regularizer(strength: float):
    return None


@REGULARIZERS.register("l1")
def _l1(strength: float):
    return keras.regularizers.L1(strength)


@REGULARIZERS.register("l2")
def _l2(strength: float):
    return keras.regularizers.L2(strength)


def check_knobs(config, activation: str | None = None) -> None:
    """Checks of the shared knobs, for every model schema: whichever of init, init_std, norm,
    regularizer, reg_strength and activation (unless given) the schema has."""
    if hasattr(config, "init_std"):
        positive(init_std=config.init_std)
    if hasattr(config, "reg_strength"):
        at_least(0, reg_strength=config.reg_strength)
    if activation or hasattr(config, "activation"):
        one_of(ACTIVATIONS, activation=activation or config.activation)
    for key, registry in (("init", INITIALIZERS), ("norm", NORMS), ("regularizer", REGULARIZERS)):
        if hasattr(config, key):
            one_of(registry, **{key: getattr(config, key)})


def activation(kind: str, name: str):
    return ACTIVATIONS.build(kind, name)


def layer_seed(name: str) -> int:
    """The seed of layer ``name``'s random draws: a function of the run's seed (set by
    ``keras.utils.set_random_seed``) and the name alone, not of the order layers are built in."""
    from keras.src.utils.rng_utils import get_random_seed  # not exported; set_random_seed's record

    run_seed = get_random_seed() or 0
    return zlib.crc32(f"{run_seed}/{name}".encode()) & 0x7FFFFFFF


def initializer(kind: str, std: float, name: str):
    """Initializer ``kind`` for the weights called ``name`` (``stage1_block1_conv1/kernel``)."""
    return INITIALIZERS.build(kind, std, layer_seed(name))


def norm(kind: str, name: str):
    return NORMS.build(kind, name)


def regularizer(kind: str, strength: float):
    return REGULARIZERS.build(kind, strength)


def kernel_options(init: str, init_std: float, reg: str, reg_strength: float):
    """Every model's weight layers take the same two knobs; this returns a factory of their
    keyword arguments for the layer called ``name``, fresh per call and seeded by that name."""
    return lambda name: {"kernel_initializer": initializer(init, init_std, f"{name}/kernel"),
                         "kernel_regularizer": regularizer(reg, reg_strength)}


def normalized(kind: str, name: str, h):
    """``h`` through a norm layer of ``kind``, or unchanged for ``none``."""
    layer = norm(kind, name)
    return h if layer is None else layer(h)


def flat_input(input_shape):
    """(model input, its features as a vector): images are flattened for the Dense models."""
    inputs = keras.Input(shape=tuple(input_shape), name="inputs")
    return inputs, keras.layers.Flatten(name="flatten")(inputs) if len(input_shape) > 1 else inputs


def image_input(input_shape):
    """(model input, an H x W x C tensor): a single-channel image given as (H, W) gains its axis."""
    inputs = keras.Input(shape=tuple(input_shape), name="inputs")
    if len(input_shape) == 2:
        return inputs, keras.layers.Reshape((*input_shape, 1), name="add_channel")(inputs)
    return inputs, inputs


def main_head(model):
    """The model without its auxiliary heads (output 0 only): what evaluation and inference use,
    and whose layers are the monitored path from input to output."""
    if len(model.outputs) == 1:
        return model
    return keras.Model(model.inputs, model.outputs[0], name=f"{model.name}_main")
