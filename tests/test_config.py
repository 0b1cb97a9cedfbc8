"""Registries and config validation: every bad value fails before training, with a clear line."""
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_cli
from zoo.registry import Registry, UnknownNameError
from zoo.schema import SpecError
from zoo.spec import compose_spec


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


@pytest.mark.parametrize("override, message", [
    ("model.depth=0", "model.depth must be >= 1, got 0"),
    ("model.width=0", "model.width must be >= 1, got 0"),
    ("optimizer.lr=0", "optimizer.lr must be > 0, got 0"),
    ("optimizer.lr=-1e-3", "optimizer.lr must be > 0, got -0.001"),
    ("optimizer.clipnorm=0", "optimizer.clipnorm must be > 0, got 0"),
    ("optimizer.global_clipnorm=-1", "optimizer.global_clipnorm must be > 0, got -1"),
    ("optimizer.clipvalue=0", "optimizer.clipvalue must be > 0, got 0"),
    ("model.activation=sigmod", "model.activation: unknown activation 'sigmod'; choose one of: "
                                "elu, gelu, leaky_relu, linear, prelu, relu, selu, sigmoid, tanh"),
    ("model.init=xavier", "model.init: unknown initializer 'xavier'; choose one of: glorot_normal, "
                          "glorot_uniform, he_normal, he_uniform, identity, lecun_normal, "
                          "orthogonal, random_normal"),
    ("model.norm=group", "model.norm: unknown norm 'group'; choose one of: batch, layer, none"),
    ("model.regularizer=l3", "model.regularizer: unknown regularizer 'l3'; choose one of: l1, l2, none"),
    ("model.name=transformer", "model.name: unknown model 'transformer'; choose one of: deep_linear, gru, inception, lstm, mlp, "
                             "resnet, simple_rnn"),
    ("data.name=imagenet", "data.name: unknown dataset 'imagenet'; choose one of: adding, cifar10, "
                           "copy_memory, digits, fashion_mnist, mnist, seq_digits, synthetic"),
    ("optimizer.name=lion", "optimizer.name: unknown optimizer 'lion'; choose one of: adam, rmsprop, sgd"),
    ("model.depth=deep", "model.depth: Value 'deep' of type 'str' could not be converted to Integer"),
    ("trainer.epochs=0", "trainer.epochs must be >= 1, got 0"),
    ("trainer.batch_size=0", "trainer.batch_size must be >= 1, got 0"),
    ("monitor.log_every=0", "monitor.log_every must be >= 1, got 0"),
    ("+model.dropout=0.5", "model.dropout: Key 'dropout' not in 'MLPConfig'"),
    ("seed=-1", "seed must be an integer >= 0, got -1"),
])
def test_bad_values_are_refused_with_one_line(override, message):
    with pytest.raises(SpecError) as err:
        compose_spec([override])
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


def test_every_group_file_mirrors_its_builder_schema():
    """A config group file sets exactly the builder's arguments, with the schema's defaults."""
    from zoo.spec import _registries

    for group, registry in _registries().items():
        files = sorted((REPO / "conf" / group).glob("*.yaml"))
        assert {f.stem for f in files} >= set(registry.names()), group
        for f in files:
            values = yaml.safe_load(f.read_text())
            schema = registry.get(values["name"]).schema
            assert set(values) == {x.name for x in fields(schema)}, f
            if f.stem in registry:  # the builder's own file: its defaults, exactly
                assert values == {**schema().__dict__, "name": f.stem}, f
            else:  # a preset of a registered builder (optimizer=momentum is sgd with momentum 0.9)
                assert values != {**schema().__dict__, "name": values["name"]}, f


def test_config_errors_and_help_do_not_import_tensorflow(tmp_path):
    code = ("import runpy, sys\n"
            "sys.argv = ['zoo-train'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('zoo.train', run_name='__main__')\n"
            "except SystemExit as e:\n    code = e.code\n"
            "print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_NOT_IMPORTED', code)\n")
    for args in (["--help"], ["model.depth=0"], ["model.activation=sigmod"]):
        out = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
        assert "TF_NOT_IMPORTED" in out.stdout, (args, out.stdout[-500:], out.stderr[-500:])


def test_cli_config_error_exits_nonzero_with_one_line(tmp_path):
    out = run_cli("model.depth=0", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == "zoo-train: config error: model.depth must be >= 1, got 0"
    assert not (tmp_path / "mlflow.db").exists()


def test_help_documents_every_contract_key(tmp_path):
    out = run_cli("--help", cwd=tmp_path)
    assert out.returncode == 0
    for key in ("model.depth", "model.width", "model.activation", "model.init", "model.norm",
                "model.residual", "model.regularizer", "optimizer.lr", "optimizer.clipnorm",
                "optimizer.global_clipnorm", "optimizer.clipvalue", "trainer.epochs",
                "trainer.batch_size", "seed", "monitor.histogram_every", "monitor.log_every",
                "tracking.uri", "tracking.experiment"):
        assert key in out.stdout, key
