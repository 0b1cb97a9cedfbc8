"""Stacked recurrent nets: SimpleRNN, LSTM and GRU, where gradients vanish through *time*.

Every recurrent layer returns its whole sequence, so the monitor can record ||dL/dh_t|| for
each step t (the gradient that reaches step t of the sequence). ``head=last`` reads the final
step (sequence-to-one: adding, seq_digits); ``head=sequence`` predicts at every step
(sequence-to-sequence: copy_memory). ``norm=layer`` normalizes each layer's output sequence:
Keras has no layer-normalized LSTM cell, so the normalization sits between layers.

Knobs from the literature: ``recurrent_init=identity`` with ``activation=relu`` is the IRNN of
Le et al. (2015); LSTM ``forget_bias=one`` is Keras' ``unit_forget_bias`` (Jozefowicz et al.
2015); ``forget_bias=chrono`` is the chrono initialization of Tallec & Ollivier (2018),
b_f ~ log U(1, T_max - 1) and b_i = -b_f, so forget gates start with memories of ~T_max steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo._lazy import keras
from zoo.config.budget import Data, Estimate
from zoo.models import MODELS, blocks
from zoo.models.roles import RoleBook
from zoo.models.serializable import serializable
from zoo.config.schema import Section, at_least, choice

RECURRENT_INITS = ("orthogonal", "identity", "glorot_uniform")
HEADS = ("last", "sequence")
NORMS = ("none", "layer")
FORGET_BIASES = ("zero", "one", "chrono")


@dataclass
class RecurrentConfig(Section):
    depth: int = 1                     # stacked recurrent layers
    width: int = 64                    # units per layer
    init: str = "glorot_uniform"       # input kernels (Keras' default)
    init_std: float = 0.05             # std of init=random_normal; others ignore it
    recurrent_init: str = "orthogonal"  # orthogonal (Keras' default) | identity (IRNN) | glorot_uniform
    norm: str = "none"                 # none | layer (between recurrent layers)
    head: str = "last"                 # last: sequence-to-one | sequence: sequence-to-sequence
    regularizer: str = "none"          # none | l1 | l2 on input and recurrent kernels
    reg_strength: float = 1e-4         # factor of the l1 / l2 penalty

    def _check(self, activation: str = "tanh"):
        at_least(1, depth=self.depth, width=self.width)
        choice(RECURRENT_INITS, recurrent_init=self.recurrent_init)
        choice(HEADS, head=self.head)
        choice(NORMS, norm=self.norm)
        blocks.check_knobs(self, activation)

    def __post_init__(self):
        self._check()


@dataclass
class SimpleRNNConfig(RecurrentConfig):
    activation: str = "tanh"  # tanh | relu (with recurrent_init=identity: the IRNN)

    def __post_init__(self):
        choice(("tanh", "relu"), activation=self.activation)
        self._check(self.activation)


@dataclass
class LSTMConfig(RecurrentConfig):
    forget_bias: str = "one"  # zero | one (Keras' unit_forget_bias) | chrono (Tallec & Ollivier 2018)
    chrono_tmax: int = 100    # T_max of chrono init: the longest dependency to start with

    def __post_init__(self):
        self._check()
        choice(FORGET_BIASES, forget_bias=self.forget_bias)
        at_least(3, chrono_tmax=self.chrono_tmax)


def chrono_bias(units: int, t_max: int, seed: int):
    """Keras LSTM bias layout [i, f, c, o]: b_f ~ log U(1, T_max - 1), b_i = -b_f, others 0."""

    def initializer(shape, dtype=None):
        b_f = np.log(np.random.default_rng(seed).uniform(1.0, t_max - 1.0, size=units))
        return keras.ops.convert_to_tensor(
            np.concatenate([-b_f, b_f, np.zeros(2 * units)]).astype("float32"), dtype=dtype)

    return initializer


@serializable
def LastStep(keras):
    class LastStep(keras.layers.Layer):
        """A sequence's last time step: (batch, time, features) -> (batch, features)."""

        def call(self, t):
            return t[:, -1]

        def compute_output_shape(self, shape):
            return (shape[0], shape[2])

    return LastStep


def _recurrent_layer(cell: str, units: int, name: str, *, activation, init, init_std,
                     recurrent_init, regularizer, reg_strength, forget_bias="one", chrono_tmax=100):
    common = dict(
        return_sequences=True, name=name,
        **blocks.kernel_options(init, init_std, regularizer, reg_strength)(name),
        recurrent_initializer=blocks.initializer(recurrent_init, init_std, f"{name}/recurrent_kernel"),
        recurrent_regularizer=blocks.regularizer(regularizer, reg_strength),
    )
    if cell == "simple_rnn":
        # the registry's activation, so relu / tanh mean what they mean everywhere else
        return keras.layers.SimpleRNN(units, activation=blocks.activation(activation, name).activation,
                                      **common)
    if cell == "gru":
        return keras.layers.GRU(units, **common)
    if forget_bias == "chrono":
        return keras.layers.LSTM(units, unit_forget_bias=False, **common,
                                 bias_initializer=chrono_bias(units, chrono_tmax,
                                                              blocks.layer_seed(f"{name}/bias")))
    return keras.layers.LSTM(units, unit_forget_bias=forget_bias == "one", **common)


def _stack(cell: str, input_shape, num_outputs, *, depth, width, init, init_std, recurrent_init,
           norm, head, regularizer, reg_strength, **cell_options):
    roles = RoleBook()
    inputs = h = keras.Input(shape=tuple(input_shape), name="inputs")
    source = "inputs"
    for i in range(1, depth + 1):
        roles.sequence(f"rnn{i}", source)  # the gradient reaching each step of its input
        h = _recurrent_layer(cell, width, f"rnn{i}", init=init, init_std=init_std,
                             recurrent_init=recurrent_init, regularizer=regularizer,
                             reg_strength=reg_strength, **cell_options)(h)
        if cell == "simple_rnn":  # its output h_t = act(...) is an activation like any other
            roles.activations.append((f"rnn{i}", cell_options["activation"]))
        h = blocks.normalized(norm, f"rnn{i}_norm", h)  # none | layer (the schema allows no batch)
        source = f"rnn{i}_norm" if norm != "none" else f"rnn{i}"
    if head == "last":
        h = LastStep(name="last_step")(h)
    kernel = blocks.kernel_options(init, init_std, regularizer, reg_strength)
    outputs = keras.layers.Dense(num_outputs, name="head", **kernel("head"))(h)
    return roles.attach(keras.Model(inputs, outputs, name=f"{cell}{depth}"))


def memory(gates: int):
    """The memory estimate (zoo.config.budget) of a stack of recurrent layers with ``gates`` weight
    blocks per layer (SimpleRNN 1, GRU 3, LSTM 4), for (T, F) sequences."""
    def estimate(m, data: Data) -> Estimate | None:
        if len(data.shape) != 2:
            return None  # a mismatch that zoo.training.spec.check_fit reports
        steps, features = data.shape
        width, depth = m.width, m.depth
        params = gates * ((features + width + 1) * width)
        params += (depth - 1) * gates * ((2 * width + 1) * width) + (width + 1) * data.outputs
        # per step and layer: the gates' pre-activations, the state and the output (BPTT)
        activations = steps * depth * width * (gates + 2)
        return Estimate(params, activations, depth + 1, 0)

    return estimate


@MODELS.register("simple_rnn", schema=SimpleRNNConfig, input_kind="sequence", memory=memory(1),
                 description="stacked SimpleRNN (tanh, or relu + identity init: IRNN)")
def build_simple_rnn(input_shape, num_outputs, *, activation, **knobs):
    return _stack("simple_rnn", input_shape, num_outputs, activation=activation, **knobs)


@MODELS.register("lstm", schema=LSTMConfig, input_kind="sequence", forget_gates=True, memory=memory(4),
                 description="stacked LSTM (Hochreiter & Schmidhuber 1997), forget-bias options")
def build_lstm(input_shape, num_outputs, *, forget_bias, chrono_tmax, **knobs):
    return _stack("lstm", input_shape, num_outputs, activation="tanh", forget_bias=forget_bias,
                  chrono_tmax=chrono_tmax, **knobs)


@MODELS.register("gru", schema=RecurrentConfig, input_kind="sequence", memory=memory(3),
                 description="stacked GRU (Cho et al. 2014)")
def build_gru(input_shape, num_outputs, **knobs):
    return _stack("gru", input_shape, num_outputs, activation="tanh", **knobs)
