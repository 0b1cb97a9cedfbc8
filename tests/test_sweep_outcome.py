"""A sweep's end: how many jobs failed, said on its last line, in its exit code and on its parent
run; and a sweep's identity: two sweeps started in the same second in one folder get a folder,
a key and a parent each, and each parent is closed.

The jobs here are fakes (``zoo.training.run`` replaced before the sweep imports it): what is under test
is the sweep around them, and a fake job costs no TensorFlow import."""
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import EVENT_SECONDS, runs_of

# zoo-train with a fake zoo.training.run: a job whose seed is in FAIL raises (as a crash in training
# would), the others "finish" as an MLflow child run of the sweep's parent when there is a store.
# FROZEN_NOW fixes Hydra's ${now:...}, so two sweeps see the same second.
FAKE = """
import datetime, os, sys, types
if os.environ.get("FROZEN_NOW"):
    import hydra.core.utils as hydra_utils
    frozen = datetime.datetime.fromisoformat(os.environ["FROZEN_NOW"])
    hydra_utils.datetime = type("FrozenDatetime", (), {"now": staticmethod(lambda: frozen)})
FAIL = {int(s) for s in os.environ.get("FAIL_SEEDS", "").split(",") if s}

def run(spec, sink, run_name=None):
    if hasattr(sink, "start"):
        sink.start(run_name, {"seed": str(spec.seed)}, {})
    if spec.seed in FAIL:
        if hasattr(sink, "finish"):
            sink.finish("FAILED")
        raise RuntimeError(f"injected failure of seed {spec.seed}")
    if hasattr(sink, "finish"):
        sink.finish("FINISHED")
    verdict = types.SimpleNamespace(label="healthy")
    return types.SimpleNamespace(run_id=getattr(sink, "run_id", None), outcome="finished", verdict=verdict,
                                 summary_line=lambda: f"fake job seed {spec.seed} finished")

if os.environ.get("SWALLOW_WHILE_CONCLUDING"):  # SIGINT while the parent is concluded, its raise dropped
    import signal
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a terminal's (a background job's is SIG_IGN)
    sys.path.insert(0, os.environ["SWALLOW_WHILE_CONCLUDING"])
    from conftest import swallowed_signal
    from zoo.studies.callback import StudyCallback  # conf/config.yaml's
    conclude = StudyCallback.conclude

    def concluded_then_signalled(self, *args):
        conclude(self, *args)
        swallowed_signal(signal.SIGINT)

    StudyCallback.conclude = concluded_then_signalled

fake = types.ModuleType("zoo.training.run")
fake.run = run
sys.modules["zoo.training.run"] = fake
if os.environ.get("ENTRY") == "zoo-ablate":
    from zoo.cli.ablate import main as ablate
    sys.exit(ablate(sys.argv[1:]))
from zoo.cli.train import main
sys.argv = ["zoo-train"] + sys.argv[1:]
main()
"""
TINY = ["model.depth=2", "model.width=4", "trainer.epochs=1"]


def sweep(args, cwd, fail="", frozen="", background=False, swallow=False):
    env = {**os.environ, "FAIL_SEEDS": fail, "FROZEN_NOW": frozen, "PYTHONUNBUFFERED": "1",
           **({"SWALLOW_WHILE_CONCLUDING": os.path.dirname(__file__)} if swallow else {})}
    cmd = [sys.executable, "-c", FAKE, "-m", *TINY, *args]
    if background:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("fail, code, last", [
    ("", 0, "zoo-train: sweep finished: all 3 jobs finished"),
    ("1", 3, "zoo-train: sweep finished with failures: 1 of 3 jobs failed (job 1: RuntimeError: injected failure "
             "of seed 1); exit code 3"),
    ("0,1,2", 1, "zoo-train: sweep failed: all 3 jobs failed (job 0: RuntimeError: injected failure of seed 0; "
                 "and 2 more); exit code 1"),
])
def test_a_sweep_says_how_many_jobs_failed_and_exits_by_it(tmp_path, fail, code, last):
    out = sweep(["seed=0,1,2", "tracking.uri=null"], tmp_path, fail=fail)
    assert out.returncode == code, out.stdout[-2000:] + out.stderr[-3000:]
    assert (out.stderr if code else out.stdout).strip().splitlines()[-1] == last
    assert "tensorflow" not in out.stderr.lower()


def test_a_sweep_whose_jobs_all_failed_ends_its_parent_failed(tmp_path):
    out = sweep(["seed=0,1", "tracking.uri=sqlite:///mlflow.db"], tmp_path, fail="0,1")
    assert out.returncode == 1, out.stderr[-3000:]
    client, parents, children = runs_of(tmp_path)
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FAILED" and parent.data.tags["zoo.jobs_failed"] == "2"
    assert "injected failure of seed 1" in parent.data.tags["zoo.job_failures"]
    assert out.stderr.strip().splitlines()[-1].endswith(f"MLflow parent run {parent.info.run_id}; exit code 1")


def test_a_stop_swallowed_while_the_sweep_concludes_ends_its_parent_killed(tmp_path):
    """A SIGINT whose raise a callback dropped (as JAX's gc callback did in stop 39's CI) while the
    parent's conclusion was written: the parent is not FINISHED, it is KILLED with its tags, and the
    command exits 130; the jobs' runs stay FINISHED."""
    out = sweep(["seed=0,1", "tracking.uri=sqlite:///mlflow.db"], tmp_path, swallow=True)
    assert out.returncode == 130, out.stdout[-2000:] + out.stderr[-3000:]
    client, parents, children = runs_of(tmp_path)
    assert [p.info.status for p in parents] == ["KILLED"], parents[0].data.tags
    assert parents[0].data.tags["zoo.outcome"] == "killed" and parents[0].data.tags["zoo.killed"] == "SIGINT"
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]
    assert "stopped by SIGINT" in out.stderr.strip().splitlines()[-1]


def test_two_sweeps_started_in_the_same_second_in_one_folder_keep_apart(tmp_path):
    """Before: one sweep folder (its name the time to the second), every job trained twice, all
    nested under the second parent, the first parent RUNNING for ever."""
    args = ["seed=0,1", "tracking.uri=sqlite:///mlflow.db"]
    frozen = "2030-01-01T12:00:00"
    sweep(["seed=0", "tracking.uri=sqlite:///mlflow.db"], tmp_path, frozen=frozen)  # the store exists: both start at once
    first, second = (sweep(args, tmp_path, frozen=frozen, background=True) for _ in range(2))
    outs = [p.communicate(timeout=300) for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outs
    folders = sorted(p.name for p in (tmp_path / "multirun" / "2030-01-01").iterdir())
    assert len(folders) == 3 and all(f.startswith("12-00-00-") for f in folders), folders  # same second, 3 folders
    client, parents, children = runs_of(tmp_path)
    assert len(parents) == 3 and len(children) == 1 + 2 + 2  # no job ran twice
    keys = {p.data.tags["zoo.sweep_key"] for p in parents}
    assert len(keys) == 3
    for parent in parents:
        assert parent.info.status == "FINISHED", parent.data.tags
        mine = [c for c in children if c.data.tags["mlflow.parentRunId"] == parent.info.run_id]
        records = [json.loads(v) for k, v in parent.data.tags.items() if k.startswith("zoo.job.")]
        assert sorted(r["run_id"] for r in records) == sorted(c.info.run_id for c in mine)
        assert int(parent.data.tags["zoo.jobs"]) == len(mine) >= 1
    for out, _ in outs:  # each process ran its own two jobs, once
        assert out.count("fake job seed") == 2, out


def test_a_sweep_folder_given_twice_is_refused_while_the_first_sweep_runs(tmp_path):
    from zoo.config.schema import SpecError
    from zoo.tracking.sweep import lock_sweep_dir

    folder = tmp_path / "multirun" / "mine"
    folder.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, pathlib\nfrom zoo.tracking.sweep import lock_sweep_dir\n"
        f"lock_sweep_dir(pathlib.Path({str(folder)!r}))\nprint('locked', flush=True)\ntime.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(SpecError, match=rf"hydra.sweep.dir: {folder} is in use by another sweep that is still "
                                            rf"running \(pid {holder.pid}\); give this one its own folder"):
            lock_sweep_dir(folder)
        start = time.perf_counter()
        out = sweep(["seed=0", "tracking.uri=null", f"hydra.sweep.dir={folder}"], tmp_path)
        assert out.returncode == 2 and "fake job" not in out.stdout, out.stderr[-2000:]
        assert out.stderr.strip().splitlines()[-1].startswith("zoo-train: config error: hydra.sweep.dir: ")
        assert time.perf_counter() - start < 10
    finally:
        holder.kill()
        holder.wait()
    lock_sweep_dir(folder)  # free again once its sweep is gone


def test_the_default_sweep_folder_is_new_for_every_process(tmp_path):
    probe = ("import hydra.core.utils as u, datetime\n"
             "u.datetime = type('D', (), {'now': staticmethod(lambda: datetime.datetime(2030, 1, 1))})\n"
             "from hydra import compose, initialize_config_module\nimport zoo.tracking.sweep\n"
             "u.setup_globals()\n"
             "with initialize_config_module('zoo.conf', version_base='1.3'):\n"
             "    cfg = compose('config', return_hydra_config=True)\n"
             "    print(cfg.hydra.sweep.dir, cfg.hydra.sweep.dir)\n")
    dirs = [subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                           timeout=EVENT_SECONDS).stdout.split() for _ in range(2)]
    assert all(len(d) == 2 and d[0] == d[1] for d in dirs), dirs  # one value within a process
    assert dirs[0][0] != dirs[1][0] and all(d[0].startswith("multirun/2030-01-01/00-00-00-") for d in dirs)


def test_a_study_whose_jobs_all_failed_exits_1_not_inconclusive_0(tmp_path):
    """Before: both jobs FAILED, the study "inconclusive", exit code 0."""
    env = {**os.environ, "FAIL_SEEDS": "0", "ENTRY": "zoo-ablate"}
    out = subprocess.run([sys.executable, "-c", FAKE, "input_scaling", "--scale", "quick"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("zoo-ablate: sweep failed: all 2 jobs failed (job 0: RuntimeError: injected failure "
                           "of seed 0; and 1 more); MLflow parent run "), last
    client, parents, children = runs_of(tmp_path)
    assert [p.info.status for p in parents] == ["FAILED"] and len(children) == 2
    assert parents[0].data.tags["zoo.claim_verdict"] == "inconclusive"  # still judged, and the reason listed


def test_a_killed_worker_counts_as_a_failed_job_only_when_its_job_left_no_record():
    """Ray re-runs a task whose worker died: the job then has its record and failed nothing,
    though the repair ended the dead worker's run as KILLED."""
    from zoo.tracking.sweep import outcome_of

    done = [{"job": j, "outcome": "finished"} for j in range(5)]
    retried = outcome_of(done, expected=5, killed=1)
    assert (retried.jobs, retried.failed, retried.exit_code) == (5, 0, 0)
    lost_worker = outcome_of(done[:4], expected=5, killed=1)
    assert (lost_worker.jobs, lost_worker.failed, lost_worker.exit_code) == (5, 1, 3)
    assert lost_worker.failures == ["1 job(s) whose worker died, ended as KILLED"]
    no_record = outcome_of(done[:3], expected=5, killed=1)
    assert no_record.failed == 2 and no_record.failures[-1] == "1 job(s) left no record"
    crashed = outcome_of([*done[:4], {"job": 4, "error": "RuntimeError: boom"}], expected=5)
    assert crashed.failed == 1 and crashed.exit_code == 3
    unknown = outcome_of(done[:2], expected=None, killed=2)  # the sweep's size unknown: every killed run a job
    assert (unknown.jobs, unknown.failed, unknown.exit_code) == (4, 2, 3)
    assert outcome_of([], expected=2, killed=2).exit_code == 1
