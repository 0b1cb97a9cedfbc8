"""The validated run spec: a composed Hydra config checked section by section, before training.

``model``, ``data`` and ``optimizer`` are registry-backed: their ``name`` picks a builder whose
schema types the rest of the section. ``trainer``, ``monitor``, ``pretrain`` and ``tracking``
have fixed schemas below. Nothing here imports TensorFlow, so a bad config fails in well under a
second; that includes a tracking store that cannot be written or reached, and a model too big
for this machine's memory (zoo.config.budget).

The schemas are the one source of every key's default and meaning: ``zoo-train --help`` lists
them through the ``${zoo.help_keys:}`` resolver (see :func:`help_keys`).
"""
from __future__ import annotations

import dataclasses
import unicodedata
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

import zoo.config.budget as budget
from zoo.config.registry import Entry, Registry, UnknownNameError
import zoo.tracking.store as store
from zoo.config.schema import (Section, SpecError, at_least, check_finite, check_raw_types, defaults,
                        field_docs, is_open, positive, show_value)
from zoo.config.optimizers import OPTIMIZERS
from zoo.data import DATASETS
from zoo.models import MODELS, blocks
from zoo.tracking.runs import config_hash


def _matched_init(activation: str) -> str:
    if activation not in blocks.ACTIVATIONS:
        raise SpecError("model.activation", f"unknown activation {activation!r}; choose one of: "
                                            f"{', '.join(blocks.ACTIVATIONS.names())}")
    return blocks.ACTIVATIONS.get(activation).tags["init"]


# ${zoo.matched_init:${model.activation}}: the activation's own initializer (see models/blocks.py)
OmegaConf.register_new_resolver("zoo.matched_init", _matched_init, replace=True)

CONFIG_MODULE = "zoo.conf"  # conf/ in the repository, shipped in the wheel as package data
CONFIG_NAME = "config"

# Hydra closes every config node it composes (struct mode), so ``model.width=16`` is refused unless
# ``model`` has a ``width`` key. The group file of a builder with open knobs (zoo.config.schema.OpenSection,
# conf/model/custom.yaml) extends this empty node, whose struct flag is off: its knobs are set
# without ``+`` like any other key (and swept: ``-m model.width=16,64``), and the structured merge
# in zoo.training.spec still refuses unknown keys everywhere else.
OPEN_NODE = "zoo_open_knobs"


def _store_open_node() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=OPEN_NODE, node=OmegaConf.create({}, flags={"struct": False}))


_store_open_node()  # before any compose: zoo-train, zoo-ablate and compose_spec import this module


MAX_THREADS = 1024  # trainer.threads=100000 sat > 5 min in TensorFlow's thread-pool constructor


@dataclass
class TrainerConfig:
    epochs: int = 10            # passes over the training set
    batch_size: int = 64        # examples per step
    deterministic: bool = True  # TF op determinism: same seed -> identical loss curve
    threads: int = 0            # TF intra/inter-op threads per job (at most 1024); 0 = TensorFlow's choice (all cores)
    sharpness_every: int = 0    # steps between readings of the loss Hessian's λ_max (zoo.instruments.sharpness); 0 = off
    sharpness_examples: int = 1024  # its fixed measurement batch: that many training examples (all if fewer); 0 = each step's own batch
    sharpness_iterations: int = 20  # block power iterations per reading at most (3 Hessian-vector products each)

    def __post_init__(self):
        at_least(1, epochs=self.epochs, batch_size=self.batch_size, sharpness_iterations=self.sharpness_iterations)
        at_least(0, threads=self.threads, sharpness_every=self.sharpness_every,
                 sharpness_examples=self.sharpness_examples)
        if self.threads > MAX_THREADS:  # TensorFlow builds its pools for minutes, deaf to SIGTERM
            raise SpecError("threads", f"must be at most {MAX_THREADS}, got {self.threads}")


@dataclass
class MonitorConfig:
    log_every: int = 20        # steps between MLflow points of per-layer series (raw file: every step)
    histogram_every: int = 10  # steps between gradient histograms and activation statistics

    def __post_init__(self):
        at_least(1, log_every=self.log_every, histogram_every=self.histogram_every)


@dataclass
class PretrainConfig:
    """Greedy layer-wise pretraining (zoo.training.pretrain) of an MLP's hidden blocks before training."""
    epochs: int = 0      # autoencoder epochs per hidden block; 0 = no pretraining
    lr: float = 1e-3     # Adam learning rate of each block's autoencoder

    def __post_init__(self):
        at_least(0, epochs=self.epochs)
        positive(lr=self.lr)


TRACKING_URIS = "sqlite:///PATH, http(s)://HOST:PORT, or null"


@dataclass
class TrackingConfig:
    uri: Optional[str] = "sqlite:///mlflow.db"  # MLflow store (relative paths: from the working directory); null: no MLflow
    experiment: str = "gradzoo"  # MLflow experiment name (at most 500 characters)
    resume: bool = False  # skip the job if a FINISHED run with the same config and seed exists
    log_model: bool = True  # log the trained model (MLflow Keras flavour, signature, input example) under the run's logged models

    def __post_init__(self):
        name = self.experiment
        if not name.strip():
            raise SpecError("experiment", "must not be empty")
        if len(name) > 500:
            raise SpecError("experiment", f"must be at most 500 characters, got {len(name)}")
        if any(unicodedata.category(ch) == "Cc" for ch in name):
            raise SpecError("experiment", f"must not hold control characters, got {name!r}")
        if self.uri is not None:
            scheme = urllib.parse.urlsplit(self.uri).scheme.lower()
            if not self.uri.strip():
                raise SpecError("uri", "must not be empty; null means no MLflow")
            if scheme in ("", "file"):
                raise SpecError("uri", f"{self.uri!r}: {store.FILE_STORE_RETIRED}")
            if scheme not in ("sqlite", "http", "https"):
                raise SpecError("uri", f"unsupported MLflow store {self.uri!r}; use {TRACKING_URIS}")


@dataclass
class RunSpec:
    model: Section
    data: Section
    optimizer: Section
    trainer: TrainerConfig
    monitor: MonitorConfig
    pretrain: PretrainConfig
    tracking: TrackingConfig
    resolved: dict[str, Any]  # the whole resolved config, for logging
    seed: int = 0  # run seed: initialization and shuffling (same config + seed -> same losses)
    fingerprints: dict[str, str] = field(default_factory=dict)  # section -> digest of the user's file it names

    @property
    def config_hash(self) -> str:
        """What makes two runs the same run: the resolved config, the code, the user's files."""
        return config_hash(self.resolved, self.fingerprints)


SEED_LIMIT = 2**32  # numpy's and TensorFlow's seeds are 32-bit
FIXED = {"trainer": TrainerConfig, "monitor": MonitorConfig, "pretrain": PretrainConfig,
         "tracking": TrackingConfig}
# Top-level keys: the run's sections; ``study`` is added by ablations/*.yaml, ``hydra`` by Hydra.
TOP_LEVEL = ("seed", "model", "data", "optimizer", *FIXED, "study", "hydra")


def _registries() -> dict[str, Registry]:
    return {"model": MODELS, "data": DATASETS, "optimizer": OPTIMIZERS}


def _typed(section: str, schema: type, values: Any):
    """Merge ``values`` into ``schema``: unknown keys, wrong types and ranges become SpecErrors."""
    try:
        check_raw_types(schema, values)
        merged = OmegaConf.merge(OmegaConf.structured(schema), values)
        config = OmegaConf.to_object(merged)
        check_finite(config)
        return config
    except SpecError as err:
        raise err.within(section) from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "") or ""
        if isinstance(err, MissingMandatoryValue) and key in field_docs(schema):  # ??? in its file
            form = _field(schema, key).metadata.get("form")  # the value's shape, when it declares one
            raise SpecError(f"{section}.{key}", f"is missing: give {section}.{key}=" + (
                form or f"... ({field_docs(schema)[key]})")) from None
        message = str(getattr(err, "msg", err)).splitlines()[0]
        raise SpecError(f"{section}.{key}" if key else section, message) from None


def _field(schema: type, name: str):
    return next((f for f in dataclasses.fields(schema) if f.name == name), None)


def validate_section(section: str, entry: Entry, values: Any) -> Section:
    if is_open(entry.schema):  # the keys beyond its fields are the builder's knobs
        values = entry.schema.collect(values)
    return _typed(section, entry.schema, values)


def _entry(section: str, registry: Registry, values: Any) -> Entry:
    name = values.get("name") if hasattr(values, "get") else None
    if not name:
        raise SpecError(f"{section}.name", f"is missing; choose one of: {', '.join(registry.names())}")
    try:
        return registry.get(name)
    except UnknownNameError as err:
        raise SpecError(f"{section}.name", str(err)) from None


def check_fit(model: Entry, data: Entry, datasets: Registry, data_section: Any = None,
              model_section: Any = None) -> None:
    """A model given data of the wrong kind fails here, naming the datasets that fit it.

    Each side's kind is its validated section's ``input_kind`` when it has one (a dataset whose
    options change its layout; a Transformer reading token ids), else its registry tag. A
    dataset that can produce several kinds tags them as ``input_kinds``; when one of them fits only through a ``layout`` option, the
    listing names that option: ``digits (data.layout=image)``.
    """
    kind = getattr(model_section, "input_kind", None) or model.tags.get("input_kind")
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

    if getattr(model_section, "data_hint", None):  # the kind alone would name the wrong datasets
        fits = [model_section.data_hint]
    else:
        fits = [hint(e) for e in datasets
                if kind in (e.tags.get("input_kinds") or (e.tags.get("input_kind"),))]
    raise SpecError("data.name", f"model {model.name!r} takes {kind} inputs but dataset "
                                 f"{data.name!r} is {have}; "
                                 f"datasets that fit: {', '.join(fits) or 'none yet'}")


def check_head(model: Section, data: Entry, data_section: Any = None) -> None:
    """A sequence model's head must match its dataset's targets: one per sequence or per step.
    The targets are the validated section's ``target`` when it has one (a dataset whose file
    decides, zoo/data/arrays.py), else its registry tag: "last" (one per sequence) or
    "sequence". A schema whose one-per-sequence head has another name than "last" says which in
    ``PER_SEQUENCE_HEAD`` (the Transformer's "mean")."""
    head = getattr(model, "head", None)
    target = getattr(data_section, "target", None) or data.tags.get("target")
    per_sequence = getattr(model, "PER_SEQUENCE_HEAD", "last")
    if head and target and ("last" if head == per_sequence else head) != target:
        per = "sequence" if target == "last" else "time step"
        raise SpecError("model.head", f"dataset {data.name!r} has one target per {per}; "
                                      f"use model.head={per_sequence if target == 'last' else target}, got {head}")


def _pretrain(values: Any, model: Entry, models: Registry) -> PretrainConfig:
    """Pretraining needs a model made of blockNN_dense blocks: registry tag ``pretrainable``."""
    config = _typed("pretrain", PretrainConfig, values)
    if config.epochs and not model.tags.get("pretrainable"):
        able = [e.name for e in models if e.tags.get("pretrainable")]
        raise SpecError("pretrain.epochs", f"greedy layer-wise pretraining applies to "
                                           f"{', '.join(able) or 'no model yet'}, not model "
                                           f"{model.name!r}")
    return config


def train_steps(data_name: str, data: Any, trainer: TrainerConfig) -> tuple[int, int, int] | None:
    """(training examples, steps per epoch, steps of the whole run) of a config, known before
    anything loads: the training split's size as zoo.config.budget knows it (``budget.DATASETS``), in
    batches of ``trainer.batch_size`` with the last one smaller (tf.data keeps the remainder,
    zoo.training.run.train_loop). None for a dataset whose split size is not known in advance."""
    size_of = budget.DATASETS.get(data_name)
    examples = size_of(data).train if size_of else None
    if not examples:
        return None
    per_epoch = -(-examples // trainer.batch_size)
    return examples, per_epoch, per_epoch * trainer.epochs


def check_warmup(optimizer: Any, data_name: str, data: Any, trainer: TrainerConfig) -> None:
    """A learning-rate warm-up (zoo.config.optimizers.learning_rate) longer than the whole run never
    reaches ``optimizer.lr``: refused, giving both step counts. Raises SpecError."""
    warmup = getattr(optimizer, "warmup_steps", 0)
    steps = train_steps(data_name, data, trainer) if warmup > 1 else None
    if steps and warmup > steps[2]:
        examples, per_epoch, total = steps
        raise SpecError("optimizer.warmup_steps", f"is longer than the whole run: {warmup} warm-up steps > "
                        f"{total} training steps (trainer.epochs {trainer.epochs} x {per_epoch} steps of "
                        f"trainer.batch_size {trainer.batch_size} over {examples:,} training examples); "
                        f"lower it or raise trainer.epochs")


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        raise SpecError("seed", f"must be an integer in [0, 2**32), got {value!r}")
    return value


def check_tracking(config: TrackingConfig, timeout: float = 3.0) -> None:
    """The MLflow store can be used from here, before TensorFlow loads (zoo.tracking.store): a
    sqlite store's folder takes a new file, its disk has room, an existing store is a whole
    MLflow store; a server answers ``GET /health`` within ``timeout`` seconds; and the
    experiment is not a deleted one. Raises SpecError. (TrackingConfig has refused every other
    scheme, ``file:`` and plain paths included.)"""
    uri = config.uri
    if uri is None:
        return
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    try:
        if scheme == "sqlite":
            path = uri[len("sqlite:///"):] if uri.lower().startswith("sqlite:///") else ""
            if not path.partition("?")[0]:
                raise SpecError("tracking.uri", f"needs a database file, sqlite:///PATH; got {uri!r}")
            store.check_for_run(uri, config.experiment)
        elif scheme in ("http", "https"):
            store.check_server(uri, timeout, config.experiment, otherwise=" or set tracking.uri=null")
    except store.DeletedExperiment as err:
        raise SpecError("tracking.experiment", str(err)) from None
    except store.StoreError as err:
        raise SpecError("tracking.uri", str(err)) from None


def omegaconf_line(err: Exception) -> str:
    """OmegaConf's error on one line: its first line, without the ``full_key:`` / ``object_type=``
    lines it appends (the key is the SpecError's)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    kept = [line for line in lines if not line.startswith(("full_key:", "object_type=", "reference_type="))]
    return "; ".join(kept) or type(err).__name__


def validate(cfg: DictConfig | dict, stores_checked: set | None = None) -> RunSpec:
    """Check every section of a composed config; raise :class:`SpecError` on the first problem.
    ``stores_checked``: (tracking.uri, tracking.experiment) pairs already checked by this caller
    (zoo.cli.precheck, over a sweep's jobs), whose store is not inspected again; the pair is added."""
    raw = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
    try:
        resolved = OmegaConf.to_container(raw, resolve=True)
    except OmegaConfBaseException as err:  # its message runs over 3 lines: the key, then the cause
        raise SpecError(getattr(err, "full_key", None) or "", f"does not resolve: {omegaconf_line(err)}") from None
    unknown = [key for key in resolved if key not in TOP_LEVEL]
    if unknown:
        raise SpecError(unknown[0], f"unknown top-level key; the sections are: {', '.join(TOP_LEVEL)}")
    seed = _seed(resolved.get("seed", RunSpec.seed))
    registries = _registries()
    entries, sections = {}, {}
    for section, registry in registries.items():
        entries[section] = _entry(section, registry, resolved.get(section) or {})
        sections[section] = validate_section(section, entries[section], resolved[section])
    check_fit(entries["model"], entries["data"], registries["data"], sections["data"], sections["model"])
    check_head(sections["model"], entries["data"], sections["data"])
    fixed = {name: _typed(name, schema, resolved.get(name) or {}) for name, schema in FIXED.items()}
    fixed["pretrain"] = _pretrain(resolved.get("pretrain") or {}, entries["model"], registries["model"])
    check_warmup(sections["optimizer"], entries["data"].name, sections["data"], fixed["trainer"])
    tracked = (fixed["tracking"].uri, fixed["tracking"].experiment)
    if stores_checked is None or tracked not in stores_checked:
        check_tracking(fixed["tracking"])
        if stores_checked is not None:
            stores_checked.add(tracked)
    budget.check(entries["model"].tags.get("memory"), sections["model"], entries["data"].name, sections["data"],
                 fixed["trainer"].batch_size)
    fingerprints = {name: fp for name, section in sections.items() if (fp := section.fingerprint())}
    return RunSpec(seed=seed, resolved=resolved, fingerprints=fingerprints, **fixed, **sections)


def compose_spec(overrides: list[str]) -> RunSpec:
    """Compose ``conf/`` with command-line style overrides, from Python (tests, notebooks)."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name=CONFIG_NAME, overrides=list(overrides))
    return validate(cfg)


# --- a registered model or dataset from its config keys (zoo.build_model, zoo.load_dataset) -----
def build_model(name: str, input_shape, num_outputs: int, **knobs):
    """Build a registered model; ``knobs`` are its config keys (validated, defaults filled)."""
    entry = MODELS.get(name)
    config = validate_section("model", entry, {"name": name, **knobs})
    return entry.builder(tuple(input_shape), num_outputs, **config.kwargs())


def load_dataset(name: str, **options):
    """Load a registered dataset as numpy arrays (see :class:`zoo.data.Dataset`); ``options``
    are its config keys (validated, defaults filled)."""
    entry = DATASETS.get(name)
    config = validate_section("data", entry, {"name": name, **options})
    return entry.builder(**config.kwargs())


# --- zoo-train --help: the keys, generated from the schemas -------------------------------------
def _key_lines(prefix: str, schema: type, indent: str = "") -> list[str]:
    docs = field_docs(schema)
    keys = [(f"{prefix}{key}={show_value(value)}", docs.get(key, "")) for key, value in defaults(schema).items()]
    if is_open(schema):
        keys.append((f"{prefix}KNOB=VALUE", docs.get("knobs", "")))
    return [f"{indent}{key:<{34 - len(indent)}} {doc}".rstrip() for key, doc in keys]


def _presets(group: str, registry: Registry) -> list[str]:
    """Group files that extend a builder's file: ``irnn  simple_rnn + activation=relu ...``."""
    import importlib.resources

    import yaml

    lines = []
    folder = importlib.resources.files(CONFIG_MODULE) / group
    for path in sorted(folder.iterdir(), key=lambda p: p.name):
        stem = path.name.removesuffix(".yaml")
        if not path.name.endswith(".yaml") or stem in registry:
            continue
        text = path.read_text()
        values = yaml.safe_load(text) or {}
        base = next((d for d in values.pop("defaults", []) if d != "_self_"), values.get("name"))
        changes = " ".join(f"{k}={show_value(v)}" for k, v in values.items() if k != "name")
        lines.append(f"  {group}={stem:<16} = {base} with {changes}")
    return lines


def help_keys() -> str:
    """The ``== Keys ==`` part of ``zoo-train --help``: every section's keys with their defaults
    and descriptions, read from the schemas (registries for model, data, optimizer)."""
    import importlib.resources

    import yaml

    primary = yaml.safe_load((importlib.resources.files(CONFIG_MODULE) / f"{CONFIG_NAME}.yaml").read_text())
    chosen = {k: v for d in primary["defaults"] if isinstance(d, dict) for k, v in d.items()}
    out = [f"{'seed=' + str(RunSpec.seed):<34} {field_docs(RunSpec)['seed']}"]
    for name, schema in FIXED.items():
        out += _key_lines(f"{name}.", schema)
    for group, registry in _registries().items():
        out += ["", f"== {group}=NAME: one of these {registry.kind}s, then {group}.KEY=VALUE =="]
        for entry in registry:
            default = " [default]" if chosen.get(group) == entry.name else ""
            out.append(f"{group}={entry.name}{default}: {entry.description}")
            out += _key_lines(f"{group}.", entry.schema, indent="  ")
        presets = _presets(group, registry)
        if presets:
            out += ["presets (config files that change a few keys of a builder's file):", *presets]
        if group == "model":
            out.append("choices of the knobs every model family shares:")
            out += [f"  {r.kind}: {', '.join(r.names())}" for r in
                    (blocks.ACTIVATIONS, blocks.INITIALIZERS, blocks.NORMS, blocks.REGULARIZERS)]
    return "\n".join(out)


OmegaConf.register_new_resolver("zoo.help_keys", help_keys, replace=True)
