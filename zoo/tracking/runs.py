"""MLflow helpers for finding runs again: the client, the experiment, the params a run logs, and
the config hash that makes a sweep resumable.

A run is tagged ``zoo.config_hash``: a digest of its resolved config without the keys that do
not change what is trained (``tracking``, ``study``, ``trainer.threads``: with op determinism a
depth-10 MLP gave bit-identical losses at 1 and 2 threads), plus the gradzoo version and a
fingerprint of the code (every ``.py`` file of the installed ``zoo`` package and every shipped
config and study ``.yaml``), so that a code fix invalidates the runs made before it. Same hash =
same code, model, data, optimizer, budget and seed, so with op determinism the same numbers; a
re-run study skips a job whose hash already has a FINISHED run (diverged runs included: they
would diverge again). See zoo.tracking.sweep for the skip itself.
"""
from __future__ import annotations

import functools
import hashlib
import json
from importlib import metadata
from pathlib import Path
from zoo.tracking.store import client as store_client, sqlite_path

NOT_TRAINING = ("tracking", "study")
# What the experiment is, in MLflow 3's own words (its experiment-kind selector, the Python
# API). MLflow 3.17's UI does not read it to choose the view: see ML_VIEW.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# MLflow 3.17's UI opens an experiment on its GenAI overview (traces, token panels) unless the
# URL says ``workflowType=machine_learning`` or the browser remembers that choice (the sidebar's
# "Model training" switch, localStorage ``mlflow.workflowType_v1``); the default is "genai" and
# the experiment's tags are not consulted (a feature flag fixed on, in its JS bundle). So the
# links the zoo prints carry the parameter and go to the runs.
ML_VIEW = "workflowType=machine_learning"
EXECUTION_ONLY = ("threads",)  # trainer keys that change how fast, not what is computed


def source_fingerprint(roots: tuple[tuple[Path, str], ...]) -> str:
    """sha256 over (relative path, content) of the files under each root matching its glob, sorted."""
    digest = hashlib.sha256()
    for root, pattern in roots:
        for path in sorted(root.rglob(pattern), key=lambda p: p.relative_to(root).as_posix()):
            if "__pycache__" in path.parts or not path.is_file():
                continue
            digest.update(f"{root.name}/{path.relative_to(root).as_posix()}\0".encode())
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The gradzoo version and the fingerprint of its Python code (read once per process: ~80
    small files, no import of what they contain). YAML is left out: a config or study file
    that changes what is trained changes the resolved config, which the hash covers already,
    and one that changes only a claim's text should not cost a re-run."""
    try:
        version = metadata.version("gradzoo")
    except metadata.PackageNotFoundError:
        version = "unknown"
    zoo_dir = Path(__file__).resolve().parents[1]
    roots = [(zoo_dir, "*.py")]
    return f"{version}+{source_fingerprint(tuple(roots))[:16]}"


def config_hash(resolved: dict, fingerprints: dict | None = None) -> str:
    """A digest of what a run trains: the resolved config (less what does not change training),
    the code's version, and ``fingerprints`` (digests of the user's files the config names)."""
    kept = {k: v for k, v in resolved.items() if k not in NOT_TRAINING}
    if fingerprints:
        kept["zoo.fingerprints"] = dict(fingerprints)
    if isinstance(kept.get("trainer"), dict):
        kept["trainer"] = {k: v for k, v in kept["trainer"].items() if k not in EXECUTION_ONLY}
    kept["zoo.code_version"] = code_version()
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:20]


def flat_params(resolved: dict, prefix: str = "") -> dict[str, str]:
    """A resolved config as MLflow params: dotted keys, string values, ``null`` for None."""
    out = {}
    for key, value in resolved.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = "null" if value is None else str(value)
    return out


def client(uri: str):
    """An MlflowClient on ``uri``, its store created and migrated once, quietly (zoo.tracking.store)."""
    return store_client(uri)


def artifact_root_for(uri: str) -> str | None:
    """Artifacts of a sqlite store live beside the database file (``<dir>/mlruns``), so the
    store is one self-contained folder whatever the working directory of later runs."""
    db = sqlite_path(uri)  # sqlite:///rel.db -> rel.db; sqlite:////abs -> /abs
    return (db.resolve().parent / "mlruns").as_uri() if db is not None else None


def experiment_id(c, name: str, uri: str) -> str:
    """The experiment's id, created on first use with its artifacts beside a sqlite store."""
    from mlflow.exceptions import MlflowException

    found = c.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return c.create_experiment(name, artifact_location=artifact_root_for(uri), tags=EXPERIMENT_KIND)
    except MlflowException:  # created by a concurrent job in between
        return c.get_experiment_by_name(name).experiment_id


def ui_link(uri: str, experiment_id: str, run_id: str | None = None) -> str | None:
    """Where MLflow's UI shows the experiment's runs (or one run) in its machine-learning view,
    for a tracking server (http/https: it serves the UI at the same address); None for a local
    store, whose UI address is wherever ``mlflow ui`` is started."""
    if not uri.startswith(("http://", "https://")):
        return None
    return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs{f'/{run_id}' if run_id else ''}?{ML_VIEW}"


def find_finished(uri: str, experiment: str, digest: str) -> str | None:
    """The newest FINISHED run of this experiment with this config hash and its outcome
    recorded (the last thing a run writes: one stopped while writing its report has none), if
    any."""
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return None
    found = c.search_runs([exp.experiment_id],
                          f"tags.`zoo.config_hash` = '{digest}' and attributes.status = 'FINISHED'",
                          order_by=["attributes.start_time DESC"], max_results=20)
    return next((r.info.run_id for r in found if r.data.tags.get("zoo.outcome")), None)
