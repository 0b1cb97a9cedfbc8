"""Study files: a Hydra sweep config in ``ablations/`` (or a file of your own) plus the claim it tests.

A study file is a primary Hydra config that extends ``config`` (``defaults: [config, ...]``),
overrides groups and values for its setting, lists its variants in Hydra's own
``hydra.sweeper.params``, and describes itself under ``study``::

    study:
      name: init_depth
      description: one line for ``zoo-ablate --list``
      variant_keys: [model.init, model.depth]   # swept keys that name a variant (seeds pool)
      metrics: [summary/grad_first_init, final/val_accuracy]   # columns of the summary table
      plot: layers                  # a kind of zoo.studies.plots.PLOTS: layers | time
      claim: {text: ..., checks: [...]}          # see zoo.studies.claims
      quick: [trainer.epochs=1, model.depth=5,20]  # overrides for --scale quick (sweeps narrow)

The file's body is the full scale. A study is named by a shipped study's name (``init_depth``)
or by the path of a study file of your own (``mystudy.yaml``, ``studies/mine.yaml``: it ends in
``.yaml`` or names a folder), relative to where you launch; Hydra reads it by its folder and
stem (``--config-dir``, ``--config-name``), and the study's name is still ``study.name``.
Nothing here imports TensorFlow: ``--list`` and the checks of a study's own section run in well
under a second. Checks against the sweep's jobs (does each variant exist?) compose configs and
live in zoo.studies.validate.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from zoo.config.schema import SpecError, choice
from zoo.studies.claims import validate_claim, validate_metric
from zoo.studies.plots import PLOTS

SCALES = ("quick", "full")
PLAIN_NAME = re.compile(r"[\w.-]+")
ZOO_CONF = "pkg://zoo.conf"  # a study composed from its own folder finds ``config`` and the groups here


@dataclass
class StudyConfig:
    name: str
    description: str
    variant_keys: list[str]
    metrics: list[str]
    claim: dict
    quick: list[str] = field(default_factory=list)
    plot: str = "layers"
    scale: str = "full"  # set by zoo-ablate --scale; recorded on the parent run

    def __post_init__(self):
        for key in ("name", "description"):
            value = getattr(self, key)
            if not isinstance(value, str) or not value.strip():
                raise SpecError(f"study.{key}", f"must be a non-empty string, got {_shown(value)}")
        for key in ("variant_keys", "metrics", "quick"):
            value = getattr(self, key)
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
                raise SpecError(f"study.{key}", f"must be a list of non-empty strings ([a, b]), got {_shown(value)}")
        if not isinstance(self.claim, dict):
            raise SpecError("study.claim", f"must be a mapping ({{text: ..., checks: [...]}}), got {_shown(self.claim)}")
        if not self.variant_keys:
            raise SpecError("study.variant_keys", "must name at least one swept key")
        if not self.metrics:
            raise SpecError("study.metrics", "must name at least one metric: the summary table's columns")
        choice(tuple(PLOTS), **{"study.plot": self.plot})
        try:
            for i, metric in enumerate(self.metrics):
                validate_metric(metric, f"study.metrics[{i}]")
        except ValueError as err:
            raise SpecError("", str(err)) from None
        try:
            validate_claim(self.claim)
        except ValueError as err:
            raise SpecError("study.claim", str(err)) from None

    def overrides(self, scale: str) -> list[str]:
        choice(SCALES, **{"--scale": scale})
        return list(self.quick) if scale == "quick" else []


def studies_dir() -> Path:
    """``ablations/`` in a checkout; the ``zoo.ablations`` package in an installed wheel."""
    return Path(str(resources.files("zoo.ablations")))


def study_names() -> list[str]:
    return sorted(p.stem for p in studies_dir().glob("*.yaml"))


def is_study_path(study: str) -> bool:
    """A study file of your own (``mystudy.yaml``, ``studies/mine``) rather than a shipped name
    (``.yml`` too, to be refused by name: Hydra reads ``NAME.yaml`` only)."""
    return study.endswith((".yaml", ".yml")) or os.sep in study or "/" in study


def study_file(study: str) -> Path:
    """The file of a shipped study's name, or of a path (absolute, from the working directory,
    as Hydra takes ``--config-dir``); a path without a suffix gets ``.yaml``, as ``--config-name``."""
    if not is_study_path(study):
        return studies_dir() / f"{study}.yaml"
    path = Path(os.path.abspath(os.path.expanduser(study)))
    return path if path.suffix else path.with_suffix(".yaml")


def config_location(study: str) -> tuple[str, str]:
    """``(config dir, config name)`` of a study, for Hydra's ``--config-dir`` and ``--config-name``."""
    path = study_file(study)
    return str(path.parent), path.stem


def _shown(value) -> str:
    text = repr(value)
    return f"{text[:80]}{'…' if len(text) > 80 else ''} ({type(value).__name__})"


def from_section(section) -> StudyConfig:
    """The ``study`` section of a composed config (or of a study file), checked: every field
    present, of its type, and not empty."""
    values = OmegaConf.to_container(section, resolve=False) if OmegaConf.is_config(section) else section
    if not isinstance(values, dict):
        raise SpecError("study", f"must be a mapping of name, description, variant_keys, metrics and claim; "
                                 f"got {_shown(values)}")
    fields = {f.name: f for f in dataclasses.fields(StudyConfig)}
    required = [name for name, f in fields.items() if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in values]
    if missing:
        raise SpecError(f"study.{missing[0]}", f"is missing; a study names {', '.join(required)}")
    unknown = [name for name in values if name not in fields]
    if unknown:
        raise SpecError(f"study.{unknown[0]}", f"is not a study field; the fields: {', '.join(fields)}")
    return StudyConfig(**values)


def _raw(study: str):
    return _study_file(study_file(study), is_study_path(study))


@functools.lru_cache(maxsize=None)
def _study_file(path: Path, yours: bool):
    """A study file, parsed once per process (``--list`` reads each one for three answers).
    A missing file and a YAML error name the file (and the line)."""
    if not yours and not path.is_file():
        yours_here = f"; your study file {path.name}? give its path: zoo-ablate {path.name}" \
            if Path(path.name).is_file() else "; or your study file's path (PATH.yaml)"
        raise SpecError("study", f"unknown study {path.stem!r}; choose one of: {', '.join(study_names())}"
                                 + yours_here)
    if path.suffix != ".yaml":
        raise SpecError(str(path), f"is not a study file: Hydra reads a study from NAME.yaml "
                                   f"(rename it {path.stem}.yaml)")
    if not PLAIN_NAME.fullmatch(path.stem):  # Hydra's override grammar would read `,` `=` `(` … in it
        raise SpecError(str(path), "needs a plain file name: letters, digits, '_', '-', '.' (its "
                                   "name is Hydra's --config-name and names the sweep folder)")
    if path.is_dir():
        raise SpecError(str(path), "is a folder, not a study file")
    if not path.is_file():
        raise SpecError(str(path), "no such file")
    if yours:
        check_yaml_file(path)
    try:
        return OmegaConf.load(path)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(where, f"YAML syntax error: {problem}") from None


STUDY_FILE_BYTES = 2**20  # a study file is a few KB (the shipped ones 1-4 KB)
YAML_NODES = 100_000      # nodes once every alias is expanded (a shipped study: a few hundred)


def check_yaml_file(path: Path) -> None:
    """A study file of your own is checked before anything parses it whole: at most
    STUDY_FILE_BYTES, UTF-8, and at most YAML_NODES nodes once its aliases are expanded, with
    no alias inside the node it names. PyYAML's composer keeps an alias as one shared node (linear
    in the file), but OmegaConf and Hydra copy each alias in full: a 'billion laughs' file of a
    few hundred bytes (10 aliases to 10 aliases, 12 levels) was still being parsed after 75 s.
    Raises SpecError naming the file; a syntax error is left to the parser that says where."""
    size = path.stat().st_size
    if size > STUDY_FILE_BYTES:
        raise SpecError(str(path), f"holds {size:,} bytes, more than a study file ({STUDY_FILE_BYTES:,}): "
                                   f"is it the file you meant?")
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as err:
        raise SpecError(str(path), f"cannot be read as UTF-8 text ({err})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return  # OmegaConf's load says where
    except RecursionError:
        raise SpecError(str(path), "is nested deeper than a YAML parser can follow") from None
    nodes = _expanded_nodes(root, path)
    if nodes > YAML_NODES:
        raise SpecError(str(path), f"expands to more than {YAML_NODES:,} YAML nodes once its aliases (*name) are "
                                   f"copied (an alias bomb?); a study file needs a few hundred")


def _expanded_nodes(root, path: Path) -> int:
    """Nodes of the YAML graph ``root`` with every alias copied in full, counted without copying
    (each shared node once; stops past YAML_NODES); raises SpecError for an alias to itself."""
    if root is None:
        return 0
    sizes: dict[int, int] = {}
    ancestors: set[int] = set()
    stack = [(root, False)]

    def children(node):
        if isinstance(node, yaml.MappingNode):
            return [part for pair in node.value for part in pair]
        return list(node.value) if isinstance(node, yaml.SequenceNode) else []

    while stack:
        node, done = stack.pop()
        if done:
            ancestors.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(c)] for c in children(node))
            if sizes[id(node)] > YAML_NODES:
                return sizes[id(node)]
            continue
        if id(node) in sizes:
            continue
        if id(node) in ancestors:
            raise SpecError(f"{path}:{node.start_mark.line + 1}", "an alias inside the node it names (a YAML "
                                                                  "structure that never ends)")
        ancestors.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children(node) if id(c) not in sizes)
    return sizes[id(root)]


def load_study(study: str) -> StudyConfig:
    """The study's checked ``study`` section; every error names the study file."""
    raw = _raw(study)
    where = str(study_file(study))
    if not OmegaConf.is_dict(raw) or "study" not in raw:
        raise SpecError(where, "has no 'study' section")
    beside = study_file(study).parent / "config.yaml"
    if is_study_path(study) and beside.is_file():  # the study's own folder comes first in Hydra's search path
        raise SpecError(where, f"{beside} would hide the zoo's config that a study extends "
                               f"(Hydra reads the study's folder first); put the study in a folder without one")
    if ZOO_CONF not in (OmegaConf.select(raw, "hydra.searchpath") or []):
        raise SpecError(where, f"hydra.searchpath must include {ZOO_CONF} (the zoo's config groups), "
                               f"as every study in ablations/ has: hydra: {{searchpath: [{ZOO_CONF}]}}")
    try:
        return from_section(raw.study)
    except SpecError as err:
        raise SpecError(where, str(err)) from None


def sweep_params(study: str) -> dict[str, str]:
    """The study's ``hydra.sweeper.params`` (key -> comma-separated values)."""
    params = OmegaConf.select(_raw(study), "hydra.sweeper.params") or {}
    return {str(k): str(v) for k, v in params.items()}
