"""Where a study's jobs run: ``zoo-ablate --launcher NAME --jobs N`` as Hydra launcher overrides.

Each launcher is an existing engine (Hydra's basic, joblib, Ray and submitit plugins); this
module only says, per engine, how to run N jobs at once without oversubscribing the cores:
each job gets cores / N TensorFlow threads (``trainer.threads``) and, where the engine schedules
by CPUs (Ray, submitit), asks for that many CPUs. What stays the same whatever the launcher: one
MLflow parent run per sweep, a nested child per job, resume (zoo.tracking.sweep), the verdict
(zoo.studies.callback).

Warm workers: joblib (loky) and Ray keep their worker processes for the whole sweep, so a worker
imports TensorFlow once and then takes job after job; submitit starts a process per job (on
SLURM, each job is a scheduler job). A worker that dies (SIGKILL, the OOM killer, a lost node):
Ray re-runs its task on another worker (``max_retries``) and the dead job's run is ended as
KILLED when the sweep finishes (zoo.tracking.repair); under submitit the other jobs are separate
processes and finish, and the next ``zoo-ablate`` call repairs and resumes.

Joining an existing Ray cluster (``address``): ray.init gets none of the arguments Ray refuses
then (:data:`REFUSED_WHEN_JOINING`); token authentication and the head's answer are checked by
zoo.launch.ray_join before the sweep.

No TensorFlow, Ray or submitit import here: ``zoo-ablate --help`` and argument errors stay fast.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from zoo.config.registry import Registry
from zoo.config.schema import SpecError

LAUNCHERS = Registry("launcher")


@dataclass(frozen=True)
class Placement:
    """How many jobs at once, each with how many threads, and, for Ray, which cluster."""
    jobs: int
    threads: int
    address: str | None = None  # Ray: an existing cluster (HOST:PORT or "auto"); None starts one


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@LAUNCHERS.register("basic", description="one job after another in this process (Hydra's default)")
def basic(p: Placement) -> list[str]:
    return []


@LAUNCHERS.register("joblib", description="N worker processes on this machine (loky; warm: one "
                                          "TensorFlow import per worker)")
def joblib(p: Placement) -> list[str]:
    return ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={p.jobs}", f"trainer.threads={p.threads}"]


@LAUNCHERS.register("ray", description="a Ray cluster: a local one with N x threads CPUs, or "
                                       "--address HOST:PORT (warm workers; a dead worker's job re-runs)")
def ray(p: Placement) -> list[str]:
    out = ["hydra/launcher=ray", f"+hydra.launcher.ray.remote.num_cpus={p.threads}",
           "+hydra.launcher.ray.remote.max_retries=2", f"trainer.threads={p.threads}"]
    if p.address:  # joining: every argument Ray refuses then is set to ray.init's own default
        return out + [f"hydra.launcher.ray.init.address={p.address}",
                      *(f"++hydra.launcher.ray.init.{k}={v}" for k, v in REFUSED_WHEN_JOINING.items())]
    return out + [f"+hydra.launcher.ray.init.num_cpus={p.jobs * p.threads}",
                  "+hydra.launcher.ray.init.include_dashboard=false"]


# ray.init's arguments that Ray 2.60 refuses when it joins an existing cluster (ray/_private/
# worker.py: "When connecting to an existing cluster, ... must not be provided"), with ray.init's
# default, which it accepts. The nodes set these themselves (ray start --num-cpus ...). Hydra's Ray
# launcher sets object_store_memory (75 MiB, for its CI) unless the key is there: there it is, null.
REFUSED_WHEN_JOINING = {"num_cpus": "null", "num_gpus": "null", "resources": "null", "labels": "null",
                        "object_store_memory": "null", "_node_name": "null", "_system_config": "{}",
                        "_enable_object_reconstruction": "false"}


def refused_when_joining(overrides) -> None:
    """SpecError for an extra override that gives ray.init an argument Ray refuses when joining a
    cluster (``--address``), before anything starts: Ray would say so only once the sweep began."""
    for override in overrides:
        key, _, value = str(override).lstrip("+~").partition("=")
        name = key.removeprefix("hydra.launcher.ray.init.")
        if name != key and name in REFUSED_WHEN_JOINING and value.strip() not in ("null", "{}", "false", ""):
            raise SpecError(key, f"Ray refuses {name} when it joins an existing cluster (--address): "
                                 f"each node sets its own (ray start --num-cpus/--num-gpus/--resources/"
                                 f"--object-store-memory ...); drop the override")


def _submitit(kind: str, p: Placement) -> list[str]:
    return [f"hydra/launcher=submitit_{kind}", f"hydra.launcher.cpus_per_task={p.threads}",
            "hydra.launcher.tasks_per_node=1", f"trainer.threads={p.threads}"]


@LAUNCHERS.register("submitit_local", description="submitit on this machine: a process per job, "
                                                  "N at a time (tests the SLURM path without SLURM)")
def submitit_local(p: Placement) -> list[str]:
    # submitit's local executor starts every job it is given at once: the sweeper hands it N
    return _submitit("local", p) + [f"hydra.sweeper.max_batch_size={p.jobs}"]


@LAUNCHERS.register("submitit_slurm", description="a SLURM job per study job (sbatch); partition "
                                                  "etc. as hydra.launcher.* overrides")
def submitit_slurm(p: Placement) -> list[str]:
    # zoo.launch.slurm.overrides adds, once the jobs are known, its launcher (waits for every job, with
    # or without sacct) and the memory each job asks for (its estimate)
    return _submitit("slurm", p) + [f"hydra.launcher.array_parallelism={p.jobs}"]


def launcher_overrides(name: str | None, jobs: int | None, address: str | None = None,
                       threads: int | None = None) -> list[str]:
    """The Hydra overrides that run a sweep's jobs with ``name``, ``jobs`` at a time, each with
    ``threads`` TensorFlow threads (default: this machine's cores / jobs; 1 on a remote cluster,
    where the cores are not ours to count). No name: the basic launcher for one job at a time,
    joblib for more (``--jobs 2`` alone, as before). Bad combinations raise SpecError."""
    for flag, value in (("--jobs", jobs), ("--threads", threads)):
        if value is not None and value < 1:
            raise SpecError(flag, f"must be >= 1, got {value}")
    if name is None:
        name = "joblib" if (jobs or 1) > 1 else "basic"
    entry = LAUNCHERS.get(name)  # an unknown name lists the launchers
    if address and name != "ray":
        raise SpecError("--address", f"is a Ray cluster's address; it needs --launcher ray, not {name}")
    if name == "basic" and (jobs or 1) > 1:
        raise SpecError("--jobs", f"the basic launcher runs one job at a time, got {jobs}; "
                                  f"use --launcher joblib, ray or submitit_local")
    remote = bool(address) or name == "submitit_slurm"
    jobs = jobs or (1 if name == "basic" else 256 if name == "submitit_slurm" else cores())
    threads = threads or (1 if remote else max(1, cores() // jobs))
    return entry.builder(Placement(jobs, threads, address))
