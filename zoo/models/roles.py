"""What each layer of a built model is *for*, said by the builder that made it.

The train step, the monitor and pretraining need to know which layers are activations (and of
which kind), which outputs are auxiliary heads (and their loss weight), and which blocks can be
pretrained one at a time. Recovering that from layer names or classes downstream breaks as soon
as a builder names a layer differently; so the builder, which knows, records it while it builds
(:class:`RoleBook`) and attaches the result (:class:`Roles`) to the model. ``roles_of(model)``
reads it back. Nothing here imports TensorFlow.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from zoo.models import blocks

ATTRIBUTE = "_zoo_roles"


@dataclass(frozen=True)
class Roles:
    # (layer name, activation registry name), input side first: the layers whose outputs the
    # monitor summarizes (saturation, dead units) by their activation's tags
    activations: tuple[tuple[str, str], ...] = ()
    # output layer names of the auxiliary heads, in the order of model.outputs[1:]
    aux_heads: tuple[str, ...] = ()
    aux_weight: float = 0.0  # each auxiliary loss's weight in the training objective
    # pretrainable blocks, bottom to top: (prefix, layer names in call order: dense, [norm], [act])
    blocks: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # sequences whose gradient is measured per position ("gradient through time"), input side
    # first: (label, the layer whose output is the sequence entering ``label``; "inputs" for
    # the model's input). A recurrent layer's input sequence, a Transformer block's input.
    sequences: tuple[tuple[str, str], ...] = ()


@dataclass
class RoleBook:
    """Collects roles while a builder builds; ``attach`` seals them onto the model."""

    activations: list[tuple[str, str]] = field(default_factory=list)
    blocks: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    sequences: list[tuple[str, str]] = field(default_factory=list)

    def activation(self, kind: str, name: str):
        """The activation layer ``kind`` (a registry name) called ``name``, recorded as such."""
        self.activations.append((name, kind))
        return blocks.activation(kind, name)

    def block(self, prefix: str, *layer_names: str) -> None:
        self.blocks.append((prefix, tuple(layer_names)))

    def sequence(self, label: str, source: str) -> None:
        """Measure the gradient reaching each position of layer ``source``'s output (the
        sequence entering ``label``)."""
        self.sequences.append((label, source))

    def attach(self, model, aux_heads=(), aux_weight: float = 0.0):
        roles = Roles(tuple(self.activations), tuple(aux_heads),
                      float(aux_weight) if aux_heads else 0.0, tuple(self.blocks), tuple(self.sequences))
        object.__setattr__(model, ATTRIBUTE, roles)  # plain attribute: Keras need not track it
        return model


def roles_of(model) -> Roles:
    """The roles its builder recorded; an empty :class:`Roles` for a model built elsewhere
    (plain Keras), which then trains without activation statistics or auxiliary heads."""
    return getattr(model, ATTRIBUTE, None) or Roles()
