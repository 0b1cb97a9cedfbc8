"""Ablation studies end to end: configs, zoo-ablate, parent/child runs, verdicts, resume,
failures inside a sweep, and parallel jobs writing to one sqlite store."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EVENT_SECONDS, runs_of
from zoo.training.spec import validate
from zoo.studies.jobs import expand, job_count, job_params, study_jobs
from zoo.studies.load import from_section, load_study, study_names, studies_dir, sweep_params
from zoo.studies.records import matches
from zoo.tracking.runs import flat_params

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def test_job_count_is_the_number_of_jobs_hydra_expands():
    assert study_jobs("init_depth") == expand(sweep_params("init_depth"))
    assert job_count("init_depth") == 4 * 3 * 3  # inits x depths x seeds
    quick = study_jobs("init_depth", load_study("init_depth").overrides("quick"))
    assert len(quick) == 3 * 2 and all("trainer.epochs=1" in job and "seed=0" in job for job in quick)
    argv = ["-m", "--config-dir", "x", "hydra.sweep.dir=y", "hydra/launcher=joblib", "model.depth=5,50"]
    assert job_count("init_depth", argv) == 4 * 2 * 3


@pytest.mark.parametrize("name", study_names())
def test_every_study_composes_and_validates_at_both_scales(name):
    from hydra import compose, initialize_config_dir

    study = load_study(name)
    assert study.claim["checks"] and study.description
    for scale in ("quick", "full"):
        jobs = study_jobs(name, study.overrides(scale))
        assert len(jobs) == job_count(name, study.overrides(scale)) >= 1
        with initialize_config_dir(config_dir=str(studies_dir()), version_base="1.3"):
            for job in jobs:
                cfg = compose(config_name=name, overrides=job)
                spec = validate(cfg)  # raises SpecError on any problem
                assert from_section(cfg.study).name == name
                assert spec.seed == int(flat_params(spec.resolved)["seed"])
    full = job_params(name, tuple(map(tuple, study_jobs(name))))
    assert len(full) >= 2
    for key in study.variant_keys:  # a key of the resolved config (a job's logged param), not just its section
        assert any(key in p for p in full), f"{name}: variant key {key} is no param of any job"
    for i, check in enumerate(study.claim["checks"]):  # every check names variants the full sweep produces
        for side in ("variant", "than"):
            if side in check:
                assert any(matches(p, check[side]) for p in full), f"{name}: check {i} {side} {check[side]}"


def run_cli(args: list[str], cwd: Path, timeout: int = 900, code: str | None = None, exit_code: int = 0):
    """Run a zoo command (or ``code`` with ``args``) in ``cwd``; assert its exit code (0: every
    job finished; 3: some failed, README "How a sweep ends")."""
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", *args[:1]]
    out = subprocess.run(cmd + (args if code else args[1:]), cwd=cwd, env=ENV, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == exit_code, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_list_and_argument_errors_do_not_import_tensorflow(tmp_path):
    code = ("import sys\nfrom zoo.cli.ablate import main\ncode = main(sys.argv[1:])\n"
            "print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_NOT_IMPORTED', code)\n")
    listed = subprocess.run([sys.executable, "-c", code, "--list"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=EVENT_SECONDS)
    assert "TF_NOT_IMPORTED 0" in listed.stdout
    for name in study_names():
        assert f"  {name} " in listed.stdout
    bad = subprocess.run([sys.executable, "-c", code, "nosuch", "--force", "seed=1"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=EVENT_SECONDS)  # options between study and overrides
    assert "TF_NOT_IMPORTED 2" in bad.stdout
    assert "study: unknown study 'nosuch'; choose one of: activation_depth, aux_heads" in bad.stderr


@pytest.mark.slow
def test_resumed_sweep_skips_finished_runs_and_adopts_them(tmp_path):
    sweep = ["zoo.cli.train", "-m", "model.depth=2", "model.width=8", "trainer.epochs=1",
             "tracking.resume=true", "seed=0,1"]
    run_cli(sweep, tmp_path)
    again = run_cli(sweep + ["hydra.sweep.dir=multirun/again"], tmp_path)
    assert again.stdout.count("zoo-train: skipped, already finished as MLflow run") == 2
    client, parents, children = runs_of(tmp_path)
    assert len(parents) == 2 and len(children) == 2  # nothing trained twice
    newest = max(parents, key=lambda r: r.info.start_time)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {newest.info.run_id}
    assert newest.data.tags["zoo.jobs_reused"] == "2"
    reused = newest.data.tags["zoo.reused_runs"].splitlines()
    assert sorted(line.split(":")[0] for line in reused) == sorted(c.info.run_id for c in children)
    assert all(f"same config hash {c.data.tags['zoo.config_hash']}" in newest.data.tags["zoo.reused_runs"]
               for c in children)
    forced = run_cli(sweep[:-2] + ["tracking.resume=false", "seed=0", "hydra.sweep.dir=multirun/forced"], tmp_path)
    assert "skipped" not in forced.stdout
    assert len(runs_of(tmp_path)[2]) == 3


INJECT_FAILURE = """
import sys
import zoo.training.run
real = zoo.training.run.train_loop
def flaky(*args, **kwargs):
    spec = kwargs.get("spec", args[-1])
    if spec.seed == 1 and spec.data.standardize:
        raise RuntimeError("injected failure")
    return real(*args, **kwargs)
zoo.training.run.train_loop = flaky
from zoo.cli.train import main
sys.argv = ["zoo-train"] + sys.argv[1:]
main()
"""


@pytest.mark.slow
def test_a_failing_and_a_diverging_job_do_not_stop_the_study(tmp_path):
    args = ["-m", "--config-dir", str(studies_dir()), "--config-name", "learning_rate",
            "+study.scale=quick", "trainer.epochs=1", "seed=0,1", "optimizer.lr=0.01,1e8", "data.standardize=false,true",
            "model.depth=10", "model.activation=relu", "model.init=he_normal"]  # relu: lr 1e8 diverges
    out = run_cli(args, tmp_path, code=INJECT_FAILURE, exit_code=3)  # two jobs failed, the rest finished
    client, parents, children = runs_of(tmp_path)
    assert len(children) == 8  # 2 standardize x 2 seeds x 2 lr: every job recorded
    failed = [c for c in children if c.info.status == "FAILED"]
    assert len(failed) == 2 and all("injected failure" in c.data.tags["zoo.error"] for c in failed)
    diverged = [c for c in children if c.data.tags.get("zoo.outcome") == "diverged"]
    assert diverged and all(c.info.status == "FINISHED" for c in diverged)
    tags = parents[0].data.tags
    assert parents[0].info.status == "FINISHED"
    assert "injected failure" in tags["zoo.failed_variants"] and "diverged at step" in tags["zoo.failed_variants"]
    assert "Excluded runs (5):" in out.stdout  # 2 failed + 3 diverged (lr 1e8, one of them failed first)
    assert out.stdout.count("failed: RuntimeError: injected failure") == 2


@pytest.mark.slow
def test_four_parallel_joblib_jobs_lose_nothing(tmp_path):
    run_cli(["zoo.cli.train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", "trainer.threads=1",
             "model.depth=3", "model.width=8", "trainer.epochs=1", "monitor.log_every=1",
             "seed=0,1,2,3"], tmp_path)
    client, parents, children = runs_of(tmp_path)
    assert len(parents) == 1 and len(children) == 4
    assert len({c.data.params["seed"] for c in children}) == 4
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        steps = int(child.data.tags["zoo.steps"])
        for name in ["2 learning/loss", "2 learning/accuracy", "1 gradient flow/log10_flow"] + [
                k for k in child.data.metrics if k.startswith("log10_grad_norm/")]:
            history = client.get_metric_history(child.info.run_id, name)
            assert [m.step for m in history] == list(range(1, steps + 1)), name
        assert len([k for k in child.data.metrics if k.startswith("log10_grad_norm/")]) == 3
    jobs = [json.loads(v) for k, v in parents[0].data.tags.items() if k.startswith("zoo.job.")]
    assert sorted(j["run_id"] for j in jobs) == sorted(c.info.run_id for c in children)


def test_config_hash_ignores_bookkeeping_but_not_training():
    from zoo.tracking.runs import config_hash

    base = {"seed": 0, "model": {"depth": 20}, "trainer": {"epochs": 4, "threads": 0},
            "tracking": {"uri": "sqlite:///a.db"}, "study": {"name": "x"}}
    same = {**base, "trainer": {"epochs": 4, "threads": 1}, "tracking": {"uri": "sqlite:///b.db"}, "study": {}}
    assert config_hash(base) == config_hash(same)
    assert config_hash(base) != config_hash({**base, "seed": 1})
    assert config_hash(base) != config_hash({**base, "trainer": {"epochs": 5, "threads": 0}})
