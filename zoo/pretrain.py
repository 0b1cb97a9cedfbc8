"""Greedy layer-wise pretraining of an MLP's hidden blocks, the pre-2010 remedy for vanishing
gradients.

Before ReLU, careful initialization (Glorot & Bengio 2010) and normalization, deep sigmoid nets
trained end to end from small random weights barely moved: the backpropagated signal shrinks by
roughly ``std * sqrt(width) * max sigmoid'`` (= 0.05 * 4 * 0.25 for width 16) at every layer, so
the lower layers receive almost no gradient. Hinton et al. (2006, RBMs) and Bengio et al. (2007,
"Greedy Layer-Wise Training of Deep Networks", autoencoders) trained each layer on its own first,
as a shallow and so well-conditioned problem; the weights it leaves carry information about the
input at every depth, and the whole net is then fine-tuned by ordinary backprop from there.

Protocol (Bengio et al. 2007, the autoencoder variant), for each hidden block ``blockNN`` in
order (the ``head`` is left to fine-tuning):

1. the block's input is the output of the blocks below, already pretrained and now frozen:
   computed once per stage, as numpy, by a model from the inputs to the tensor feeding
   ``blockNN_dense``;
2. an autoencoder is trained on it: encoder = the block's own layers (``_dense``, ``_norm`` if
   any, ``_act``; the same layer objects, so the net's weights change in place; a residual
   ``_add`` is left out, so the encoder reconstructs h from block(h)), decoder = a fresh linear
   Dense back to the input width; MSE, Adam(lr), ``epochs`` epochs of shuffled mini-batches,
   ``keras.utils.set_random_seed(seed)`` before each stage;
3. its reconstruction MSE on ``x``, after training, is reported as
   ``pretrain/recon_loss/blockNN``.

The decoders are thrown away; the model keeps its layers and trainable flags. BatchNormalization
inside a block trains with it, and the next stage sees it in inference mode (its moving
statistics), as does the fine-tuned net at evaluation.
"""
from __future__ import annotations

import re

import numpy as np

from zoo._lazy import keras

BLOCK_DENSE = re.compile(r"(block\d+)_dense")
ENCODER_PARTS = ("dense", "norm", "act")  # a block's layers in call order, without its _add


def hidden_blocks(model) -> list[tuple[str, list]]:
    """``[(prefix, encoder layers), ...]`` of the model's hidden blocks, bottom to top."""
    by_name = {layer.name: layer for layer in model.layers}
    prefixes = [m.group(1) for m in map(BLOCK_DENSE.fullmatch, by_name) if m]
    if not prefixes:
        raise ValueError("greedy layer-wise pretraining needs an MLP-style model with "
                         f"blockNN_dense layers; got model {model.name!r}")
    prefixes.sort(key=lambda prefix: int(prefix[len("block"):]))
    return [(p, [by_name[f"{p}_{part}"] for part in ENCODER_PARTS if f"{p}_{part}" in by_name])
            for p in prefixes]


class _Autoencoder(keras.Model):
    """The block's own layers, then a linear decoder. Subclassed rather than functional, so that
    calling the shared layers adds no nodes to the net's graph."""

    def __init__(self, encoder: list, input_width: int):
        super().__init__(name="pretrain_autoencoder")
        self.encoder = encoder
        self.decoder = keras.layers.Dense(input_width, name="pretrain_decoder")

    def call(self, h):
        for layer in self.encoder:
            h = layer(h)
        return self.decoder(h)


def _in_batches(fn, x, batch_size: int) -> np.ndarray:
    """``fn`` (a model, in inference mode) over ``x`` in eager batches: for inputs of this size,
    cheaper than tracing ``predict`` once per stage."""
    return np.concatenate([keras.ops.convert_to_numpy(fn(x[i:i + batch_size], training=False))
                           for i in range(0, len(x), batch_size)])


def _block_input(model, dense, x, batch_size: int) -> np.ndarray:
    """What ``dense`` sees when ``x`` goes through the net (the frozen blocks below, in inference
    mode); its first inbound node is the one in the net's own graph."""
    x = np.asarray(x, dtype="float32")
    tensor = dense.input
    if any(tensor is t for t in model.inputs):
        return x
    feeder = keras.Model(model.input, tensor, name="pretrain_feeder")
    return _in_batches(feeder, x, batch_size)


def greedy_layerwise_pretrain(model, x, *, epochs: int, lr: float = 1e-3, batch_size: int = 64,
                              seed: int = 0) -> dict[str, float]:
    """Pretrain each hidden block of ``model`` in place as a one-layer autoencoder on the output
    of the blocks below (see the module docstring); returns each block's final reconstruction
    MSE on ``x`` as ``{"pretrain/recon_loss/blockNN": mse}``. ``epochs=0`` trains nothing and
    reports the untrained autoencoders' losses, a baseline."""
    if epochs < 0 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 0, batch_size >= 1 and lr > 0; got epochs={epochs}, "
                         f"batch_size={batch_size}, lr={lr}")
    losses = {}
    for prefix, encoder in hidden_blocks(model):
        h = _block_input(model, encoder[0], x, batch_size)
        keras.utils.set_random_seed(seed)
        autoencoder = _Autoencoder(encoder, h.shape[-1])
        autoencoder.compile(optimizer=keras.optimizers.Adam(lr), loss="mse")
        if epochs:
            autoencoder.fit(h, h, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)
        reconstruction = _in_batches(autoencoder, h, batch_size)
        losses[f"pretrain/recon_loss/{prefix}"] = float(np.mean((reconstruction - h) ** 2))
    return losses
