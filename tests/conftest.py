import json
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

# Each test file's measured seconds (setup, call and teardown of its tests, on 2 idle cores;
# refreshed with `pytest --store-file-seconds`). The two xdist workers take whole files
# (loadfile) in collection order, so the longest files are collected first: a long file left to
# the end keeps one worker busy after the other has run out of work (on these seconds, a greedy
# split ends at 1446 s longest first, the ideal, against 1478 s in xdist's most-tests-first order).
FILE_SECONDS = Path(__file__).with_name("file_seconds.json")


def pytest_addoption(parser):
    parser.addoption("--store-file-seconds", action="store_true",
                     help=f"write each test file's seconds to {FILE_SECONDS.name} (the order files are run in)")


def pytest_collection_modifyitems(config, items):
    """Longest files first (a new file counts as the longest known), each file's tests in place."""
    seconds = json.loads(FILE_SECONDS.read_text()) if FILE_SECONDS.is_file() else {}
    unknown = max(seconds.values(), default=0.0)
    items.sort(key=lambda item: -seconds.get(item.path.name, unknown))  # stable: a file's own order stays


def pytest_configure(config):
    if config.getoption("store_file_seconds") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_FileSeconds(), "gradzoo-file-seconds")


class _FileSeconds:
    """Sums every test phase's duration by file, in the controlling process, and writes them."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def pytest_runtest_logreport(self, report):
        name = Path(report.nodeid.split("::")[0]).name
        self.seconds[name] = self.seconds.get(name, 0.0) + report.duration

    def pytest_sessionfinish(self, session):
        known = json.loads(FILE_SECONDS.read_text()) if FILE_SECONDS.is_file() else {}
        known.update({k: round(v, 1) for k, v in self.seconds.items()})  # a partial run updates its files only
        FILE_SECONDS.write_text(json.dumps(dict(sorted(known.items())), indent=0) + "\n")


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


# How long a test waits for an event (a job's first metric, a process's exit, a line) before it
# fails: minutes, because a loaded machine is slow, not stuck (issue 32: a 45 s deadline for a
# sweep's first job failed two tests on a loaded machine). What a test checks is the event; the
# seconds things take are measured by benchmarks/, not asserted here.
EVENT_SECONDS = 600.0


def wait_for(what: str, ready, proc: subprocess.Popen | None = None, folder: Path | None = None,
             timeout: float = EVENT_SECONDS, poll: float = 0.3):
    """Poll ``ready()`` until it returns something true, and return it. Fails naming ``what`` was
    awaited (with the output in ``folder``) if ``proc`` ends first or ``timeout`` s pass."""
    deadline = time.monotonic() + timeout
    while not (found := ready()):
        if proc is not None and proc.poll() is not None:
            found = ready()  # the event and the exit can come together
            if found:
                return found
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}"
                        + (f"\n{output(folder)}" if folder else ""))
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting after {timeout:g} s for {what}" + (f"\n{output(folder)}" if folder else ""))
        time.sleep(poll)
    return found


def wait_exit(proc: subprocess.Popen, what: str = "the process to exit", folder: Path | None = None,
              timeout: float = EVENT_SECONDS) -> int:
    """``proc``'s exit code; a process still running after ``timeout`` s is killed (its group
    too, if it leads one) and the test fails naming ``what`` was awaited."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, 9)
        except (ProcessLookupError, PermissionError):
            proc.kill()
        proc.wait()
        pytest.fail(f"still waiting after {timeout:g} s for {what}" + (f"\n{output(folder)}" if folder else ""))


def wait_training(proc: subprocess.Popen, folder: Path, jobs: int = 1, timeout: float = EVENT_SECONDS,
                  parent: bool = True) -> list[str]:
    """Wait until ``jobs`` of the sweep ``proc`` (store and output in ``folder``; a single run's
    with ``parent=False``) are training (have logged a metric); their run ids. Fails with the
    sweep's output if it ends first, or after ``timeout`` s (minutes: the event is awaited,
    not a deadline kept)."""
    what = f"{jobs} job(s) of the {'sweep' if parent else 'run'} to log their first metric"
    return wait_for(what, lambda: (found if len(found := training_jobs(folder / "mlflow.db", nested=parent)) >= jobs
                                   else None), proc, folder, timeout)


@pytest.fixture
def sqlite_uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def make_step(model, x, y, task, lr=1e-3, optimizer="sgd", clipping=None):
    """An instrumented step over ``model`` for batches shaped like (x, y)."""
    from zoo.config.optimizers import OPTIMIZERS
    from zoo.training.step import InstrumentedStep, batch_spec

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


def swallowed_signal(sig) -> None:
    """Deliver ``sig`` to this process while a garbage-collector callback runs, whose raise
    Python drops (it prints "Exception ignored"): how JAX's ``_xla_gc_callback`` (TensorFlow
    imports JAX when it is installed) swallowed a SIGINT in stop 39's CI. Only the handler's
    record of the request is left for zoo.runtime.stopping.check() to find. The drop is kept
    from pytest, whose hook would report it."""
    import gc
    import signal

    def deliver(phase, info):
        if phase == "start":
            signal.raise_signal(sig)
            phase = None  # a bytecode for the handler to run at, inside this callback

    dropped, hook = [], sys.unraisablehook
    gc.callbacks.append(deliver)
    sys.unraisablehook = dropped.append
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook
        gc.callbacks.remove(deliver)
    # raised, then dropped (a signal this process ignores, SIGINT in a background job, is neither)
    assert dropped and isinstance(dropped[0].exc_value, KeyboardInterrupt), (dropped, signal.getsignal(sig))
