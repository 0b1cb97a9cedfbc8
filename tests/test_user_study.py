"""A study file of the user's own, on their own builder and data: ``zoo-ablate mystudy.yaml``
runs it as it runs a shipped study (parent and child runs, the claim judged, plots), with the
file's relative paths taken from where the user launched; a bad file is refused in one line."""
import hashlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import EVENT_SECONDS, runs_of
from test_validation import ABLATE

BUILDER = """
    import keras


    def build(input_shape, num_outputs, width=32, depth=8, activation="relu"):
        inputs = keras.Input(shape=input_shape)
        h = inputs
        for i in range(1, depth):
            h = keras.layers.Dense(width, activation=activation, name=f"dense{i}")(h)
        return keras.Model(inputs, keras.layers.Dense(num_outputs, name="head")(h))
"""
# Keras' default init (Glorot uniform) for both: at depth 8 sigmoid's first-layer gradient at
# step 1 is ~3e-5 against relu's ~0.08 (calibrated at full scale, 3 seeds: reproduced).
STUDY = """
    defaults:
      - config
      - override model: custom
      - override data: arrays
      - _self_

    model:
      target: mynet.py:build   # from where zoo-ablate is launched
      depth: 8
    data:
      path: mine.npz
    trainer:
      epochs: 1
    tracking:
      log_model: false

    study:
      name: my_activation
      description: "sigmoid vs relu in my depth-8 MLP, on my data"
      variant_keys: [model.activation]
      metrics: [summary/grad_first_init, final/train_loss, final/val_accuracy]
      claim:
        text: "At depth 8, sigmoid's first-layer gradient at step 1 is < 1e-1 of relu's."
        checks:
          - metric: summary/grad_first_init
            variant: {model.activation: sigmoid}
            op: "<"
            factor: 1.0e-1
            than: {model.activation: relu}
      quick: [seed=0]

    hydra:
      searchpath: [pkg://zoo.conf]
      sweeper:
        params:
          model.activation: sigmoid,relu
          seed: 0,1,2
"""


def write_project(folder):
    """A user's folder: the builder, the data (300 examples, 2 classes, linearly separable: the
    builder's relu net reaches 0.003x the constant predictor's loss in 30 epochs) and the study."""
    (folder / "mynet.py").write_text(textwrap.dedent(BUILDER))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 10)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    np.savez(folder / "mine.npz", x_train=x[:240], y_train=y[:240], x_val=x[240:], y_val=y[240:])
    (folder / "mystudy.yaml").write_text(textwrap.dedent(STUDY))
    return folder


def ablate(args, cwd):
    """``zoo-ablate ARGS`` in-process from ``cwd``: (exit code, TensorFlow imported?, stderr lines)."""
    out = subprocess.run([sys.executable, "-c", ABLATE, *args], cwd=cwd, capture_output=True,
                         text=True, timeout=EVENT_SECONDS)
    *_, tf, code = out.stdout.split()
    return int(code), tf == "TF_IMPORTED", out.stderr.strip().splitlines()


@pytest.mark.slow
def test_your_study_file_runs_on_your_model_and_data(tmp_path):
    project = write_project(tmp_path)
    out = subprocess.run([sys.executable, "-m", "zoo.cli.ablate", "mystudy.yaml", "--scale", "quick"],
                         cwd=project, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "zoo-ablate: mystudy.yaml at scale quick: 2 jobs" in out.stdout
    client, parents, children = runs_of(project)
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    tags = parent.data.tags
    assert parent.info.status == "FINISHED"
    assert tags["zoo.kind"] == "study" and tags["zoo.study"] == "my_activation" and tags["zoo.scale"] == "quick"
    sha = {f: hashlib.sha256((project / f).read_bytes()).hexdigest() for f in ("mynet.py", "mine.npz")}
    for child in children:
        assert child.info.status == "FINISHED", child.data.tags.get("zoo.error")
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["zoo.verdict"]
        # the file's relative paths, read from the launch folder by the sweep's jobs
        assert child.data.params["model.target"] == "mynet.py:build" and child.data.params["data.path"] == "mine.npz"
        assert len(child.data.tags["zoo.model_sha256"]) >= 16 and len(child.data.tags["zoo.data_sha256"]) >= 16
        assert sha["mynet.py"].startswith(child.data.tags["zoo.model_sha256"])
        assert sha["mine.npz"].startswith(child.data.tags["zoo.data_sha256"])
    grad = {c.data.params["model.activation"]: c.data.metrics["summary/grad_first_init"] for c in children}
    assert grad["sigmoid"] < 1e-1 * grad["relu"]  # the claim's direction, on seed 0
    # one seed never decides: the verdict the summary prints is the parent's tag
    verdict = tags["zoo.claim_verdict"]
    assert verdict == "inconclusive" and "one seed never decides" in out.stdout
    assert f"## Claim: {verdict}" in out.stdout and "> At depth 8, sigmoid's first-layer gradient" in out.stdout
    assert f"- {tags['zoo.claim_numbers'].splitlines()[0]}" in out.stdout
    assert "# my_activation (quick)" in out.stdout
    artifacts = {a.path for d in ("summary", "plots") for a in client.list_artifacts(parent.info.run_id, d)}
    assert {"summary/summary.md", "summary/summary.csv", "plots/gradient_flow_variants.png",
            "plots/final_metrics.png"} <= artifacts
    assert (project / "multirun" / "mystudy").is_dir()  # the sweep folder is named after the file


def test_a_study_in_another_folder_reads_its_relative_paths_from_the_launch_folder(tmp_path, monkeypatch):
    """``studies/mystudy.yaml`` is Hydra's config dir ``studies`` and name ``mystudy``; the jobs
    run where zoo-ablate was started (no chdir), so ``mynet.py`` is the launch folder's."""
    from zoo.cli.ablate import check_overrides, hydra_argv
    from zoo.config.schema import SpecError

    project = write_project(tmp_path)
    (project / "studies").mkdir()
    (project / "mystudy.yaml").rename(project / "studies" / "mystudy.yaml")
    monkeypatch.chdir(project)
    argv = hydra_argv("studies/mystudy.yaml", "quick", [], False, [])
    assert argv[:5] == ["-m", "--config-dir", str(project / "studies"), "--config-name", "mystudy"]
    assert any(a.startswith("hydra.sweep.dir=multirun/mystudy/quick-") for a in argv)
    assert not any("chdir" in a for a in argv)
    spec = check_overrides("studies/mystudy.yaml", argv, [])
    assert spec.model.target == "mynet.py:build" and spec.data.path == str(project / "mine.npz")
    monkeypatch.chdir(project / "studies")  # launched beside the study, not beside the builder
    with pytest.raises(SpecError, match=r"model.target: file 'mynet.py' does not exist \(relative paths are from "):
        check_overrides("mystudy.yaml", hydra_argv("mystudy.yaml", "quick", [], False, []), [])


def test_list_shows_the_shipped_studies_not_files_in_the_launch_folder(tmp_path):
    project = write_project(tmp_path)
    out = subprocess.run([sys.executable, "-m", "zoo.cli.ablate", "--list"], cwd=project, capture_output=True,
                         text=True, timeout=EVENT_SECONDS)
    assert out.returncode == 0 and "  init_depth " in out.stdout and "mystudy" not in out.stdout


def edit(old, new):
    return lambda folder: (folder / "mystudy.yaml").write_text((folder / "mystudy.yaml").read_text().replace(old, new, 1))


@pytest.mark.parametrize("args, change, message", [
    (["nosuch.yaml"], None, "{folder}/nosuch.yaml: no such file"),
    (["sub/nosuch"], None, "{folder}/sub/nosuch.yaml: no such file"),
    (["mystudy.yaml"], edit("study:\n", "not_a_study:\n"), "{folder}/mystudy.yaml: has no 'study' section"),
    (["mystudy.yaml"], edit("variant: {model.activation: sigmoid}", "variant: {model.activation: tanh}"),
     "{folder}/mystudy.yaml: study.claim: claim check 0: variant {model.activation: tanh} matches none of "
     "the 6 jobs of the full-scale sweep: model.activation is one of relu, sigmoid in the sweep, never 'tanh'"),
    (["mystudy.yaml"], edit("seed: 0,1,2", "seed: 0"),
     "{folder}/mystudy.yaml: study: variant {'model.activation': 'sigmoid'} runs 1 seed(s) at full scale"),
    (["mystudy.yaml"], edit("variant_keys: [model.activation]", "variant_keys: [model.activation"),
     "{folder}/mystudy.yaml:22: YAML syntax error: expected ',' or ']', but got ':'"),
    (["mystudy.yaml"], edit("  searchpath: [pkg://zoo.conf]\n", ""),
     "{folder}/mystudy.yaml: hydra.searchpath must include pkg://zoo.conf"),
    (["mystudy.yaml"], edit("override data: arrays", "override data: arrayz"),
     "{folder}/mystudy.yaml: In 'config': Could not find 'data/arrayz'; Available options in 'data': adding, arrays"),
    (["mystudy.yaml"], lambda folder: (folder / "config.yaml").write_text("seed: 1\n"),
     "{folder}/mystudy.yaml: {folder}/config.yaml would hide the zoo's config"),
    (["my,study.yaml"], lambda folder: (folder / "mystudy.yaml").rename(folder / "my,study.yaml"),
     "{folder}/my,study.yaml: needs a plain file name: letters, digits, '_', '-', '.'"),
    (["mystudy.yml"], lambda folder: (folder / "mystudy.yaml").rename(folder / "mystudy.yml"),
     "{folder}/mystudy.yml is not a study file: Hydra reads a study from NAME.yaml (rename it mystudy.yaml)"),
])
def test_a_bad_study_file_is_refused_in_one_line_before_tensorflow(tmp_path, args, change, message):
    project = write_project(tmp_path)
    if change:
        change(project)
    code, tf, lines = ablate([*args, "--scale", "quick"], project)
    assert (code, tf) == (2, False), lines
    assert len(lines) == 1 and lines[0].startswith("zoo-ablate: " + message.replace("{folder}", str(project))), lines
    assert not (project / "multirun").exists() and not (project / "mlflow.db").exists()


def test_a_study_name_that_is_a_file_here_says_to_give_its_path(tmp_path):
    code, tf, lines = ablate(["mystudy"], write_project(tmp_path))
    assert (code, tf) == (2, False) and len(lines) == 1
    assert lines[0].endswith("; your study file mystudy.yaml? give its path: zoo-ablate mystudy.yaml"), lines


def test_a_study_file_in_a_folder_named_like_an_override_is_no_override(tmp_path, monkeypatch):
    from zoo.cli.ablate import hydra_argv
    from zoo.studies.jobs import job_count, task_overrides

    project = write_project(tmp_path)
    (project / "lr=0.1").mkdir()
    (project / "mystudy.yaml").rename(project / "lr=0.1" / "mystudy.yaml")
    monkeypatch.chdir(project)
    argv = hydra_argv("lr=0.1/mystudy.yaml", "quick", [], False, ["model.width=16"])
    assert task_overrides(argv) == ["+study.scale=quick", "tracking.resume=true", "seed=0", "model.width=16"]
    assert job_count("lr=0.1/mystudy.yaml", argv) == 2
