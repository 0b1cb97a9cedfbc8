"""Greedy layer-wise pretraining of an MLP's hidden blocks, the pre-2010 remedy for vanishing
gradients.

Before ReLU, careful initialization (Glorot & Bengio 2010) and normalization, deep sigmoid nets
trained end to end from small random weights barely moved: the backpropagated signal shrinks by
roughly ``std * sqrt(width) * max sigmoid'`` (= 0.05 * 8 * 0.25 for width 64) at every layer, so
the lower layers receive almost no gradient. Hinton et al. (2006, RBMs) and Bengio et al. (2007,
"Greedy Layer-Wise Training of Deep Networks", autoencoders) trained each layer on its own first,
as a shallow and so well-conditioned problem; the weights it leaves carry information about the
input at every depth, and the whole net is then fine-tuned by ordinary backprop from there.

Protocol (Bengio et al. 2007, the autoencoder variant), for each pretrainable block in the order
its builder recorded them (``zoo.models.roles``: ``roles_of(model).blocks``; the ``head`` is left
to fine-tuning):
1. the block's input ``h`` is the output of the blocks below, already pretrained and now frozen:
   computed once per stage, as numpy, by a model from the inputs to the tensor feeding the
   block's Dense, in inference mode;
2. an autoencoder is trained on it. Encoder: the block's own layers (Dense, norm if any,
   activation; the same layer objects, so the net's weights change in place; a residual add is
   not part of a block, so the encoder reconstructs h from block(h)). Decoder: *tied* weights,
   ``x_hat = g(code @ W.T + c)`` with ``W`` the block's own Dense kernel and ``c`` a bias of the
   decoder's own (Bengio et al. 2007; Vincent et al. 2008). An untied decoder can undo any scale
   of the code, so it lets the code shrink to nothing: measured on a depth-10 sigmoid MLP,
   blocks 3 and up reconstructed inputs that were already constant, at MSE 6e-4 down to 0, and
   learned nothing. With W shared, a code that shrinks shrinks the reconstruction too.
3. the decoder ``g`` and the loss fit the range of ``h`` (:data:`RECONSTRUCTION`), known from the
   layer that produces it: the output of a sigmoid (values in (0, 1)) is reconstructed by a
   sigmoid decoder under binary cross-entropy (Bengio et al. 2007; Vincent et al. 2008), the
   output of a tanh (in (-1, 1)) by a tanh decoder under MSE (not the shifted cross-entropy
   on (h + 1) / 2: MSE is the loss the other real-valued blocks use, and the tanh already
   bounds the reconstruction to the input's range); the standardized network inputs, a residual
   sum and every other activation are real-valued: linear decoder, MSE;
4. Adam(lr), ``epochs`` epochs of shuffled mini-batches, ``keras.utils.set_random_seed(seed)``
   before each stage; the decoder bias starts at zero, so for a seed the result is the same.
5. the reconstruction loss on ``x`` (the loss of step 3, mean over examples and units; in
   inference mode) is reported before and after training, as
   ``pretrain/recon_loss_init/<block>`` and ``pretrain/recon_loss/<block>``. Binary
   cross-entropy does not go to 0: its floor is the entropy of the targets.

The decoder biases are thrown away with the autoencoders; the model keeps its layers, weights
(now pretrained) and trainable flags. BatchNormalization inside a block trains with it, and the
next stage sees it in inference mode (its moving statistics), as does the fine-tuned net at
evaluation.
"""
from __future__ import annotations

import numpy as np

from zoo._lazy import keras
from zoo.models.roles import roles_of

# activation that produced the block's input -> (decoder activation, loss); anything else,
# including the network's inputs, is real-valued: (linear, mse)
RECONSTRUCTION = {
    "sigmoid": ("sigmoid", "binary_crossentropy"),  # inputs in (0, 1)
    "tanh": ("tanh", "mse"),                        # inputs in (-1, 1)
}
REAL_VALUED = ("linear", "mse")


def hidden_blocks(model) -> list[tuple[str, list, str | None]]:
    """``[(prefix, encoder layers, activation of the block's input or None), ...]``, bottom to
    top, from the roles the model's builder recorded."""
    roles = roles_of(model)
    if not roles.blocks:
        raise ValueError(f"greedy layer-wise pretraining needs a model whose builder records "
                         f"pretrainable blocks (zoo.models.roles), such as mlp or deep_linear; "
                         f"model {model.name!r} has none")
    kinds = dict(roles.activations)
    return [(prefix, [model.get_layer(name) for name in names],
             _input_activation(model.get_layer(names[0]), kinds))
            for prefix, names in roles.blocks]


def _input_activation(dense, kinds: dict[str, str]) -> str | None:
    """The registry name of the activation whose output feeds ``dense`` directly, or None (the
    network's input, a flatten, a residual sum, a Dense without activation)."""
    producer = dense.input._keras_history.operation
    return kinds.get(producer.name)


def reconstruction(input_activation: str | None) -> tuple[str, str]:
    """(decoder activation, loss) for a block whose input comes from ``input_activation``."""
    return RECONSTRUCTION.get(input_activation, REAL_VALUED)


class _TiedAutoencoder(keras.Model):
    """The block's own layers, then ``g(code @ W.T + c)`` with W the block's Dense kernel.
    Subclassed rather than functional, so that calling the shared layers adds no nodes to the
    net's graph. For a sigmoid decoder it returns the logits (the loss applies the sigmoid,
    the numerically stable form)."""

    def __init__(self, encoder: list, input_width: int, decoder_activation: str):
        super().__init__(name="pretrain_autoencoder")
        self.encoder = encoder
        self.decoder_bias = self.add_weight(shape=(input_width,), initializer="zeros",
                                            name="pretrain_decoder_bias")
        self.decoder_activation = keras.activations.get(
            "linear" if decoder_activation == "sigmoid" else decoder_activation)

    def call(self, h):
        code = h
        for layer in self.encoder:
            code = layer(code)
        kernel = self.encoder[0].kernel  # (input width, code width)
        return self.decoder_activation(keras.ops.matmul(code, keras.ops.transpose(kernel))
                                       + self.decoder_bias)


def _loss_fn(loss: str):
    if loss == "binary_crossentropy":
        return keras.losses.BinaryCrossentropy(from_logits=True)
    return keras.losses.MeanSquaredError()


def _loss_value(loss: str, output: np.ndarray, target: np.ndarray) -> float:
    """``loss`` of the autoencoder's ``output`` (logits for binary cross-entropy), mean over
    examples and units, in float64."""
    output, target = output.astype(np.float64), target.astype(np.float64)
    if loss == "binary_crossentropy":
        elementwise = np.maximum(output, 0) - output * target + np.log1p(np.exp(-np.abs(output)))
    else:
        elementwise = (output - target) ** 2
    return float(np.mean(elementwise))


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
    """Pretrain each block of ``model`` in place as a tied-weight autoencoder on the output of
    the blocks below (see the module docstring). Returns each block's reconstruction loss on
    ``x`` before and after its training: ``{"pretrain/recon_loss_init/<block>": loss,
    "pretrain/recon_loss/<block>": loss, ...}``, block by block, bottom to top."""
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1 and lr > 0; got epochs={epochs}, "
                         f"batch_size={batch_size}, lr={lr}")
    losses = {}
    for prefix, encoder, input_activation in hidden_blocks(model):
        decoder_activation, loss = reconstruction(input_activation)
        h = _block_input(model, encoder[0], x, batch_size)
        keras.utils.set_random_seed(seed)
        autoencoder = _TiedAutoencoder(encoder, h.shape[-1], decoder_activation)
        losses[f"pretrain/recon_loss_init/{prefix}"] = _loss_value(
            loss, _in_batches(autoencoder, h, batch_size), h)
        autoencoder.compile(optimizer=keras.optimizers.Adam(lr), loss=_loss_fn(loss))
        autoencoder.fit(h, h, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)
        losses[f"pretrain/recon_loss/{prefix}"] = _loss_value(
            loss, _in_batches(autoencoder, h, batch_size), h)
    return losses
