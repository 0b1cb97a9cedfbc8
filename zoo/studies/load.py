"""Study files: a Hydra sweep config in ``ablations/`` plus the claim it tests.

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

The file's body is the full scale. Nothing here imports TensorFlow: ``--list`` and the checks of
a study's own section run in well under a second. Checks against the sweep's jobs (does each
variant exist?) compose configs and live in zoo.studies.validate.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from zoo.schema import SpecError, choice
from zoo.studies.claims import validate_claim, validate_metric
from zoo.studies.plots import PLOTS

SCALES = ("quick", "full")


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
        if not self.variant_keys:
            raise SpecError("study.variant_keys", "must name at least one swept key")
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


def study_file(name: str) -> Path:
    return studies_dir() / f"{name}.yaml"


def from_section(section) -> StudyConfig:
    """The ``study`` section of a composed config (or of a study file), checked."""
    values = OmegaConf.to_container(section, resolve=False) if OmegaConf.is_config(section) else dict(section)
    try:
        return StudyConfig(**values)
    except TypeError as err:
        raise SpecError("study", str(err)) from None


@functools.lru_cache(maxsize=None)
def _study_file(name: str):
    """A study file, parsed once per process (``--list`` reads each one for three answers).
    A YAML error names the file and the line."""
    path = study_file(name)
    if not path.is_file():
        raise SpecError("study", f"unknown study {name!r}; choose one of: {', '.join(study_names())}")
    try:
        return OmegaConf.load(path)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(where, f"YAML syntax error: {problem}") from None


def load_study(name: str) -> StudyConfig:
    """The study's checked ``study`` section; every error names the study file."""
    raw = _study_file(name)
    if "study" not in raw:
        raise SpecError(str(study_file(name)), "has no 'study' section")
    try:
        return from_section(raw.study)
    except SpecError as err:
        raise SpecError(str(study_file(name)), str(err)) from None


def sweep_params(name: str) -> dict[str, str]:
    """The study's ``hydra.sweeper.params`` (key -> comma-separated values)."""
    params = OmegaConf.select(_study_file(name), "hydra.sweeper.params") or {}
    return {str(k): str(v) for k, v in params.items()}
