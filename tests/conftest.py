import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_experiment_left_in_the_environment():
    """``mlflow.set_experiment`` exports ``MLFLOW_EXPERIMENT_ID`` for subprocesses; a test's
    experiment must not reach the next test's subprocess, whose store does not have it."""
    before = {name: os.environ.get(name) for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")}
    yield
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def run_cli(*args, cwd, env=None, timeout=600):
    """Run ``python -m zoo.cli.train ARGS`` as a user would, from ``cwd``."""
    return subprocess.run([sys.executable, "-m", "zoo.cli.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def runs_of(cwd: Path):
    """The sweeps' parent runs and their jobs in ``cwd``'s default store: (client, parents, jobs)."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{cwd}/mlflow.db")
    exp = client.get_experiment_by_name("gradzoo")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("zoo.kind") in ("study", "sweep")]
    return client, parents, [r for r in runs if r not in parents]


def training_jobs(db: Path, nested: bool = True) -> list[str]:
    """The sweep's jobs (``nested``; else any run) that are RUNNING and have logged a metric (run
    ids), read-only with plain sqlite3: an MlflowClient here would create the store's tables
    itself while the sweep under test is creating them."""
    if not db.is_file():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return [row[0] for row in con.execute(
                "SELECT DISTINCT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                "JOIN metrics m ON m.run_uuid = r.run_uuid "
                f"WHERE {'' if nested else 'NOT '}t.key = 'mlflow.parentRunId' AND r.status = 'RUNNING'")]
    except sqlite3.Error:  # no tables yet, or locked for a moment
        return []


def output(folder: Path) -> str:
    """The end of what a sweep started with its output in ``folder`` (stdout.txt, stderr.txt) said."""
    return (folder / "stdout.txt").read_text()[-2000:] + (folder / "stderr.txt").read_text()[-3000:]


def wait_training(proc: subprocess.Popen, folder: Path, jobs: int = 1, timeout: float = 45,
                  parent: bool = True) -> list[str]:
    """Wait until ``jobs`` of the sweep ``proc`` (store and output in ``folder``; a single run's
    with ``parent=False``) are training; their run ids. Fails with the sweep's output if it
    ends or the time runs out first."""
    deadline = time.monotonic() + timeout
    while len(found := training_jobs(folder / "mlflow.db", nested=parent)) < jobs:
        assert proc.poll() is None, output(folder)
        assert time.monotonic() < deadline, "no job started training in time\n" + output(folder)
        time.sleep(0.3)
    return found


@pytest.fixture
def sqlite_uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def make_step(model, x, y, task, lr=1e-3, optimizer="sgd", clipping=None):
    """An instrumented step over ``model`` for batches shaped like (x, y)."""
    from zoo.optimizers import OPTIMIZERS
    from zoo.step import InstrumentedStep, batch_spec

    options = {"momentum": 0.0, "nesterov": False} if optimizer == "sgd" else {}
    return InstrumentedStep(model, task, OPTIMIZERS.build(optimizer, lr=lr, warmup_steps=0, **options), clipping,
                            batch_spec(x, y))


def step_once(step, x, y) -> dict:
    """One plain step; its fields by name, each without the step axis."""
    import tensorflow as tf

    return {k: v[0] for k, v in step.layout.unpack(step.train(tf.constant(x), tf.constant(y)).numpy()).items()}


def probe_once(step, x, y) -> tuple[dict, dict]:
    """One step with the instruments; (step fields, instrument fields) by name."""
    import tensorflow as tf

    packed, probed = step.train_with_probes(tf.constant(x), tf.constant(y))
    return ({k: v[0] for k, v in step.layout.unpack(packed.numpy()).items()},
            {k: v[0] for k, v in step.probe_layout.unpack(probed.numpy()).items()})
