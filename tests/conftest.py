import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd, env=None, timeout=600):
    """Run ``python -m zoo.train ARGS`` as a user would, from ``cwd``."""
    return subprocess.run([sys.executable, "-m", "zoo.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def runs_of(cwd: Path):
    """The sweeps' parent runs and their jobs in ``cwd``'s default store: (client, parents, jobs)."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{cwd}/mlflow.db")
    exp = client.get_experiment_by_name("gradzoo")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("zoo.kind") in ("study", "sweep")]
    return client, parents, [r for r in runs if r not in parents]


@pytest.fixture
def sqlite_uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def make_step(model, x, y, task, lr=1e-3, optimizer="sgd", clipping=None):
    """An instrumented step over ``model`` for batches shaped like (x, y)."""
    from zoo.optimizers import OPTIMIZERS
    from zoo.step import InstrumentedStep, batch_spec

    options = {"momentum": 0.0, "nesterov": False} if optimizer == "sgd" else {}
    return InstrumentedStep(model, task, OPTIMIZERS.build(optimizer, lr=lr, **options), clipping,
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
