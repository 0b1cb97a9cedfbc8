"""Finding runs again: the config hash that makes a sweep resumable, and records for claims.

A run is tagged ``zoo.config_hash``: a digest of its resolved config without the keys that do
not change what is trained (``tracking``, ``study``, ``trainer.threads``: with op determinism a
depth-10 MLP gave bit-identical losses at 1 and 2 threads). Same hash = same model, data, optimizer,
budget and seed, so with op determinism the same numbers; a re-run study skips a job whose hash
already has a FINISHED run (diverged runs included: they would diverge again).
"""
from __future__ import annotations

import hashlib
import json
import math

NOT_TRAINING = ("tracking", "study")
EXECUTION_ONLY = ("threads",)  # trainer keys that change how fast, not what is computed


def config_hash(resolved: dict) -> str:
    kept = {k: v for k, v in resolved.items() if k not in NOT_TRAINING}
    if isinstance(kept.get("trainer"), dict):
        kept["trainer"] = {k: v for k, v in kept["trainer"].items() if k not in EXECUTION_ONLY}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:20]


def client(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def experiment_id(c, name: str, uri: str) -> str:
    """The experiment's id, created on first use with its artifacts beside a sqlite store."""
    from mlflow.exceptions import MlflowException

    from zoo.tracking.mlflow_sink import artifact_root_for

    found = c.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return c.create_experiment(name, artifact_location=artifact_root_for(uri))
    except MlflowException:  # created by a concurrent job in between
        return c.get_experiment_by_name(name).experiment_id


def find_finished(uri: str, experiment: str, digest: str) -> str | None:
    """The newest FINISHED run of this experiment with this config hash, if any."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return None
    found = c.search_runs([exp.experiment_id],
                          f"tags.`zoo.config_hash` = '{digest}' and attributes.status = 'FINISHED'",
                          order_by=["attributes.start_time DESC"], max_results=1)
    return found[0].info.run_id if found else None


def records(uri: str, run_ids: list[str]):
    """Claim-checker records of these runs (their params, final metric values, status, outcome)."""
    from zoo.report.claims import RunRecord

    c, out = client(uri), []
    for run_id in run_ids:
        run = c.get_run(run_id)
        tags = run.data.tags
        outcome = tags.get("zoo.outcome") or ("failed" if run.info.status != "FINISHED" else "finished")
        step = tags.get("zoo.diverged_step")
        metrics = {k: v for k, v in run.data.metrics.items() if not math.isnan(v)}
        out.append(RunRecord(run_id=run_id, params=dict(run.data.params), metrics=metrics,
                             status=run.info.status, outcome=outcome, error=tags.get("zoo.error"),
                             diverged_step=int(step) if step else None))
    return out
