"""What a run must record to be reproduced (package versions, the code's git commit) and who
owns it while it is open (host, pid, heartbeat: zoo.tracking.repair)."""
from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from zoo.tracking.repair import owner_tags

PACKAGES = ("gradzoo", "tensorflow", "keras", "numpy", "hydra-core", "omegaconf", "mlflow",
            "scikit-learn", "matplotlib")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _git(*args: str, cwd: Path) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_state() -> dict[str, str]:
    """Commit of the checkout that holds the zoo package (an editable install), else of the
    working directory; ``unknown`` for an installed wheel outside any repository."""
    for where in (Path(__file__).resolve().parents[2], Path.cwd()):
        commit = _git("rev-parse", "HEAD", cwd=where)
        if commit:
            dirty = bool(_git("status", "--porcelain", "--untracked-files=no", cwd=where))
            return {"commit": commit, "dirty": str(dirty).lower()}
    return {"commit": "unknown", "dirty": "unknown"}


def launcher(choices=None) -> str:
    """The Hydra launcher this process runs under (basic, joblib, ray, submitit_local, ...);
    ``none`` outside Hydra (a notebook calling zoo.training.run). ``choices``: a config's
    ``hydra.runtime.choices``, for the launching process, where Hydra sets HydraConfig only
    after ``on_multirun_start``."""
    if choices is None:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return "none"
        choices = HydraConfig.get().runtime.choices
    return str(choices.get("hydra/launcher", "basic"))


def slurm_job_id() -> str | None:
    """This SLURM job as ``scancel`` and ``squeue`` name it: ``ARRAYJOB_TASK`` in an array (the
    ``SLURM_JOB_ID`` of an array task is an internal number: cancelling that number can hit
    another task), the plain id otherwise; None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def tags(seed: int) -> dict[str, str]:
    """Reproduction (versions, commit) and where the run ran: ``zoo.launcher`` beside the owner's
    host and pid (a Ray or SLURM worker on another machine names itself)."""
    git = git_state()
    out = {"zoo.seed": str(seed), "zoo.git_commit": git["commit"], "zoo.git_dirty": git["dirty"],
           "zoo.launcher": launcher()}
    if job := slurm_job_id():  # 5_1 for an array task, as scancel and squeue name it
        out["zoo.slurm_job_id"] = job
    out.update({f"zoo.version.{k}": v for k, v in versions().items()})
    out.update(owner_tags())
    out.update(ray_node())
    return {**source_tags(), **out}


def ray_node() -> dict[str, str]:
    """In a Ray worker, the node that took the job: ``zoo.ray.node_id`` (Ray's id: several raylets
    can share a host, so ``zoo.owner.host`` alone does not say which) and ``zoo.ray.node_ip``;
    nothing elsewhere. Ray is only looked up, never imported."""
    import sys

    ray = sys.modules.get("ray")
    try:
        if ray is None or not ray.is_initialized():
            return {}
        from ray.util import get_node_ip_address

        return {"zoo.ray.node_id": ray.get_runtime_context().get_node_id(), "zoo.ray.node_ip": get_node_ip_address()}
    except Exception:  # where a job ran is a note, never a reason to fail it
        return {}


def source_tags() -> dict[str, str]:
    """What MLflow's fluent ``start_run`` records about where a run comes from, which a run made
    with ``MlflowClient.create_run`` (as the zoo's are) lacks: ``mlflow.user`` (the UI's
    *Created by* and *User*), ``mlflow.source.name`` and ``.type`` (the runs table's *Source*: the
    command, e.g. ``zoo-train``), and the git commit where there is one. From MLflow's own run
    context providers (``mlflow.tracking.context.registry.resolve_tags``)."""
    from mlflow.tracking.context import registry

    resolved = registry.resolve_tags()
    if resolved.get("mlflow.source.name"):  # the program's path: its name is what users typed
        resolved["mlflow.source.name"] = Path(resolved["mlflow.source.name"]).name
    return {k: str(v) for k, v in resolved.items()}
