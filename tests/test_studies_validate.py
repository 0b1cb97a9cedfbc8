"""Studies checked before training: variants against the expanded sweep, metric names, broken
YAML named by file and line; the config hash follows the code (no training, no TensorFlow)."""
import shutil
from pathlib import Path

import pytest

import zoo.cli.ablate
from zoo.config.schema import SpecError
from zoo.studies import jobs, load, validate
from zoo.tracking import runs


@pytest.fixture
def studies(tmp_path, monkeypatch):
    """A private studies folder: pretraining.yaml copied, plus whatever a test writes."""
    shutil.copy(load.studies_dir() / "pretraining.yaml", tmp_path / "pretraining.yaml")
    monkeypatch.setattr(load, "studies_dir", lambda: tmp_path)
    load._study_file.cache_clear()
    jobs.job_params.cache_clear()
    yield tmp_path
    load._study_file.cache_clear()
    jobs.job_params.cache_clear()


def test_expand_is_hydras_basic_sweeper():
    got = jobs.expand({"model.depth": "5,20", "seed": "0,1"}, ["model.depth=50", "trainer.epochs=1", "seed=range(0,3)"])
    assert got == [["model.depth=50", f"seed={s}", "trainer.epochs=1"] for s in range(3)]
    assert jobs.task_overrides(["-m", "hydra.sweep.dir=x", "hydra/launcher=joblib", "+study.scale=quick", "seed=1"]) \
        == ["+study.scale=quick", "seed=1"]


def test_a_check_naming_a_variant_the_sweep_does_not_produce_fails_naming_the_file(studies):
    text = (studies / "pretraining.yaml").read_text()
    (studies / "pretraining.yaml").write_text(text.replace("variant: {pretrain.epochs: 20}", "variant: {pretrain.epochs: 5}", 1))
    with pytest.raises(SpecError) as err:
        validate.validate_study("pretraining")
    message = str(err.value)
    assert message.startswith(f"{studies / 'pretraining.yaml'}: study.claim: claim check 0: variant {{pretrain.epochs: 5}}")
    assert "matches none of the 6 jobs of the full-scale sweep: pretrain.epochs is one of 0, 20 in the sweep" in message
    assert "\n" not in message


def test_a_variant_key_no_job_has_is_named(studies):
    text = (studies / "pretraining.yaml").read_text()
    (studies / "pretraining.yaml").write_text(text.replace("than: {pretrain.epochs: 0}", "than: {pretrain.epoch: 0}", 1))
    with pytest.raises(SpecError, match=r"claim check 0: than \{pretrain.epoch: 0\} .*no job has the param 'pretrain.epoch'"):
        validate.validate_study("pretraining")


def test_an_unknown_metric_fails_naming_the_file(studies):
    text = (studies / "pretraining.yaml").read_text()
    (studies / "pretraining.yaml").write_text(text.replace("- metric: final/train_loss", "- metric: final/train_los", 1))
    with pytest.raises(SpecError, match=rf"^{studies / 'pretraining.yaml'}: study.claim: claim check 1: unknown metric 'final/train_los'"):
        load.load_study("pretraining")


def test_zoo_ablate_refuses_a_bad_study_in_one_line_before_training(studies, capsys):
    text = (studies / "pretraining.yaml").read_text()
    (studies / "pretraining.yaml").write_text(text.replace("variant: {pretrain.epochs: 20}", "variant: {pretrain.epochs: 5}", 1))
    assert zoo.cli.ablate.main(["pretraining", "--scale", "quick"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"zoo-ablate: {studies / 'pretraining.yaml'}: study.claim")


def test_a_yaml_syntax_error_names_file_and_line_and_list_still_lists_the_others(studies, capsys):
    (studies / "broken.yaml").write_text("study:\n  name: broken\n  metrics: [a, b\n  plot: layers\n")
    with pytest.raises(SpecError, match=rf"^{studies / 'broken.yaml'}:\d+: YAML syntax error"):
        load.load_study("broken")
    assert zoo.cli.ablate.main(["--list"]) == 0
    out, err = capsys.readouterr()
    assert "  pretraining " in out and "[2 jobs quick, 6 full]" in out
    assert f"  broken           BROKEN: {studies / 'broken.yaml'}:" in out
    assert f"{studies / 'broken.yaml'}:" in err
    assert zoo.cli.ablate.main(["broken"]) == 2


def test_every_shipped_check_is_validated_quickly():
    """Validation composes each distinct job once; the biggest study must stay near a second."""
    import time

    jobs.job_params.cache_clear()
    started = time.perf_counter()
    study = validate.validate_study("init_depth")
    assert study.name == "init_depth" and time.perf_counter() - started < 5


def test_the_config_hash_follows_the_code(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "b.yaml").write_text("k: 1\n")
    roots = ((tmp_path, "*.py"), (tmp_path / "conf", "*.yaml"))
    before = runs.source_fingerprint(roots)
    assert runs.source_fingerprint(roots) == before
    (tmp_path / "conf" / "b.yaml").write_text("k: 2\n")
    assert runs.source_fingerprint(roots) != before
    assert runs.code_version().startswith("0.1.0+")
    base = {"seed": 0, "model": {"depth": 20}}
    digest = runs.config_hash(base)
    runs.code_version.cache_clear()
    try:
        real = runs.code_version()
        runs.code_version.cache_clear()
        import unittest.mock as mock

        with mock.patch.object(runs, "source_fingerprint", return_value="0" * 64):
            assert runs.config_hash(base) != digest  # a code change invalidates old runs
    finally:
        runs.code_version.cache_clear()
    assert runs.code_version() == real and runs.config_hash(base) == digest
