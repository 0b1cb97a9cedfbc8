"""Registries and config validation: every bad value fails before training, with a clear line."""
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from conftest import EVENT_SECONDS, REPO, run_cli
from zoo.config.registry import Registry, UnknownNameError
from zoo.config.schema import SpecError
from zoo.training.spec import compose_spec


def test_registry_names_valid_choices_on_unknown_name():
    reg = Registry("widget")
    reg.register("b", description="bee")(lambda: "B")
    reg.register("a")(lambda: "A")
    assert reg.names() == ["a", "b"] and reg.build("b") == "B"
    with pytest.raises(UnknownNameError, match=r"unknown widget 'c'; choose one of: a, b"):
        reg.get("c")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(lambda: None)


def test_public_listing():
    import zoo

    assert "mlp" in zoo.list_models()
    assert {"digits", "synthetic"} <= set(zoo.list_datasets())


def _choose(registry) -> str:
    return ", ".join(registry.names())


def _bad_values():
    """(override, message) pairs; every list of valid names comes from its registry."""
    from zoo.data import DATASETS
    from zoo.models import MODELS, blocks
    from zoo.config.optimizers import OPTIMIZERS

    return [
        ("model.depth=0", "model.depth must be >= 1, got 0"),
        ("model.width=0", "model.width must be >= 1, got 0"),
        ("optimizer.lr=0", "optimizer.lr must be > 0, got 0"),
        ("optimizer.lr=-1e-3", "optimizer.lr must be > 0, got -0.001"),
        ("optimizer.clipnorm=0", "optimizer.clipnorm must be > 0, got 0"),
        ("optimizer.global_clipnorm=-1", "optimizer.global_clipnorm must be > 0, got -1"),
        ("optimizer.clipvalue=0", "optimizer.clipvalue must be > 0, got 0"),
        ("model.activation=sigmod", "model.activation: unknown activation 'sigmod'; choose one of: "
                                    + _choose(blocks.ACTIVATIONS)),
        ("model.init=xavier", "model.init: unknown initializer 'xavier'; choose one of: "
                              + _choose(blocks.INITIALIZERS)),
        ("model.norm=group", "model.norm: unknown norm 'group'; choose one of: " + _choose(blocks.NORMS)),
        ("model.regularizer=l3", "model.regularizer: unknown regularizer 'l3'; choose one of: "
                                 + _choose(blocks.REGULARIZERS)),
        ("model.name=vit", "model.name: unknown model 'vit'; choose one of: "
                                   + _choose(MODELS)),
        ("data.name=imagenet", "data.name: unknown dataset 'imagenet'; choose one of: " + _choose(DATASETS)),
        ("optimizer.name=lion", "optimizer.name: unknown optimizer 'lion'; choose one of: "
                                + _choose(OPTIMIZERS)),
        ("model.depth=deep", "model.depth: Value 'deep' of type 'str' could not be converted to Integer"),
        ("trainer.epochs=0", "trainer.epochs must be >= 1, got 0"),
        ("trainer.batch_size=0", "trainer.batch_size must be >= 1, got 0"),
        ("monitor.log_every=0", "monitor.log_every must be >= 1, got 0"),
        ("+model.dropout=0.5", "model.dropout: Key 'dropout' not in 'MLPConfig'"),
        ("seed=-1", "seed must be an integer in [0, 2**32), got -1"),
        ("pretrain.epochs=1 model=resnet data.layout=image",
         "pretrain.epochs: greedy layer-wise pretraining applies to "
         + ", ".join(e.name for e in MODELS if e.tags.get("pretrainable")) + ", not model 'resnet'"),
    ]


@pytest.mark.parametrize("override, message", _bad_values())
def test_bad_values_are_refused_with_one_line(override, message):
    with pytest.raises(SpecError) as err:
        compose_spec(override.split())
    assert str(err.value) == message


def test_two_clips_are_refused():
    with pytest.raises(SpecError, match="set at most one of clipnorm, global_clipnorm, clipvalue"):
        compose_spec(["optimizer.clipnorm=1", "optimizer.clipvalue=0.5"])


def test_good_config_validates_and_keeps_types():
    spec = compose_spec(["model.depth=5", "optimizer=sgd", "optimizer.momentum=0.9",
                         "optimizer.clipnorm=1.0", "data=synthetic"])
    assert spec.model.depth == 5 and spec.optimizer.momentum == 0.9
    assert spec.optimizer.clipping() == ("clipnorm", 1.0)
    assert "clipnorm" not in spec.optimizer.kwargs()  # clipping is the step's job, not Keras'
    assert spec.tracking.uri == "sqlite:///mlflow.db"


def _compose_group(group: str, option: str) -> dict:
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module(config_module="zoo.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"{group}={option}"])
    return OmegaConf.to_container(cfg[group], resolve=True)


def test_every_group_file_mirrors_its_builder_schema():
    """A builder's own file sets exactly its arguments with the schema's defaults; a preset file
    extends one of them (``defaults: [<base>, _self_]``) and sets only the keys that differ."""
    from zoo.config.schema import defaults, is_open
    from zoo.training.spec import OPEN_NODE, _registries

    for group, registry in _registries().items():
        files = sorted((REPO / "conf" / group).glob("*.yaml"))
        assert {f.stem for f in files} >= set(registry.names()), group
        for f in files:
            raw = yaml.safe_load(f.read_text())
            if f.stem in registry:  # the builder's own file: its defaults, exactly
                schema = registry.get(f.stem).schema
                if is_open(schema):  # its knobs are open: the group file extends the open node
                    assert raw.pop("defaults") == [f"/{OPEN_NODE}@_here_", "_self_"], f
                assert raw == {**defaults(schema), "name": f.stem}, f
                continue
            base = [d for d in raw.pop("defaults", []) if d != "_self_"]
            assert len(base) == 1 and base[0] in registry, f"{f}: defaults: [<builder>, _self_]"
            own = yaml.safe_load((REPO / "conf" / group / f"{base[0]}.yaml").read_text())
            assert raw and set(raw) <= set(own) - {"name"}, f"{f} sets keys its base lacks"
            same = [k for k in raw if raw[k] == own[k]]
            assert not same, f"{f} restates its base's {same}"
            assert "#" in f.read_text().split("defaults:")[1], f"{f}: say where each value is from"
            assert _compose_group(group, f.stem) == {**own, **raw}, f


def test_primary_config_sections_mirror_their_schemas():
    """conf/config.yaml lists the fixed sections' keys (so they can be overridden without +),
    with the schemas' defaults."""
    from zoo.config.schema import defaults
    from zoo.training.spec import FIXED, RunSpec

    primary = yaml.safe_load((REPO / "conf" / "config.yaml").read_text())
    assert primary["seed"] == RunSpec.seed
    chosen = {k: v for d in primary["defaults"] if isinstance(d, dict) for k, v in d.items()}
    for section, schema in FIXED.items():
        if section in chosen:  # a config group (tracking: local | server): its default option
            own = yaml.safe_load((REPO / "conf" / section / f"{chosen[section]}.yaml").read_text())
            assert own == defaults(schema), section
        else:
            assert primary[section] == defaults(schema), section


def test_the_server_tracking_option_changes_only_the_address():
    from zoo.training.spec import compose_spec

    local, server = compose_spec([]).tracking, compose_spec(["tracking=server", "tracking.uri=null"]).tracking
    assert (server.experiment, server.resume, server.log_model) == (local.experiment, local.resume, local.log_model)
    raw = yaml.safe_load((REPO / "conf" / "tracking" / "server.yaml").read_text())
    assert raw["uri"] == "${oc.env:MLFLOW_TRACKING_URI,http://127.0.0.1:5000}"


def schema_keys() -> list[str]:
    """Every key a user can set, from the schemas: fixed sections and every registered builder."""
    from zoo.config.schema import defaults
    from zoo.training.spec import FIXED, _registries

    keys = ["seed"] + [f"{s}.{k}" for s, schema in FIXED.items() for k in defaults(schema)]
    for group, registry in _registries().items():
        keys += [f"{group}.{k}" for e in registry for k in defaults(e.schema)]
    return sorted(set(keys))


def test_every_schema_field_has_a_description():
    """The help's descriptions are the fields' trailing comments: none may be missing."""
    from zoo.config.schema import defaults, field_docs
    from zoo.training.spec import FIXED, _registries

    schemas = list(FIXED.values()) + [e.schema for r in _registries().values() for e in r]
    missing = [f"{s.__name__}.{k}" for s in schemas for k in defaults(s) if not field_docs(s).get(k)]
    assert not missing, f"add a trailing comment to: {', '.join(missing)}"


def test_config_errors_and_help_do_not_import_tensorflow(tmp_path):
    code = ("import runpy, sys\n"
            "sys.argv = ['zoo-train'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('zoo.cli.train', run_name='__main__')\n"
            "except SystemExit as e:\n    code = e.code\n"
            "print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_NOT_IMPORTED', code)\n")
    for args in (["--help"], ["model.depth=0"], ["model.activation=sigmod"]):
        out = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path,
                             capture_output=True, text=True, timeout=EVENT_SECONDS)
        assert "TF_NOT_IMPORTED" in out.stdout, (args, out.stdout[-500:], out.stderr[-500:])


def test_cli_config_error_exits_nonzero_with_one_line(tmp_path):
    out = run_cli("model.depth=0", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == "zoo-train: config error: model.depth must be >= 1, got 0"
    assert not (tmp_path / "mlflow.db").exists()


def test_help_lists_every_schema_key_with_its_default(tmp_path):
    from zoo.config.schema import defaults, show_value
    from zoo.training.spec import FIXED

    out = run_cli("--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    for key in schema_keys():
        assert any(line.strip().startswith(f"{key}=") for line in lines), key
    for section, schema in FIXED.items():  # the fixed sections' defaults, as typed on the CLI
        for key, value in defaults(schema).items():
            assert f"{section}.{key}={show_value(value)} " in out.stdout, (section, key)
    for preset in ("model=irnn", "model=lstm_chrono", "optimizer=sgd_clipnorm"):
        assert preset in out.stdout


def _docs_defaults() -> dict[str, str]:
    """``{key: default}`` from the ``| key | default | meaning |`` table of the docs' Configuration
    page (docs/guides/configuration.md), for the rows
    whose keys are plain config keys (``a`` / ``b`` rows pair up with ``x`` / ``y`` defaults)."""
    import re

    text = (REPO / "docs" / "guides" / "configuration.md").read_text()
    table = text[text.index("| key | default | meaning |"):].split("\n\n", 1)[0]
    found = {}
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0] or not cells[1]:
            continue
        keys = re.findall(r"`([^`]+)`", cells[0])
        values = re.findall(r"`([^`]*)`", cells[1])
        if not keys or not values:
            continue
        section = keys[0].split(".")[0]
        keys = [k if "." in k or k in ("seed", "model", "data", "optimizer") else f"{section}.{k}"
                for k in keys]
        if len(values) == 1:
            values = values * len(keys)
        if len(values) == len(keys):
            found.update(zip(keys, values))
    return found


def _same(documented: str, value) -> bool:
    from zoo.config.schema import show_value

    if isinstance(value, float) and not isinstance(value, bool):
        try:
            return float(documented) == value
        except ValueError:
            return False
    return documented == show_value(value)


def test_docs_table_defaults_agree_with_the_schemas():
    from zoo.config.schema import defaults
    from zoo.training.spec import FIXED, RunSpec, _registries

    primary = yaml.safe_load((REPO / "conf" / "config.yaml").read_text())
    chosen = {k: v for d in primary["defaults"] if isinstance(d, dict) for k, v in d.items()}
    truth = {"seed": RunSpec.seed}
    for section, schema in FIXED.items():
        truth.update({f"{section}.{k}": v for k, v in defaults(schema).items()})
    for group, registry in _registries().items():
        truth[group] = chosen[group]
        schema = registry.get(chosen[group]).schema  # the table's defaults are the default builder's
        truth.update({f"{group}.{k}": v for k, v in defaults(schema).items()})
    documented = _docs_defaults()
    checked = {k: v for k, v in documented.items() if k in truth}
    assert len(checked) >= 15, sorted(documented)
    wrong = {k: (v, truth[k]) for k, v in checked.items() if not _same(v, truth[k])}
    assert not wrong, f"docs/guides/configuration.md default != schema default: {wrong}"
