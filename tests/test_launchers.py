"""Scale-out launchers: ``zoo-ablate --launcher ray|submitit_local|joblib`` gives the same study
(verdict, runs, numbers) as the basic launcher; each job says where it ran; a worker killed
mid-sweep costs only its own run, which ends KILLED, not RUNNING (the Ray and submitit workers
killed: test_launchers_killed.py, so the two test workers share the slow launcher tests)."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import EVENT_SECONDS, runs_of, wait_training
from zoo.launch.launchers import LAUNCHERS, launcher_overrides
from zoo.config.schema import SpecError
from zoo.studies.jobs import job_count
from zoo.studies.load import load_study

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
STUDY = "input_scaling"  # 2 jobs at quick scale, the MLP is small: ~5 s a job


def ablate(cwd: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "zoo.cli.ablate", *args], cwd=cwd, env=ENV,
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


def test_each_launcher_splits_the_cores_between_its_jobs():
    assert LAUNCHERS.names() == ["basic", "joblib", "ray", "submitit_local", "submitit_slurm"]
    assert launcher_overrides(None, None) == []
    assert launcher_overrides(None, 2, threads=3) == ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                                                      "trainer.threads=3"]
    ray = launcher_overrides("ray", 2, threads=1)
    assert {"hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2", "+hydra.launcher.ray.remote.num_cpus=1",
            "trainer.threads=1"} <= set(ray)
    remote = launcher_overrides("ray", None, address="10.0.0.1:6379")
    assert "hydra.launcher.ray.init.address=10.0.0.1:6379" in remote
    # joining: what Ray refuses then (its nodes count their own CPUs) is ray.init's default, also
    # object_store_memory, which Hydra's Ray launcher would otherwise set (issue 22)
    assert {"++hydra.launcher.ray.init.num_cpus=null", "++hydra.launcher.ray.init.object_store_memory=null",
            "++hydra.launcher.ray.init.resources=null"} <= set(remote)
    assert not any("init.num_cpus" in o and not o.endswith("=null") for o in remote)
    slurm = launcher_overrides("submitit_slurm", 8, threads=4)
    assert {"hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=4", "trainer.threads=4",
            "hydra.launcher.array_parallelism=8"} <= set(slurm)


@pytest.mark.parametrize("args, message", [
    (("basic", 2, None), "--jobs: the basic launcher runs one job at a time"),
    (("joblib", 2, "auto"), "--address is a Ray cluster's address"),
    (("ray", 0, None), "--jobs must be >= 1"),
])
def test_impossible_launcher_settings_fail_before_training(args, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        launcher_overrides(*args)


def test_an_unknown_launcher_lists_the_choices_without_tensorflow(tmp_path):
    code = ("import sys\nfrom zoo.cli.ablate import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'TF_NOT_IMPORTED', e.code)\n")
    out = subprocess.run([sys.executable, "-c", code, STUDY, "--launcher", "dask"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=EVENT_SECONDS)
    assert "TF_NOT_IMPORTED 2" in out.stdout
    assert "invalid choice: 'dask'" in out.stderr
    assert all(f"'{name}'" in out.stderr for name in LAUNCHERS.names())


@pytest.mark.slow
def test_ray_and_submitit_give_the_basic_launchers_study(tmp_path):
    """Same verdict, same jobs (names, seeds, nesting) and the same numbers, whichever launcher;
    every job names its launcher, host and worker pid."""
    results = {}
    for launcher in ("basic", "ray", "submitit_local"):
        cwd = tmp_path / launcher
        cwd.mkdir()
        flags = [] if launcher == "basic" else ["--launcher", launcher, "--jobs", "2"]
        ablate(cwd, STUDY, "--scale", "quick", *flags, "trainer.threads=1")  # the same threads: the same sums
        _, parents, children = runs_of(cwd)
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert len(children) == job_count(STUDY, load_study(STUDY).overrides("quick"))
        pids = set()
        for child in children:
            tags = child.data.tags
            assert child.info.status == "FINISHED"
            assert tags["mlflow.parentRunId"] == parents[0].info.run_id
            assert tags["zoo.launcher"] == launcher and tags["zoo.owner.host"]
            pids.add(tags["zoo.owner.pid"])
        if launcher != "basic":  # the jobs ran in workers, not in the launching process
            assert parents[0].data.tags["zoo.owner.pid"] not in pids
        assert parents[0].data.tags["zoo.launcher"] == launcher
        results[launcher] = (parents[0].data.tags["zoo.claim_verdict"],
                             {c.info.run_name: (c.data.params["seed"], c.data.metrics["final/train_loss"],
                                                c.data.metrics["summary/grad_first_init"]) for c in children})
    assert results["ray"] == results["basic"]
    assert results["submitit_local"] == results["basic"]


def test_a_job_on_another_machine_finds_its_parent_and_reports_through_the_store(tmp_path):
    """A Ray or SLURM worker elsewhere sees neither the sweep folder's file nor the launcher's
    disk: it finds the parent by the sweep's key in the store and leaves its record there."""
    from types import SimpleNamespace

    from hydra.types import RunMode

    from zoo.tracking import sweep
    from zoo.tracking.runs import client, experiment_id

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    c = client(uri)
    exp = experiment_id(c, "gradzoo", uri)
    other = c.create_run(exp, tags={sweep.SWEEP_KEY: "multirun/other"})
    parent = c.create_run(exp, tags={sweep.SWEEP_KEY: "multirun/init_depth/quick-1",
                                     sweep.SWEPT_KEYS: '["model.init", "model.depth"]'})
    spec = SimpleNamespace(tracking=SimpleNamespace(uri=uri, experiment="gradzoo"))
    for num in (1, 0):
        job = SimpleNamespace(mode=RunMode.MULTIRUN, sweep=SimpleNamespace(dir="multirun/init_depth/quick-1"),
                              job=SimpleNamespace(num=num))
        assert not (tmp_path / "multirun").exists()  # no shared disk
        assert sweep.parent_for(spec, job) == parent.info.run_id
        assert sweep.swept_keys_of(spec, job) == ["model.init", "model.depth"]  # what names the job's run
        sweep.record_job(spec, job, run_id=f"run{num}", outcome="finished", error="x" * 9000)
    records = sweep.job_records(c, parent.info.run_id)
    assert [r["job"] for r in records] == [0, 1] and [r["run_id"] for r in records] == ["run0", "run1"]
    assert len(records[0]["error"]) == 2000  # long errors are cut, the record stays JSON
    assert sweep.job_records(c, other.info.run_id) == []


KILL_SWEEP = [STUDY, "--scale", "quick", "--jobs", "2", "trainer.epochs=40"]  # jobs long enough to be hit


def kill_one_job(cwd: Path, launcher: str, *extra: str, timeout: float = EVENT_SECONDS):
    """Run the study with ``launcher``, SIGKILL the worker of the first job that has taken
    steps; (exit code, the victim's run, stdout, stderr) once the sweep ends. The sweep writes to
    files, not pipes: a pipe nobody reads until the end fills up and stops the sweep."""
    with open(cwd / "stdout.txt", "w") as out, open(cwd / "stderr.txt", "w") as err:
        sweep = subprocess.Popen([sys.executable, "-m", "zoo.cli.ablate", *KILL_SWEEP, "--launcher", launcher, *extra],
                                 cwd=cwd, env=ENV, stdout=out, stderr=err, text=True)
    try:
        training = wait_training(sweep, cwd, timeout=timeout)
        victim = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}").get_run(training[0])
        os.kill(int(victim.data.tags["zoo.owner.pid"]), signal.SIGKILL)
        sweep.wait(timeout=600)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    return sweep.returncode, victim, (cwd / "stdout.txt").read_text(), (cwd / "stderr.txt").read_text()


@pytest.mark.slow
def test_a_killed_joblib_worker_stops_the_sweep_and_leaves_nothing_running(tmp_path):
    """loky cannot lose a worker and go on: the sweep stops with one line, every run of the sweep
    is FINISHED or KILLED (none RUNNING), and the next call resumes and judges the study."""
    returncode, victim, out, err = kill_one_job(tmp_path, "joblib")
    assert returncode == 1, out[-2000:] + err[-3000:]
    assert "zoo-ablate: the launcher stopped the sweep: TerminatedWorkerError" in err, err[-3000:]
    _, parents, children = runs_of(tmp_path)
    seen = f"runs: {[(c.info.run_name, c.info.status, c.data.tags.get('zoo.owner.pid')) for c in children]}\n{err[-3000:]}"
    assert {c.info.run_id: c.info.status for c in children}[victim.info.run_id] == "KILLED", seen
    assert not [c for c in children if c.info.status == "RUNNING"] and parents[0].info.status == "FAILED", seen
    ablate(tmp_path, *KILL_SWEEP, "--launcher", "joblib")
    _, parents, children = runs_of(tmp_path)
    last = max(parents, key=lambda p: p.info.start_time)
    assert last.info.status == "FINISHED" and "zoo.claim_verdict" in last.data.tags
    assert [c.info.status for c in children].count("FINISHED") == 2


def test_joining_a_ray_cluster_refuses_what_ray_refuses_before_anything_starts(tmp_path):
    """Ray refuses num_cpus, object_store_memory, … when ray.init joins a cluster (issue 22): an
    override that sets one is one line and exit 2; nothing answering at --address too, fast."""
    from zoo.launch.launchers import refused_when_joining

    refused_when_joining(["+hydra.launcher.ray.init.object_store_memory=null", "hydra.launcher.ray.remote.num_cpus=2"])
    with pytest.raises(SpecError, match="Ray refuses num_cpus when it joins an existing cluster"):
        refused_when_joining(["+hydra.launcher.ray.init.num_cpus=4"])
    from zoo.tracking.server import free_port

    for extra, says in ((["+hydra.launcher.ray.init.object_store_memory=1e8"], "Ray refuses object_store_memory"),
                        ([], f"nothing answers at 127.0.0.1:{(port := free_port())}")):
        out = subprocess.run([sys.executable, "-m", "zoo.cli.ablate", STUDY, "--scale", "quick", "--launcher", "ray",
                              "--address", f"127.0.0.1:{port}", *extra], cwd=tmp_path, env=ENV,
                             capture_output=True, text=True, timeout=EVENT_SECONDS)
        assert out.returncode == 2 and says in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "multirun").exists() and not (tmp_path / "mlflow.db").exists()


def test_a_sweep_resolves_its_folder_store_and_environment_where_it_is_launched(tmp_path, monkeypatch):
    """What a worker elsewhere would resolve differently (its own MLFLOW_TRACKING_URI, its own
    working directory) travels with every job as an override, resolved once here (issue 22)."""
    from zoo.cli.precheck import check_command

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZOO_TEST_EXPERIMENT", "team, it's=mine")
    checked = check_command(["-m", "seed=0,1", "hydra.sweep.dir=rel/sweep", "tracking.uri=sqlite:///store/m.db",
                             "tracking.experiment=${oc.env:ZOO_TEST_EXPERIMENT}"])
    assert checked.from_env == ["tracking.experiment"]
    assert checked.shared_overrides() == [f"hydra.sweep.dir='{tmp_path}/rel/sweep'",
                                          f"tracking.uri='sqlite:///{tmp_path}/store/m.db'",
                                          "tracking.experiment='team, it\\'s=mine'"]  # one value, not a sweep
    # a key the sweep varies stays the sweep's (no shared value for it); the store is still made absolute
    varied = check_command(["-m", "tracking.experiment=a,b", "tracking.uri=sqlite:///runs/m.db"])
    assert varied.shared_overrides()[1:] == [f"tracking.uri='sqlite:///{tmp_path}/runs/m.db'"]
    assert check_command(["seed=1"]).shared_overrides() == []  # a single run runs here
