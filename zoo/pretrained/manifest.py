"""The catalogue of pretrained entries: ``manifest.json`` beside the weights, read without
TensorFlow.

An entry is data plus a recipe (DESIGN.md): the ``zoo-train`` overrides that trained it and its
seed, the metrics that run reached, and the file it left, named by its sha256 and size. A
``pairs`` list says which entries are meant to be compared and the one knob that differs;
``zoo.compare(a, b)`` draws a pair. An entry ships its ``file`` in ``weights/`` or names a
``url`` to fetch it from (zoo.pretrained.integrity caches it); either way the hash is checked on
every load.
"""
from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zoo.errors import InputError

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "manifest.json"
WEIGHTS = HERE / "weights"
FORMAT = 1


class ManifestError(ValueError):
    """A manifest that cannot be read: missing, not JSON, or not the catalogue's shape. One line
    naming the file (and the line, for JSON), never the parser's traceback."""


class UnknownPretrainedError(KeyError, InputError):  # KeyError: what it always was; InputError: the API's one type
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class Pair:
    name: str    # e.g. "activation"
    a: str       # entry names, the reference first
    b: str
    knob: str    # the one config key that differs, as the user would type it
    shows: str   # what the comparison shows, one line


@dataclass(frozen=True)
class Entry:
    name: str
    description: str             # one line
    pairs: tuple[str, ...]       # the pairs it belongs to (Pair.name)
    knob: dict[str, Any]         # its own values of the knobs that differ within its pairs
    recipe: tuple[str, ...]      # zoo-train overrides that produced it (seed apart)
    seed: int
    model: dict[str, Any]        # the resolved model section: rebuilds the architecture and roles
    data: dict[str, Any]         # the resolved data section: what it was trained and is compared on
    metrics: dict[str, float]    # final/* and summary/* of the run that produced the file
    verdict: str                 # that run's gradient-health verdict
    file: str                    # file name (in weights/ when shipped, in the cache when fetched)
    sha256: str
    size: int                    # bytes
    gradzoo_version: str
    keras_version: str
    tensorflow_version: str
    params: int = 0              # trainable + non-trainable weights
    train_seconds: float = 0.0
    url: str | None = None       # set for an entry that is fetched rather than shipped

    @property
    def shipped_path(self) -> Path:
        return WEIGHTS / self.file

    def overrides(self) -> list[str]:
        """The recipe as ``zoo.train`` takes it, seed included."""
        return [*self.recipe, f"seed={self.seed}"]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["pairs"], out["recipe"] = list(self.pairs), list(self.recipe)
        return out


def _named(items, name: str, kind: str):
    """The item called ``name``; an unknown name lists the valid choices, as the registries do."""
    for item in items:
        if item.name == name:
            return item
    raise UnknownPretrainedError(f"unknown {kind} {name!r}; choose one of: "
                                 f"{', '.join(i.name for i in items)}")


@dataclass(frozen=True)
class Manifest:
    entries: tuple[Entry, ...]
    pairs: tuple[Pair, ...] = field(default=())

    def get(self, name: str) -> Entry:
        return _named(self.entries, name, "pretrained model")

    def pair(self, name: str) -> Pair:
        return _named(self.pairs, name, "pair")

    def pair_of(self, a: str, b: str) -> Pair | None:
        for pair in self.pairs:
            if {pair.a, pair.b} == {a, b}:
                return pair
        return None

    def names(self, pattern: str = "*") -> list[str]:
        import fnmatch

        return [e.name for e in self.entries if fnmatch.fnmatchcase(e.name, pattern)]

    def with_entry(self, entry: Entry) -> "Manifest":
        """A copy with ``entry`` replacing the one of the same name (or appended)."""
        kept = [entry if e.name == entry.name else e for e in self.entries]
        if entry.name not in self.names():
            kept.append(entry)
        return Manifest(tuple(kept), self.pairs)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "pairs": [asdict(p) for p in self.pairs],
                "entries": [e.to_json() for e in self.entries]}

    def save(self, path: Path = MANIFEST) -> None:
        text = json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n"
        tmp = Path(path).with_suffix(".json.tmp")
        tmp.write_text(text)
        tmp.replace(path)


def parse(raw: dict[str, Any], where: str = "manifest") -> Manifest:
    if raw.get("format") != FORMAT:
        raise ValueError(f"{where}: format {raw.get('format')!r}, expected {FORMAT}")
    entries = []
    for item in raw.get("entries", []):
        item = dict(item)
        item["pairs"], item["recipe"] = tuple(item.get("pairs", ())), tuple(item["recipe"])
        entries.append(Entry(**item))
    manifest = Manifest(tuple(entries), tuple(Pair(**p) for p in raw.get("pairs", [])))
    names = [e.name for e in manifest.entries]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: duplicate entry names")
    for pair in manifest.pairs:
        for member in (pair.a, pair.b):
            manifest.get(member)
    return manifest


@functools.lru_cache(maxsize=4)
def _read(path: str, mtime_ns: int) -> Manifest:
    try:
        raw = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}: not valid JSON: {err.msg} (line {err.lineno}, column {err.colno}); "
                            f"restore it (e.g. git checkout, or reinstall gradzoo)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: cannot be read: {err}") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: must hold a JSON object with 'format', 'pairs' and 'entries', "
                            f"got {type(raw).__name__}")
    try:
        return parse(raw, path)
    except ManifestError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as err:  # a missing or unknown field
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
        if isinstance(err, KeyError) and not isinstance(err, UnknownPretrainedError):
            message = f"an entry lacks the field {message!r}"
        message = message.removeprefix(f"{path}: ")
        raise ManifestError(f"{path}: {message.splitlines()[0] if message else type(err).__name__}") from None


def load(path: Path | None = None) -> Manifest:
    """The manifest (default: the shipped one), re-read when the file changes; ManifestError
    (one line naming the file) when it is missing or corrupt."""
    path = Path(path or MANIFEST)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as err:
        raise ManifestError(f"{path}: cannot be read: {err.strerror or err}") from None
    return _read(str(path), mtime)
