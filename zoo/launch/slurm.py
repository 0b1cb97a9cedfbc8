"""SLURM through Hydra's submitit launcher: what a job asks for, what it is called, how the
launching side waits for it. (``zoo-ablate --launcher submitit_slurm``; zoo.launch.launchers.)

Hydra's submitit plugin submits one job array and then waits for the jobs *in order*, raising at
the first one that has no result: a job cancelled (``scancel``) or preempted stopped the sweep
while the other jobs still ran, and their records then landed on a parent already ended FAILED.
It asks submitit for each job's state, which asks ``sacct``; without job accounting that fails
("Bypassing sacct error") and a job that ended without a result was waited for forever.
:func:`launch` (hydra_plugins.zoo_slurm.SlurmLauncher, the ``_target_`` :func:`overrides`
sets) submits the same way and waits for *every* job, asking ``squeue --states=all`` (slurmctld answers from memory for
``MinJobAge`` seconds, 300 by default, with or without accounting). A job whose SLURM job ended
without a result (cancelled, preempted, timed out, out of memory, a lost node) is one failed job
of the sweep: its record on the parent says what SLURM said, its run if still RUNNING is ended
KILLED, and the sweep goes on to judge the rest (exit 3; 1 when every job failed). Ctrl-C on
the launching side cancels the jobs still queued or running.

Inside the job, submitit ignores SIGTERM (it expects USR2 before a time limit): zoo.runtime.stopping
takes SIGTERM back, so a cancelled or preempted job ends its run KILLED with
``zoo.killed=SIGTERM`` within SLURM's ``KillWait`` (30 s by default) instead of being SIGKILLed
mid-write, and keeps the raise of submitit's time-limit handler from being swallowed.

Memory: on a cluster where memory is a consumable resource (``SelectTypeParameters=CR_*_Memory``,
the common case), a job that asks for none gets ``DefMemPerCPU``, or the whole node when the
site set none, and N jobs then run one after another. :func:`overrides` asks for the
largest estimate (zoo.config.budget) among the sweep's jobs, times :data:`MEMORY_MARGIN`, unless the
command says how much already.
"""
from __future__ import annotations

import json
import logging
import math
import subprocess
import time
from pathlib import Path
from zoo.models import estimate
from zoo.tracking.repair import _end
from zoo.tracking.runs import client
from zoo.tracking.sweep import JOB_TAG, SWEEP_FILE

log = logging.getLogger("zoo")

MEMORY_MARGIN = 1.5  # zoo.config.budget errs low on purpose (it refuses what cannot fit); cgroups kill what is over
MEMORY_KEYS = ("hydra.launcher.mem_gb", "hydra.launcher.mem_per_cpu", "hydra.launcher.mem_per_gpu",
               "hydra.launcher.additional_parameters.mem")
ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED",
          "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}
LAUNCHER = "hydra_plugins.zoo_slurm.SlurmLauncher"  # Hydra takes launchers from hydra_plugins only
RESULT_GRACE_S = 15.0  # a result written on another node may show up late (NFS)


def memory_gb(specs) -> int | None:
    """Whole GB (what ``hydra.launcher.mem_gb`` takes; SLURM's G is GiB) for the largest job of
    ``specs`` (zoo.training.spec.RunSpec): zoo.config.budget's estimate times MEMORY_MARGIN, rounded up; None
    when no job has an estimate."""
    need = []
    for spec in specs:
        est = estimate(spec.model.name, spec.model, spec.data.name, spec.data)
        if est is not None:
            need.append(est.bytes(spec.trainer.batch_size))
    return math.ceil(max(need) * MEMORY_MARGIN / 2**30) if need else None


def overrides(specs, command: list[str]) -> list[str]:
    """What a SLURM sweep of ``specs`` adds to its ``command`` (Hydra overrides; nothing for
    another launcher): this module's launcher, and ``hydra.launcher.mem_gb=N``, each unless
    the command sets it already (the memory in any of its forms: sbatch refuses two of --mem,
    --mem-per-cpu, --mem-per-gpu)."""
    if "hydra/launcher=submitit_slurm" not in command:
        return []
    keys = {o.lstrip("+~").split("=", 1)[0] for o in command}
    out = [] if "hydra.launcher._target_" in keys else [f"hydra.launcher._target_={LAUNCHER}"]
    gb = None if keys & set(MEMORY_KEYS) else memory_gb(specs)
    return out + ([f"hydra.launcher.mem_gb={gb}"] if gb else [])


def states(ids: list[str]) -> dict[str, str] | None:
    """SLURM's state of each job in ``ids`` (``ARRAY_TASK`` or plain ids) that slurmctld still
    knows, from ``squeue --states=all`` (no accounting needed); None when squeue fails."""
    arrays = sorted({i.split("_")[0] for i in ids})
    try:
        out = subprocess.run(["squeue", "--noheader", "--array", "--states=all", "--jobs", ",".join(arrays),
                              "--format=%i|%T"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("squeue failed (asking again): %s", err)
        return None
    if out.returncode != 0:
        if "Invalid job id" in out.stderr:  # every job of ours is gone from slurmctld's memory
            return {}
        log.warning("squeue failed (asking again): %s", out.stderr.strip())
        return None
    found = dict(line.split("|", 1) for line in out.stdout.split() if "|" in line)
    return {i: found[i] for i in ids if i in found}


# --- the launcher -------------------------------------------------------------------------------
def launch(launcher, job_overrides, initial_job_idx):
    """``SlurmLauncher.launch`` (hydra_plugins.zoo_slurm): submit the jobs as Hydra's submitit
    launcher does (hydra-submitit-launcher 1.2's ``launch``), then wait for every one of them."""
    import submitit
    from hydra.core.singleton import Singleton
    from hydra.core.utils import filter_overrides
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    params = launcher.params
    init = {"folder": params["submitit_folder"]}
    if "max_num_timeout" in params:
        init["slurm_max_num_timeout"] = params["max_num_timeout"]
    executor = submitit.AutoExecutor(cluster="slurm", **init)
    base_keys = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base_keys else f"slurm_{k}": v for k, v in params.items()
                                  if k not in ("submitit_folder", "max_num_timeout")})
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    job_params = []
    for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
    jobs = executor.map_array(launcher, *zip(*job_params))
    log.info("SLURM jobs %s", ", ".join(j.job_id for j in jobs))
    try:
        ended = wait(jobs)
    except BaseException:  # Ctrl-C, SIGTERM: the sweep is over, so are its jobs
        for job in jobs:
            try:
                job.cancel(check=False)
            except Exception:
                pass
        raise
    return [_result(job, state, idx, list(overrides), sweep_dir)
            for idx, ((job, state), overrides) in enumerate(zip(ended, job_overrides), start=initial_job_idx)]


def wait(jobs, poll_s: float = 2.0) -> list[tuple[object, str]]:
    """Wait until every job has a result file or SLURM says it ended; (job, SLURM state) each,
    ``RESULT`` for a job whose result is in, in the order given."""
    ended: dict[str, str] = {}
    gone_since: dict[str, float] = {}
    while len(ended) < len(jobs):
        pending = [j for j in jobs if j.job_id not in ended]
        known = states([j.job_id for j in pending])
        for job in pending:
            if job.paths.result_pickle.exists():
                ended[job.job_id] = "RESULT"
                continue
            if known is None:
                continue
            state = known.get(job.job_id, "GONE")  # purged after MinJobAge: squeue no longer knows it
            if state in ACTIVE:
                gone_since.pop(job.job_id, None)
                continue
            first = gone_since.setdefault(job.job_id, time.monotonic())
            if state not in ("COMPLETED", "FAILED") or time.monotonic() - first >= RESULT_GRACE_S:
                ended[job.job_id] = state  # a job that ran to its end wrote a result: give it time to show
        if len(ended) < len(jobs):
            time.sleep(poll_s if known is not None else 30.0)  # slurmctld down: ask less often
    return [(j, ended[j.job_id]) for j in jobs]


def _result(job, state: str, num: int, overrides: list[str], sweep_dir: Path):
    """Hydra's JobReturn of one job: its own, or, for a job that ended without one or raised
    outside the zoo's job function, a completed job whose failure is recorded on the sweep's
    parent (so the sweep goes on and counts it)."""
    from hydra.core.utils import JobReturn, JobStatus
    from submitit.core.utils import pickle_load

    if state == "RESULT":
        outcome, value = pickle_load(job.paths.result_pickle)
        if outcome == "success" and getattr(value, "status", None) != JobStatus.FAILED:
            return value
        if outcome == "success":  # Hydra's run_job caught what the job function did not (e.g. submitit's
            error = value._return_value  # timeout exception before the run began)
            lines = [f"{type(error).__name__}: {error}"]
        else:  # a traceback: the job failed before Hydra's run_job (an import on the node, say)
            lines = [line for line in str(value).strip().splitlines() if line.strip()]
        why = f"SLURM job {job.job_id} raised outside its run: {lines[-1] if lines else '?'} (log: {job.paths.stderr})"
    else:
        ended = "left the queue (squeue no longer knows it)" if state == "GONE" else f"ended {state}"
        why = (f"SLURM job {job.job_id} {ended} without a result (scancel, preemption, the time limit, "
               f"memory or a lost node; its log: {job.paths.stderr})")
    log.error("job %d: %s", num, why)
    _record_lost(sweep_dir, num, job.job_id, why)
    return JobReturn(overrides=overrides, status=JobStatus.COMPLETED, _return_value=None, task_name="train")


def _record_lost(sweep_dir: Path, num: int, slurm_id: str, why: str) -> None:
    """Say on the sweep's parent run why job ``num`` failed (keeping the run id the job may have
    recorded itself), and end its run KILLED if it is still RUNNING (its process is gone: SLURM
    says so, no need to wait for a stale heartbeat)."""
    path = sweep_dir / SWEEP_FILE
    if not path.is_file():  # no MLflow: zoo.tracking.sweep counts the job as one that left no record
        return
    found = json.loads(path.read_text())
    c = client(found["uri"])
    parent = c.get_run(found["parent_run_id"])
    key = f"{JOB_TAG}{num:05d}"
    record = json.loads(parent.data.tags.get(key, "{}"))
    if record.get("error"):  # the job said why itself (e.g. stopped by SIGTERM): add SLURM's word
        record["error"] = f"{record['error']}; {why}"[:2000]
    else:
        record = {"job": num, **{k: v for k, v in record.items() if k == "run_id"}, "error": why[:2000]}
    c.set_tag(parent.info.run_id, key, json.dumps(record))
    running = c.search_runs([parent.info.experiment_id],
                            f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and "
                            f"tags.`zoo.slurm_job_id` = '{slurm_id}' and attributes.status = 'RUNNING'")
    for run in running:
        _end(c, run.info.run_id, "KILLED", {"zoo.outcome": "killed", "zoo.killed": f"SLURM: {why}"[:5000],
                                            "zoo.repaired": f"{int(time.time())}: {why}"[:5000]})
