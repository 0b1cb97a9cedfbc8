"""A worker killed mid-sweep costs only its own run, which ends KILLED, not RUNNING: Ray re-runs
the job, submitit stops the sweep and the next call resumes (joblib's case: test_launchers.py,
beside which these run in the other test worker)."""
import pytest

from conftest import runs_of, wait_for
from test_launchers import KILL_SWEEP, ablate, kill_one_job
from zoo.tracking.names import judged


@pytest.mark.slow
def test_a_killed_ray_worker_costs_only_its_run(tmp_path):
    """SIGKILL one worker mid-job: Ray re-runs that job on a fresh worker, the other jobs finish,
    the study is judged on complete runs, and the killed run ends KILLED (zoo.repaired), not RUNNING."""
    returncode, victim, out, err = kill_one_job(tmp_path, "ray", "seed=0,1")
    assert returncode == 0, out[-2000:] + err[-3000:]
    _, parents, children = runs_of(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    killed = [c for c in children if c.info.status == "KILLED"]
    assert [c.info.run_id for c in killed] == [victim.info.run_id]
    assert killed[0].data.tags["zoo.outcome"] == "killed" and "zoo.repaired" in killed[0].data.tags
    assert victim.info.run_id in parents[0].data.tags["zoo.jobs_killed"]
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len(finished) == 4  # 2 variants x 2 seeds, the killed one re-run
    assert not [c for c in children if c.info.status == "RUNNING"]
    assert any(c.info.run_name == judged(victim.info.run_name, c.data.tags["zoo.verdict"]) for c in finished)


@pytest.mark.slow
def test_a_killed_submitit_job_is_killed_and_the_next_call_resumes(tmp_path):
    """submitit reports a lost job by raising: the sweep stops with one line (no traceback), the
    lost run is KILLED, the other job's process finishes on its own, and the next call re-runs
    only the lost job and judges the study."""
    returncode, victim, out, err = kill_one_job(tmp_path, "submitit_local")
    assert returncode == 1, out[-2000:] + err[-3000:]
    assert "zoo-ablate: the launcher stopped the sweep: UncompletedJobError" in err
    assert "Traceback" not in err and "same zoo-ablate command resumes" in err
    wait_for("the other job, which runs on in its own process, to end its run", lambda: not [
        c for c in runs_of(tmp_path)[2] if c.info.status == "RUNNING"], poll=1)
    _, parents, children = runs_of(tmp_path)
    seen = [(c.info.run_name, c.info.status, c.data.tags.get("zoo.repaired")) for c in children]
    assert {c.info.run_id: c.info.status for c in children}[victim.info.run_id] == "KILLED", (seen, err[-2000:])
    assert [c.info.status for c in children].count("FINISHED") == 1, (seen, err[-2000:])
    assert parents[0].info.status == "FAILED", (parents[0].data.tags.get("zoo.error"), err[-2000:])
    resumed = ablate(tmp_path, *KILL_SWEEP, "--launcher", "submitit_local")
    assert "reproduced" in resumed.stdout or "inconclusive" in resumed.stdout
    _, parents, children = runs_of(tmp_path)
    last = max(parents, key=lambda p: p.info.start_time)
    assert last.info.status == "FINISHED" and last.data.tags["zoo.jobs_reused"] == "1"
    assert [c.info.status for c in children].count("FINISHED") == 2
