"""Loading an entry: locate its file (shipped or fetched), verify its sha256, load it with Keras'
safe mode, and give it back the layer roles its builder recorded.

Keras saves weights and the layer graph, not the plain ``_zoo_roles`` attribute
(zoo.models.roles) that tells the train step and the monitor which layers are activations and
which outputs are auxiliary heads. Those roles are the builder's word, so they are recovered by
building the entry's architecture again from its resolved ``model`` section (once per process)
and attached to the loaded model; the rebuild also checks that the file holds that architecture
(same layers, same weight shapes), so a file that does not match its recipe is refused.
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from zoo.pretrained import integrity
from zoo.pretrained.manifest import Entry, load as load_manifest
from zoo.models import roles
from zoo.models.roles import roles_of
from zoo.training.spec import build_model


class ArchitectureMismatchError(ValueError):
    """The weights file does not hold the architecture its recipe builds."""


def locate(entry: Entry) -> Path:
    """The local file of an entry: shipped in the package, or fetched into the cache."""
    if entry.url:
        return integrity.fetch(entry.url, entry.file, entry.sha256, entry.size)
    return entry.shipped_path


def load_model_file(path, sha256: str, size: int | None = None):
    """A keras.Model from a ``.keras`` file whose bytes hash to ``sha256``. The verified bytes
    are what Keras reads (copied to a private temporary file), in safe mode: no Python code in
    a file is ever run; the zoo's own layers are registered serializable (zoo.models._layers)."""
    data = integrity.read_verified(path, sha256, size)
    import keras

    import zoo.models._layers  # noqa: F401  registers ZeroPadShortcut, LastStep

    with tempfile.TemporaryDirectory(prefix="gradzoo-load-") as tmp:
        private = Path(tmp) / Path(path).name
        private.write_bytes(data)
        return keras.saving.load_model(private, safe_mode=True, compile=False)


def signature(model) -> list[tuple[str, tuple[tuple[int, ...], ...]]]:
    """(layer name, weight shapes) in order: what must agree between a file and its recipe."""
    return [(layer.name, tuple(tuple(w.shape) for w in layer.weights)) for layer in model.layers]


@functools.lru_cache(maxsize=32)
def _reference(name: str, sha256: str):
    """(roles, architecture signature) of the entry's architecture, built fresh from its recipe."""
    entry = load_manifest().get(name)
    knobs = {k: v for k, v in entry.model.items() if k != "name"}
    model = build_model(entry.model["name"], tuple(entry_input_shape(entry)), entry_outputs(entry), **knobs)
    return roles_of(model), signature(model)


def entry_input_shape(entry: Entry) -> tuple[int, ...]:
    return tuple(entry.data["input_shape"])


def entry_outputs(entry: Entry) -> int:
    return int(entry.data["num_outputs"])


def attach_roles(model, entry: Entry):
    expected_roles, expected = _reference(entry.name, entry.sha256)
    got = signature(model)
    if got != expected:
        diff = next((f"{a} vs recipe {b}" for a, b in zip(got, expected) if a != b),
                    f"{len(got)} layers vs {len(expected)} in the recipe")
        raise ArchitectureMismatchError(f"pretrained {entry.name!r}: the file's architecture is not "
                                        f"its recipe's: first difference {diff}")
    object.__setattr__(model, roles.ATTRIBUTE, expected_roles)
    return model


def load_pretrained(name: str):
    """The entry's trained keras.Model, hash-verified, with its builder's layer roles."""
    entry = load_manifest().get(name)
    model = load_model_file(locate(entry), entry.sha256, entry.size)
    return attach_roles(model, entry)
