"""Pretrained comparison models: pairs of small nets trained by the zoo's own recipes that differ
by one knob (sigmoid vs ReLU, plain vs residual, ...), shipped as hash-checked ``.keras`` files
with the manifest that says how each was made and what it reached.

    zoo.list_pretrained()                     # names (no TensorFlow import)
    model = zoo.load_pretrained("mlp20-relu-digits")
    zoo.compare("mlp20-sigmoid-digits", "mlp20-relu-digits").figure

Modules: ``manifest`` (the catalogue), ``integrity`` (sha256, download cache), ``load`` (verify,
load in safe mode, re-attach layer roles), ``recipes`` (regenerate and check), ``mlflow_registry``
(log and register); the command line, ``zoo-pretrained``, is zoo.cli.pretrained.
"""
from __future__ import annotations

from zoo.pretrained.integrity import IntegrityError
from zoo.pretrained.manifest import Entry, UnknownPretrainedError, load as read_manifest


def list_pretrained(pattern: str = "*") -> list[str]:
    return read_manifest().names(pattern)


def describe(name: str) -> Entry:
    """The manifest entry of ``name``: recipe, pair, knob, metrics, file and hash."""
    return read_manifest().get(name)


def load_pretrained(name: str):
    from zoo.pretrained.load import load_pretrained as _load

    return _load(name)


__all__ = ["Entry", "IntegrityError", "UnknownPretrainedError", "describe", "list_pretrained",
           "load_pretrained", "read_manifest"]
