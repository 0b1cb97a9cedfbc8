"""A study on a real SLURM: ``zoo-ablate --launcher submitit_slurm`` against a single-node
cluster (munge, slurmctld, slurmd; no job accounting) that ``.ci/slurm`` sets up on this machine
and stops afterwards. Jobs ask for memory and run side by side, are tagged with the array id
``scancel`` takes, a cancelled job ends its run KILLED by itself and costs only its own job, and
the same command resumes it. The store is the sqlite file in the launching folder, which the
jobs reach because they run on this machine (README "Running on a cluster")."""
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, output, runs_of, training_jobs

# the cluster tests are slow; no SLURM there is a failure that says what to run, not a skip

SCRIPT = REPO / ".ci" / "slurm"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1",
       # the jobs import the zoo from this checkout, as the launching process does
       "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
SWEEP = ["input_scaling", "--scale", "quick", "--launcher", "submitit_slurm", "--jobs", "2",
         "trainer.epochs=100"]  # 2 jobs, long enough (~30 s of training) to be cancelled mid-run


@pytest.fixture(scope="module")
def slurm():
    """SLURM on this machine for the module: ``.ci/slurm start`` unless it runs already, and
    ``.ci/slurm stop`` after (only what it started); jobs left behind are cancelled."""
    started = subprocess.run([SCRIPT, "status"], capture_output=True).returncode != 0
    if started:
        up = subprocess.run([SCRIPT, "start"], capture_output=True, text=True, timeout=900)
        assert up.returncode == 0, f".ci/slurm start failed (root or sudo needed):\n{up.stdout}{up.stderr}"
    before = set(squeue())
    try:
        yield
    finally:
        left = set(squeue()) - before
        if left:
            subprocess.run(["scancel", *sorted(left)], capture_output=True)
        if started:
            subprocess.run([SCRIPT, "stop"], capture_output=True, timeout=120)


def squeue(fields: str = "%i") -> list[str]:
    out = subprocess.run(["squeue", "--noheader", "--array", f"--format={fields}"], capture_output=True,
                         text=True, timeout=60)
    return out.stdout.split()


def ablate(cwd: Path, *extra: str) -> subprocess.Popen:
    with open(cwd / "stdout.txt", "w") as out, open(cwd / "stderr.txt", "w") as err:
        return subprocess.Popen([sys.executable, "-m", "zoo.cli.ablate", *SWEEP, *extra], cwd=cwd, env=ENV,
                                stdout=out, stderr=err, text=True)


def wait_both_training(sweep: subprocess.Popen, cwd: Path, timeout: float = 180) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(training := training_jobs(cwd / "mlflow.db")) < 2:
        assert sweep.poll() is None, output(cwd)
        assert time.monotonic() < deadline, "the two jobs never trained at once\n" + output(cwd) \
            + "\nsqueue: " + " ".join(squeue("%i|%T|%m|%C|%r"))
        time.sleep(0.5)
    return training


def tags_of(cwd: Path, run_id: str) -> dict:
    client, _, _ = runs_of(cwd)
    return client.get_run(run_id).data.tags


@pytest.mark.slow
def test_a_study_on_slurm_runs_side_by_side_survives_a_cancelled_job_and_resumes(slurm, tmp_path):
    accounting = subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, text=True)
    assert accounting.returncode != 0  # the zoo must not need sacct: this cluster has none
    started = time.monotonic()
    sweep = ablate(tmp_path)
    try:
        # both jobs train at once on the 2-CPU node: each asked for its memory, not the node's
        training = wait_both_training(sweep, tmp_path)
        queue = squeue("%i|%T|%m|%C")
        assert len([j for j in queue if "|RUNNING|2G|1" in j]) == 2, queue  # 2 GB each: 790 MiB x 1.5
        ids = {tags_of(tmp_path, r)["zoo.slurm_job_id"]: r for r in training}
        assert all(re.fullmatch(r"\d+_[01]", i) for i in ids), ids  # the array task, as scancel takes it
        # cancel job 0, the one Hydra's launcher would wait for first, by the id its run carries
        victim_id = next(i for i in ids if i.endswith("_0"))
        victim = ids[victim_id]
        subprocess.run(["scancel", victim_id], check=True)
        cancelled = time.time()
        sweep.wait(timeout=300)
        ended = time.time()
    finally:
        if sweep.poll() is None:
            sweep.kill()
    first_seconds = time.monotonic() - started
    err = output(tmp_path)
    assert sweep.returncode == 3, err  # some jobs failed: judged without them
    assert "sweep finished with failures: 1 of 2 jobs failed" in err
    assert f"SLURM job {victim_id} ended CANCELLED without a result" in err
    client, parents, children = runs_of(tmp_path)
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    seen = [(c.info.run_name, c.info.status, c.data.tags.get("zoo.killed")) for c in children]
    killed = client.get_run(victim)
    # ended by the job itself on SIGTERM (not a repair after SIGKILL), within SLURM's KillWait
    assert killed.info.status == "KILLED" and killed.data.tags["zoo.killed"] == "SIGTERM", seen
    assert killed.data.tags["zoo.outcome"] == "killed" and "zoo.repaired" not in killed.data.tags
    other = next(c for c in children if c.info.run_id != victim)
    assert other.info.status == "FINISHED" and other.data.tags["zoo.outcome"] == "finished", seen
    # the launcher waited for the other job: its run ended before the parent did, its record is there
    assert parent.info.status == "FINISHED" and other.info.end_time <= parent.info.end_time
    records = {int(k.rsplit(".", 1)[1]): json.loads(v) for k, v in parent.data.tags.items()
               if k.startswith("zoo.job.")}
    assert records[1]["run_id"] == other.info.run_id and not records[1].get("error")
    assert records[0]["run_id"] == victim and "stopped by SIGTERM" in records[0]["error"]
    assert "CANCELLED" in records[0]["error"] and parent.data.tags["zoo.jobs_failed"] == "1"
    # the two jobs ran at the same time, on this host, under SLURM, into the launching folder's store
    a, b = killed.info, other.info
    assert a.start_time < b.end_time and b.start_time < a.end_time
    for run in (killed, other):
        assert run.data.tags["zoo.owner.host"] == socket.gethostname()
        assert run.data.tags["zoo.launcher"] == "submitit_slurm"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert {killed.data.tags["zoo.slurm_job_id"], other.data.tags["zoo.slurm_job_id"]} == set(ids)

    started = time.monotonic()
    resumed = ablate(tmp_path)
    resumed.wait(timeout=600)
    resume_seconds = time.monotonic() - started
    err = output(tmp_path)
    assert resumed.returncode == 0, err
    assert "sweep finished: all 2 jobs finished (1 reused)" in err + (tmp_path / "stdout.txt").read_text()
    client, parents, children = runs_of(tmp_path)
    last = max(parents, key=lambda p: p.info.start_time)
    assert last.info.status == "FINISHED" and last.data.tags["zoo.jobs_reused"] == "1"
    rerun = [c for c in children if c.info.run_id not in (victim, other.info.run_id)]
    assert len(rerun) == 1 and rerun[0].info.status == "FINISHED"  # only the cancelled job ran again
    assert rerun[0].data.params["data.standardize"] == killed.data.params["data.standardize"]
    assert re.fullmatch(r"\d+_0", rerun[0].data.tags["zoo.slurm_job_id"])
    # the store: nothing RUNNING, nothing FINISHED without an outcome
    for run in [*parents, *children]:
        assert run.info.status != "RUNNING", run.info.run_name
    for run in children:
        assert run.info.status != "FINISHED" or run.data.tags.get("zoo.outcome") in ("finished", "diverged")
    assert not squeue()  # no job of ours left in the queue
    print(f"\nfirst call with a cancelled job: {first_seconds:.1f} s (the cancelled run ended "
          f"{a.end_time / 1000 - cancelled:.1f} s after scancel, the sweep {ended - cancelled:.1f} s after; "
          f"the other run {(b.end_time - b.start_time) / 1000:.1f} s); resume: {resume_seconds:.1f} s")


@pytest.mark.slow
def test_jobs_warned_of_their_time_limit_fail_with_the_reason_and_the_sweep_exits_1(slurm, tmp_path):
    """SLURM warns a job ``signal_delay_s`` before its time limit with USR2 (sent here by hand, as
    ``scancel --signal``, not after a minute's wait); with ``max_num_timeout=0`` (the default)
    submitit does not resubmit it: each run ends FAILED saying so, and a sweep whose jobs all
    failed exits 1 with its parent FAILED."""
    # the limit 2 min, the warning due 10 s before it (SLURM may send it up to 60 s early); sent at ~25 s
    sweep = ablate(tmp_path, "hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=10",
                   "trainer.epochs=400")  # still training when the warning comes
    try:
        training = wait_both_training(sweep, tmp_path)
        ids = [tags_of(tmp_path, run)["zoo.slurm_job_id"] for run in training]
        subprocess.run(["scancel", "--signal=USR2", *ids], check=True)  # the array's id signals one task only
        sweep.wait(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    err = output(tmp_path)
    assert sweep.returncode == 1 and "sweep failed: all 2 jobs failed" in err, err
    _, parents, children = runs_of(tmp_path)
    assert parents[0].info.status == "FAILED" and len(children) == 2
    for run in children:
        assert run.info.status == "FAILED", run.data.tags
        assert run.data.tags["zoo.outcome"] == "failed"
        assert "timed-out" in run.data.tags["zoo.error"], run.data.tags["zoo.error"]
    assert not squeue()


@pytest.mark.slow
def test_stopping_the_launching_process_cancels_its_jobs(slurm, tmp_path):
    """SIGTERM (or Ctrl-C) to zoo-ablate on the login node: its SLURM jobs are cancelled, their
    runs and the parent end KILLED with zoo.killed=SIGTERM, nothing is left queued or RUNNING."""
    sweep = ablate(tmp_path)
    try:
        wait_both_training(sweep, tmp_path)
        sweep.terminate()
        sweep.wait(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert sweep.returncode == 143, output(tmp_path)
    deadline = time.monotonic() + 60  # the jobs end their runs within KillWait
    while squeue() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not squeue()
    _, parents, children = runs_of(tmp_path)
    for run in [*parents, *children]:
        assert run.info.status == "KILLED" and run.data.tags["zoo.killed"] == "SIGTERM", run.data.tags
    assert len(children) == 2


def test_the_slurm_job_id_is_the_array_task_scancel_takes(monkeypatch):
    from zoo.tracking.provenance import slurm_job_id

    for key in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(key, raising=False)
    assert slurm_job_id() is None
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert slurm_job_id() == "7"
    monkeypatch.setenv("SLURM_JOB_ID", "4")  # SLURM's internal number of task 1 of array 3
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert slurm_job_id() == "3_1"


def test_a_slurm_sweep_asks_for_its_jobs_memory_unless_told():
    from zoo.launch import slurm
    from zoo.cli.ablate import hydra_argv
    from zoo.launch.launchers import launcher_overrides
    from zoo.cli.precheck import check_command

    argv = hydra_argv("input_scaling", "quick", launcher_overrides("submitit_slurm", 2), False, [])
    specs = check_command(list(argv)).specs
    assert slurm.overrides(specs, argv) == ["hydra.launcher._target_=hydra_plugins.zoo_slurm.SlurmLauncher",
                                            "hydra.launcher.mem_gb=2"]  # 790 MiB x 1.5, whole GB
    assert slurm.overrides(specs, argv + ["hydra.launcher.mem_per_cpu=4G"]) == [slurm.overrides(specs, argv)[0]]
    assert slurm.overrides(specs, argv + ["+hydra.launcher.additional_parameters.mem=3G"])[1:] == []
    assert slurm.overrides(specs, hydra_argv("input_scaling", "quick", [], False, [])) == []


def test_submitits_ignored_sigterm_is_taken_back(monkeypatch):
    """submitit's job runner logs "Bypassing signal SIGTERM" and goes on; the zoo's handler ends
    the run instead (zoo.runtime.stopping), before SLURM's SIGKILL."""
    import signal

    from submitit.core.job_environment import SignalHandler

    from zoo.runtime import stopping

    before = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, SignalHandler.__new__(SignalHandler).bypass)
        stopping.install()
        assert signal.getsignal(signal.SIGTERM) == stopping._on_sigterm
        mine = lambda *_: None  # noqa: E731  someone else's handler stays
        signal.signal(signal.SIGTERM, mine)
        stopping.install()
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, before)


def test_a_repeated_sigterm_does_not_cut_the_runs_last_writes_short():
    """scancel's SIGTERM reaches the job twice (directly and through srun): the second must not
    raise inside the run's report writing; a swallowed first one is still raised by check()."""
    from zoo.runtime import stopping

    stopping.reset()
    try:
        with pytest.raises(stopping.Terminated):
            stopping._on_sigterm(None, None)
        stopping._on_sigterm(None, None)  # the repeat: recorded, not raised
        with pytest.raises(stopping.Terminated):
            stopping.check()
    finally:
        stopping.reset()


def test_waiting_ends_for_a_job_that_left_the_queue_without_a_result(monkeypatch, tmp_path):
    """No sacct needed: squeue's last word (or the job's absence) ends the wait; a job that ran
    to its end gets RESULT_GRACE_S for its result file to show."""
    from types import SimpleNamespace

    from zoo.launch import slurm

    def job(name):
        return SimpleNamespace(job_id=name, paths=SimpleNamespace(result_pickle=tmp_path / f"{name}.pkl"))

    jobs = [job("3_0"), job("3_1"), job("3_2"), job("3_3")]
    (tmp_path / "3_3.pkl").write_text("x")
    answers = iter([{"3_0": "CANCELLED", "3_1": "RUNNING", "3_2": "COMPLETED"},
                    {"3_1": "RUNNING", "3_2": "COMPLETED"}, {}, {}, {}])
    monkeypatch.setattr(slurm, "states", lambda ids: next(answers))
    monkeypatch.setattr(slurm, "RESULT_GRACE_S", 0.05)
    ended = slurm.wait(jobs, poll_s=0.05)
    assert [state for _, state in ended] == ["CANCELLED", "GONE", "COMPLETED", "RESULT"]


def test_a_job_that_failed_outside_its_run_is_a_failed_job_not_the_end_of_the_sweep(tmp_path):
    """Hydra's run_job hands back what the job function raised (submitit's timeout exception
    when SLURM warns before the run began, e.g. ``timeout_min`` under ``signal_delay_s``); the
    sweep counts it as one failed job instead of stopping at it."""
    from types import SimpleNamespace

    from hydra.core.utils import JobReturn, JobStatus
    from submitit.core.utils import UncompletedJobError, cloudpickle_dump

    from zoo.launch import slurm

    pickle = tmp_path / "3_0_result.pkl"
    cloudpickle_dump(("success", JobReturn(status=JobStatus.FAILED, _return_value=UncompletedJobError(
        "Job not requeued because: timed-out too many times."))), pickle)
    job = SimpleNamespace(job_id="3_0", paths=SimpleNamespace(result_pickle=pickle, stderr=tmp_path / "log"))
    back = slurm._result(job, "RESULT", 0, ["seed=0"], tmp_path)  # no MLflow: nothing to record
    assert back.status == JobStatus.COMPLETED and back.return_value is None
