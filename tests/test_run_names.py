"""Run names as MLflow's runs table shows them (~20 characters): what differs first, the verdict
in front once the run has one; a sweep names its jobs by the keys it varies."""
import json

from conftest import run_cli, runs_of
from zoo.tracking.names import job_name, judged, sweep_name, swept_keys

EXCLUDED = ["+study.scale", "study.scale", "tracking", "tracking.resume", "trainer.threads", "tracking.uri"]
GROUPS = ["model", "data", "optimizer", "tracking"]  # Hydra's runtime.choices, in its order


def test_a_name_is_the_overrides_values_config_groups_first_bookkeeping_left_out():
    tour = ["model.depth=20", "model.activation=sigmoid", "model.init=random_normal"]
    assert job_name(tour, EXCLUDED, None, GROUPS) == "sigmoid · depth=20 · random_normal"
    lstm = ["data=adding", "model=lstm", "data.length=150", "tracking.log_model=false", "+study.scale=quick"]
    assert job_name(lstm, EXCLUDED, None, GROUPS) == "lstm · adding · length=150"
    assert job_name(["tracking.uri=sqlite:///x.db"], EXCLUDED, None, GROUPS) is None  # run() names it mlp-digits


def test_a_sweep_job_is_named_by_the_keys_its_sweep_varies_only():
    job = ["data.standardize=False", "seed=1", "+study.scale=quick", "trainer.epochs=1"]
    assert job_name(job, EXCLUDED, ["data.standardize", "seed"], GROUPS) == "standardize=False · seed=1"
    assert job_name(job, EXCLUDED, [], GROUPS) == "standardize=False · seed=1 · epochs=1"  # nothing varies


def test_swept_keys_are_what_the_basic_sweeper_combines_variant_keys_first():
    assert swept_keys(["model.activation=sigmoid,relu", "trainer.epochs=1"], None) == ["model.activation"]
    params = {"data.standardize": "false,true", "seed": "0,1,2"}
    quick = ["seed=0", "+study.scale=quick", "trainer.epochs=1"]  # the command line wins over the params
    assert swept_keys(quick, params, first=["data.standardize"]) == ["data.standardize"]
    assert swept_keys(["seed=0,1"], params, first=["data.standardize"]) == ["data.standardize", "seed"]
    assert swept_keys(["model.depth=range(2,10,2)", "model=mlp,resnet"], None) == ["model", "model.depth"]


def test_a_sweeps_parent_is_named_by_what_it_varies_a_studys_by_the_study():
    assert sweep_name(None, ["model.activation", "model.init"]) == "sweep · activation × init"
    assert sweep_name(None, []) == "sweep"
    assert sweep_name("input_scaling", ["data.standardize"]) == "input_scaling"


def test_the_verdict_goes_in_front():
    assert judged("sigmoid · depth=20", "vanishing") == "vanishing · sigmoid · depth=20"
    assert judged("sigmoid", None) == "sigmoid" and judged(None, "healthy") == "healthy"


def test_a_sweeps_runs_read_verdict_then_what_differs(tmp_path):
    done = run_cli("-m", "model.activation=sigmoid,relu", "model.depth=12", "model.width=8", "trainer.epochs=1",
                   "model.init=random_normal", "tracking.log_model=false", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    _, parents, children = runs_of(tmp_path)
    assert json.loads(parents[0].data.tags["zoo.swept_keys"]) == ["model.activation"]
    assert parents[0].info.run_name == "sweep · activation"
    for child in children:
        assert child.info.run_name == f"{child.data.tags['zoo.verdict']} · {child.data.params['model.activation']}"
    assert sorted(c.info.run_name for c in children)[-1] == "vanishing · sigmoid"
    assert "sigmoid: finished after" in done.stdout + done.stderr  # the job's own log line names it so
