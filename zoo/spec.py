"""The validated run spec: a composed Hydra config checked section by section, before training.

``model``, ``data`` and ``optimizer`` are registry-backed: their ``name`` picks a builder whose
schema types the rest of the section. ``trainer``, ``monitor`` and ``tracking`` have fixed
schemas below. Nothing here imports TensorFlow, so a bad config fails in well under a second.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from zoo.registry import Entry, Registry, UnknownNameError
from zoo.schema import Section, SpecError, at_least, positive


def _matched_init(activation: str) -> str:
    from zoo.models import blocks

    if activation not in blocks.ACTIVATIONS:
        raise SpecError("model.activation", f"unknown activation {activation!r}; choose one of: "
                                            f"{', '.join(blocks.ACTIVATIONS.names())}")
    return blocks.ACTIVATIONS.get(activation).tags["init"]


# ${zoo.matched_init:${model.activation}}: the activation's own initializer (see models/blocks.py)
OmegaConf.register_new_resolver("zoo.matched_init", _matched_init, replace=True)

CONFIG_MODULE = "zoo.conf"  # conf/ in the repository, shipped in the wheel as package data
CONFIG_NAME = "config"


@dataclass
class TrainerConfig:
    epochs: int = 10
    batch_size: int = 64
    deterministic: bool = True  # TF op determinism: same seed -> identical loss curve
    threads: int = 0            # TF intra/inter-op threads per job; 0 = TensorFlow's choice (all cores)

    def __post_init__(self):
        at_least(1, epochs=self.epochs, batch_size=self.batch_size)
        at_least(0, threads=self.threads)


@dataclass
class MonitorConfig:
    log_every: int = 20        # steps between MLflow points of per-layer series (raw file: every step)
    histogram_every: int = 10  # steps between gradient histograms and activation statistics

    def __post_init__(self):
        at_least(1, log_every=self.log_every, histogram_every=self.histogram_every)


@dataclass
class PretrainConfig:
    """Greedy layer-wise pretraining (zoo.pretrain) of an MLP's hidden blocks before training."""
    epochs: int = 0      # autoencoder epochs per hidden block; 0 = no pretraining
    lr: float = 1e-3     # Adam learning rate of each block's autoencoder

    def __post_init__(self):
        at_least(0, epochs=self.epochs)
        positive(lr=self.lr)


@dataclass
class TrackingConfig:
    uri: Optional[str] = "sqlite:///mlflow.db"  # null: keep records in memory, no MLflow
    experiment: str = "gradzoo"
    resume: bool = False  # skip the job if a FINISHED run with the same config and seed exists


@dataclass
class RunSpec:
    seed: int
    model: Section
    data: Section
    optimizer: Section
    trainer: TrainerConfig
    monitor: MonitorConfig
    pretrain: PretrainConfig
    tracking: TrackingConfig
    resolved: dict[str, Any]  # the whole resolved config, for logging


def _registries() -> dict[str, Registry]:
    from zoo.data import DATASETS
    from zoo.models import MODELS
    from zoo.optimizers import OPTIMIZERS

    return {"model": MODELS, "data": DATASETS, "optimizer": OPTIMIZERS}


def _typed(section: str, schema: type, values: Any):
    """Merge ``values`` into ``schema``: unknown keys, wrong types and ranges become SpecErrors."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), values)
        return OmegaConf.to_object(merged)
    except SpecError as err:
        raise err.within(section) from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "") or ""
        message = str(getattr(err, "msg", err)).splitlines()[0]
        raise SpecError(f"{section}.{key}" if key else section, message) from None


def validate_section(section: str, entry: Entry, values: Any) -> Section:
    return _typed(section, entry.schema, values)


def _entry(section: str, registry: Registry, values: Any) -> Entry:
    name = values.get("name") if hasattr(values, "get") else None
    if not name:
        raise SpecError(f"{section}.name", f"is missing; choose one of: {', '.join(registry.names())}")
    try:
        return registry.get(name)
    except UnknownNameError as err:
        raise SpecError(f"{section}.name", str(err)) from None


def check_fit(model: Entry, data: Entry, datasets: Registry, data_section: Any = None) -> None:
    """A model given data of the wrong kind fails here, naming the datasets that fit it.

    The data's kind is the validated section's ``input_kind`` when it has one (a dataset whose
    options change its layout), else its registry tag. A dataset that can produce several kinds
    tags them as ``input_kinds``; when one of them fits only through a ``layout`` option, the
    listing names that option: ``digits (data.layout=image)``.
    """
    kind = model.tags.get("input_kind")
    have = getattr(data_section, "input_kind", None) or data.tags.get("input_kind")
    if not kind or have == kind:
        return

    def hint(entry: Entry) -> str:
        needs_option = entry.name == data.name or entry.tags.get("input_kind") != kind
        if needs_option and entry.schema is not None:
            try:
                if getattr(entry.schema(layout=kind), "input_kind", None) == kind:
                    return f"{entry.name} (data.layout={kind})"
            except (TypeError, ValueError):  # no layout option, or not that value
                pass
        return entry.name

    fits = [hint(e) for e in datasets
            if kind in (e.tags.get("input_kinds") or (e.tags.get("input_kind"),))]
    raise SpecError("data.name", f"model {model.name!r} takes {kind} inputs but dataset "
                                 f"{data.name!r} is {have}; "
                                 f"datasets that fit: {', '.join(fits) or 'none yet'}")


def check_head(model: Section, data: Entry) -> None:
    """A sequence model's head must match its dataset's targets: one per sequence or per step."""
    head, target = getattr(model, "head", None), data.tags.get("target")
    if head and target and head != target:
        per = "sequence" if target == "last" else "time step"
        raise SpecError("model.head", f"dataset {data.name!r} has one target per {per}; "
                                      f"use model.head={target}, got {head}")


PRETRAINABLE = ("mlp", "deep_linear")  # models made of blockNN_dense blocks


def _pretrain(values: Any, model: Entry) -> PretrainConfig:
    config = _typed("pretrain", PretrainConfig, values)
    if config.epochs and model.name not in PRETRAINABLE:
        raise SpecError("pretrain.epochs", f"greedy layer-wise pretraining applies to "
                                           f"{', '.join(PRETRAINABLE)}, not model {model.name!r}")
    return config


def validate(cfg: DictConfig | dict) -> RunSpec:
    """Check every section of a composed config; raise :class:`SpecError` on the first problem."""
    raw = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    try:
        resolved = OmegaConf.to_container(raw, resolve=True)
    except OmegaConfBaseException as err:
        raise SpecError("", f"config does not resolve: {err}") from None
    registries = _registries()
    entries, sections = {}, {}
    for section, registry in registries.items():
        entries[section] = _entry(section, registry, resolved.get(section) or {})
        sections[section] = validate_section(section, entries[section], resolved[section])
    check_fit(entries["model"], entries["data"], registries["data"], sections["data"])
    check_head(sections["model"], entries["data"])
    seed = resolved.get("seed", 0)
    if not isinstance(seed, int) or seed < 0:
        raise SpecError("seed", f"must be an integer >= 0, got {seed!r}")
    return RunSpec(
        seed=seed,
        trainer=_typed("trainer", TrainerConfig, resolved.get("trainer", {})),
        monitor=_typed("monitor", MonitorConfig, resolved.get("monitor", {})),
        pretrain=_pretrain(resolved.get("pretrain", {}), entries["model"]),
        tracking=_typed("tracking", TrackingConfig, resolved.get("tracking", {})),
        resolved=resolved,
        **sections,
    )


def compose_spec(overrides: list[str]) -> RunSpec:
    """Compose ``conf/`` with command-line style overrides, from Python (tests, notebooks)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name=CONFIG_NAME, overrides=list(overrides))
    return validate(cfg)
