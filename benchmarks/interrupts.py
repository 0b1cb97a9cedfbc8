"""Interrupt replay: SIGINT and SIGTERM at the moments issue 21 names, and what they leave behind.

Each trial runs a real command in a fresh folder (its own ``mlflow.db``), in a process group of
its own as a terminal's job is, watches its output (or its folder) for the moment, waits an
offset, and sends the signal to the group, as Ctrl-C or ``timeout`` do:

- ``loop_end``: ``zoo-train``, after the last "epoch N/N" line (the loop has just ended; the
  final evaluation, report, plots, model and tags follow);
- ``report``: ``zoo-train -m seed=0,1``, 0.3 and 0.8 s after the first job's last "epoch N/N":
  its report, plots and model are being written, and the sweep's parent is open;
- ``judgement``: ``zoo-ablate input_scaling --scale quick``, after its last job's
  "zoo-train: finished" line: the study's judgement (records, plots, tags of the parent);
- ``store``: ``zoo-train -m seed=0`` in a folder without a store, 0.05-1.5 s after
  ``mlflow.db`` appears: the store is being created and migrated, then the parent made;
- ``double``: ``zoo-train``, SIGINT after the last "epoch N/N" and a second SIGINT 0.1-0.3 s
  later, while the first one's cleanup runs;
- ``tracing``: ``zoo-train``, 0.3-1.5 s after its run appears in the store: the model is being
  built and its step traced into a graph (a SIGTERM there once became ``SystemError: ... bad
  argument to internal function``, exit 1, the run FAILED);
- ``diagnose``: ``zoo-diagnose --mlflow`` on a small saved model, 1-4 s after TensorFlow's first
  line: the model is loading and the diagnosis measuring (its graph being traced);
- ``diagnose_mlflow``: ``zoo-diagnose --mlflow``, 0-0.3 s after its MLflow run appears in the
  store: the diagnosis is being logged (its metrics, artifacts, tags);
- ``pretrained``: ``zoo-pretrained train mlp20-relu-digits --register``, 1-3 s after its run
  appears in the store: the recipe is training;
- ``monitor_fit``: a user's script, ``model.fit(..., callbacks=[zoo.GradientMonitor()])`` inside
  ``with mlflow.start_run():``, after its third epoch: mid-``fit``;
- ``monitor_end``: the same script with 3 epochs, 0-0.5 s after ``fit``'s end (a callback before
  the monitor prints it): the monitor is writing its end-of-run records into the user's run.

After each trial ``zoo-runs repair`` runs on the store, and the store is read back. Counted:
runs FINISHED without ``zoo.outcome`` (a run cut short that looks complete: resume would skip
it), runs still RUNNING after the repair, unusable stores (the repair or a search fails), and
lost signals (the command was signalled and still exited 0: it went on as if nothing had
happened). All four must be 0; the script exits 1 otherwise. Also shown: the exit codes, seconds
from the (first) signal to the exit, runs left RUNNING that the repair had to end, and KILLED
runs without ``zoo.outcome=killed`` and ``zoo.killed``.

    python benchmarks/interrupts.py [--moments loop_end,report,judgement,store,double]
                                    [--signals SIGTERM,SIGINT] [--trials N] [--backend jax]

``--backend``: the commands' ``KERAS_BACKEND`` (the monitor_* moments' script runs the monitor there).

``--trials N`` keeps the first N offsets of each moment. The replay of issue 21's five moments
(26 trials) takes 5 minutes on an otherwise idle 2-core machine, 8-11 shared with other jobs (a
judgement trial ~25 s, a store trial ~12 s), ``--trials 1`` about 3; issue 31's six moments
(tracing, diagnose, diagnose_mlflow, pretrained, monitor_fit, monitor_end) add 28 trials.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

TINY = ["model.depth=2", "model.width=8", "trainer.epochs=2"]
LAST_EPOCH = re.compile(r"epoch (\d+)/\1 ")
DIAGNOSE = ["zoo.cli.diagnose", "model.keras", "--data", "data.npz", "--mlflow", "--out", "diagnosis"]
TF_FIRST_LINE = "oneDNN custom operations"  # TensorFlow's first shared library is loading


@dataclass
class Moment:
    args: list[str]        # after `python -m` (or ["-c", CODE])
    offsets: list[float]   # seconds after the trigger
    trigger: str           # "last_epoch", "study_done", "store", "run" (a run in the store), or "line:TEXT"
    first_at: float | None = None  # a double signal: the first this long after the trigger, and the
    #                                second `offset` after the first
    setup: Callable[[Path], None] | None = None  # files the command reads, made in its folder first


_SAVED: dict[str, bytes] = {}


def _saved_model(folder: Path) -> None:
    """A small compiled Keras model and its data (``model.keras``, ``data.npz``), made once in a
    process of its own and copied into each trial's folder."""
    if not _SAVED:
        code = ("import keras, numpy as np, sys\nkeras.utils.set_random_seed(0)\n"
                "m = keras.Sequential([keras.Input((16,))] + [keras.layers.Dense(32, activation='tanh') for _ in range(6)]"
                " + [keras.layers.Dense(3)])\n"
                "m.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer='sgd')\n"
                "m.save(sys.argv[1] + '/model.keras')\nx = np.random.default_rng(0).normal(size=(512, 16)).astype('float32')\n"
                "np.savez(sys.argv[1] + '/data.npz', x=x, y=(x[:, 0] > 0).astype('int32'))\n")
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-c", code, tmp], env=_env(), check=True, capture_output=True)
            _SAVED.update({name: (Path(tmp) / name).read_bytes() for name in ("model.keras", "data.npz")})
    for name, data in _SAVED.items():
        (folder / name).write_bytes(data)


# a user's script: fit a small model with the monitor inside their own MLflow run
MONITORED_FIT = """
import sys
import keras, mlflow, numpy as np
import zoo

class Announce(keras.callbacks.Callback):  # before the monitor: says where fit is, for the replay
    def on_epoch_end(self, epoch, logs=None):
        print(f"user: epoch {epoch + 1} done", flush=True)
    def on_train_end(self, logs=None):
        print("user: fit ended", flush=True)

keras.utils.set_random_seed(0)
x = np.random.default_rng(0).normal(size=(256, 16)).astype("float32")
y = (x[:, 0] > 0).astype("int32")
model = keras.Sequential([keras.Input((16,))] + [keras.layers.Dense(16, activation="tanh") for _ in range(4)]
                         + [keras.layers.Dense(2)])
model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizer="sgd")
mlflow.set_tracking_uri("sqlite:///mlflow.db")
mlflow.set_experiment("mine")
with mlflow.start_run():
    model.fit(x, y, epochs=int(sys.argv[1]), batch_size=32, verbose=0,
              callbacks=[Announce(), zoo.GradientMonitor(histogram_every=2, log_every=2, verbose=False)])
print("user: script done", flush=True)
"""

MOMENTS = {
    "loop_end": Moment(["zoo.cli.train", *TINY], [0.0, 0.15], "last_epoch"),
    "report": Moment(["zoo.cli.train", "-m", *TINY, "seed=0,1"], [0.3, 0.8], "last_epoch"),
    "judgement": Moment(["zoo.cli.ablate", "input_scaling", "--scale", "quick"], [0.02, 0.15, 0.4], "study_done"),
    "store": Moment(["zoo.cli.train", "-m", *TINY, "seed=0"], [0.05, 0.2, 0.5, 1.0, 1.5], "store"),
    "double": Moment(["zoo.cli.train", *TINY], [0.1, 0.3], "last_epoch", first_at=0.0),
    "tracing": Moment(["zoo.cli.train", *TINY], [0.3, 0.8, 1.5], "run"),
    "diagnose": Moment(DIAGNOSE, [1.0, 4.0], f"line:{TF_FIRST_LINE}", setup=_saved_model),
    "diagnose_mlflow": Moment(DIAGNOSE, [0.0, 0.1, 0.3], "run", setup=_saved_model),
    "pretrained": Moment(["zoo.cli.pretrained", "train", "mlp20-relu-digits", "--register", "--tracking-uri",
                          "sqlite:///mlflow.db"], [1.0, 3.0], "run"),
    "monitor_fit": Moment(["-c", MONITORED_FIT, "400"], [0.0], "line:user: epoch 3 done"),
    "monitor_end": Moment(["-c", MONITORED_FIT, "3"], [0.0, 0.2, 0.5], "line:user: fit ended"),
}


@dataclass
class Trial:
    moment: str
    signal: str
    offset: float
    code: int | None = None          # exit code (negative: ended by the signal itself)
    stop_seconds: float | None = None  # first signal -> exit
    signalled: bool = False          # the moment came and the signal went out before the exit
    finished_without_outcome: int = 0
    running_after_repair: int = 0
    unusable: int = 0
    lost_signal: int = 0             # signalled, and exited 0 as if nothing had happened
    repaired: int = 0                # runs the stop left RUNNING, ended by the repair
    killed_without_tags: int = 0
    note: str = ""
    lines: list[str] = field(default_factory=list)


def _env() -> dict[str, str]:
    here = Path(__file__).resolve().parents[1]
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path or str(here)}


def run_trial(name: str, sig: signal.Signals, offset: float, folder: Path, timeout: float = 600) -> Trial:
    """One command, one moment, one signal; the store checked after. ``timeout``: a bound for a
    command that never stops (minutes: a loaded machine is slow, not stuck)."""
    moment = MOMENTS[name]
    trial = Trial(name, sig.name, offset)
    if moment.setup is not None:
        moment.setup(folder)
    # SIGINT as a terminal leaves it (a background shell starts us with it ignored), in a group
    command = moment.args if moment.args[0] == "-c" else ["-m", *moment.args]
    proc = subprocess.Popen([sys.executable, *command], cwd=folder, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    fired = threading.Event()
    done_jobs = [0]

    def read():
        for line in proc.stdout:
            trial.lines.append(line.rstrip())
            if moment.trigger == "last_epoch" and LAST_EPOCH.search(line):
                fired.set()
            elif moment.trigger.startswith("line:") and moment.trigger[len("line:"):] in line:
                fired.set()
            elif moment.trigger == "study_done" and line.startswith("zoo-train: finished"):
                done_jobs[0] += 1
                if done_jobs[0] == 2:  # input_scaling quick: 2 jobs
                    fired.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    db = folder / "mlflow.db"
    while proc.poll() is None and time.monotonic() < deadline:
        if moment.trigger == "store" and db.exists() or moment.trigger == "run" and _has_run(db):
            fired.set()
        if fired.wait(0.005 if moment.trigger != "run" else 0.02):
            break
    sent = None
    if fired.is_set() and proc.poll() is None:
        time.sleep(offset if moment.first_at is None else moment.first_at)
        try:
            os.killpg(proc.pid, sig)
            sent = time.monotonic()
            if moment.first_at is not None:
                time.sleep(offset)
                os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        trial.note = f"still running {timeout:g} s after its start: SIGKILLed"
    reader.join(5)
    trial.code = proc.returncode
    trial.signalled = sent is not None
    trial.lost_signal = int(trial.signalled and trial.code == 0)
    if sent is not None:
        trial.stop_seconds = time.monotonic() - sent
    elif not trial.note:
        trial.note = "ended before the moment" if not fired.is_set() else "ended before the signal"
    check_store(trial, folder)
    return trial


def _has_run(db: Path) -> bool:
    """A run exists in the sqlite store ``db`` (read-only, plain sqlite3: no MLflow, no lock)."""
    if not db.is_file():
        return False
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.5)) as con:
            return con.execute("SELECT 1 FROM runs LIMIT 1").fetchone() is not None
    except sqlite3.Error:  # not migrated yet, or locked for a moment
        return False


def check_store(trial: Trial, folder: Path) -> None:
    """``zoo-runs repair`` on the trial's store, then count what the stop left behind."""
    db = folder / "mlflow.db"
    if not db.exists():
        trial.note = (trial.note + "; " if trial.note else "") + "no store"
        return
    uri = f"sqlite:///{db}"
    repair = subprocess.run([sys.executable, "-m", "zoo.cli.runs", "repair", "--uri", uri],
                            cwd=folder, env=_env(), capture_output=True, text=True, timeout=120)
    if repair.returncode != 0:
        trial.unusable = 1
        trial.note = f"repair failed: {(repair.stderr.strip().splitlines() or [''])[-1][:160]}"
        return
    found = re.search(r"zoo-runs: (\d+) orphaned run\(s\) repaired", repair.stdout)
    trial.repaired = int(found.group(1)) if found else 0
    try:
        from mlflow import MlflowClient

        client = MlflowClient(uri)
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(ids, max_results=1000) if ids else []
    except Exception as err:
        trial.unusable = 1
        trial.note = f"search failed: {type(err).__name__}: {str(err)[:160]}"
        return
    for run in runs:
        tags, status = run.data.tags, run.info.status
        if status == "FINISHED" and "zoo.outcome" not in tags:
            trial.finished_without_outcome += 1
        if status == "RUNNING":
            trial.running_after_repair += 1
        if status == "KILLED" and "zoo.repaired" not in tags and not (
                tags.get("zoo.outcome") == "killed" and "zoo.killed" in tags):
            trial.killed_without_tags += 1


def replay(moments: list[str], signals: list[str], trials: int | None = None, root: Path | None = None) -> list[Trial]:
    results = []
    for name in moments:
        for offset in MOMENTS[name].offsets[:trials]:
            for sig_name in (["SIGINT"] if MOMENTS[name].first_at is not None else signals):
                with tempfile.TemporaryDirectory(dir=root) as tmp:
                    trial = run_trial(name, signal.Signals[sig_name], offset, Path(tmp))
                results.append(trial)
                print(f"  {name} {sig_name} +{offset:g}s: exit {trial.code}, "
                      f"{'-' if trial.stop_seconds is None else f'{trial.stop_seconds:.2f} s'} to stop, "
                      f"finished w/o outcome {trial.finished_without_outcome}, running after repair "
                      f"{trial.running_after_repair}, unusable {trial.unusable}, lost signal {trial.lost_signal}, "
                      f"repaired {trial.repaired}, killed w/o tags {trial.killed_without_tags}"
                      + (f"; {trial.note}" if trial.note else ""), flush=True)
    return results


def table(results: list[Trial]) -> str:
    """One row per moment and signal, then the totals."""
    rows = ["| moment | signal | trials (signalled) | exit codes | s to stop (max) | FINISHED w/o outcome "
            "| RUNNING after repair | unusable stores | lost signals | left RUNNING, repaired | KILLED w/o tags |",
            "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    keys = list(dict.fromkeys((t.moment, t.signal) for t in results))
    for moment, sig in keys:
        group = [t for t in results if (t.moment, t.signal) == (moment, sig)]
        stops = [t.stop_seconds for t in group if t.stop_seconds is not None]
        codes = ", ".join(str(c) for c in sorted({t.code for t in group}, key=lambda c: (c is None, c)))
        rows.append(f"| {moment} | {sig} | {len(group)} ({sum(t.signalled for t in group)}) | {codes} | "
                    f"{max(stops):.2f} | " if stops else f"| {moment} | {sig} | {len(group)} (0) | {codes} | - | ")
        rows[-1] += " | ".join(str(sum(getattr(t, k) for t in group)) for k in (
            "finished_without_outcome", "running_after_repair", "unusable", "lost_signal", "repaired",
            "killed_without_tags")) + " |"
    return "\n".join(rows)


def totals(results: list[Trial]) -> tuple[int, int, int, int]:
    return (sum(t.finished_without_outcome for t in results), sum(t.running_after_repair for t in results),
            sum(t.unusable for t in results), sum(t.lost_signal for t in results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--moments", default=",".join(MOMENTS), help=f"some of {', '.join(MOMENTS)}")
    parser.add_argument("--signals", default="SIGTERM,SIGINT")
    parser.add_argument("--trials", type=int, help="the first N offsets of each moment")
    parser.add_argument("--backend", choices=("tensorflow", "jax", "torch"),
                        help="KERAS_BACKEND for the commands (the monitor_* moments run the user's script there)")
    args = parser.parse_args(argv)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend  # _env passes it on to every command
    started = time.monotonic()
    results = replay(args.moments.split(","), args.signals.split(","), args.trials)
    print(f"\n{len(results)} trials in {time.monotonic() - started:.0f} s\n")
    print(table(results))
    finished, running, unusable, lost = totals(results)
    print(f"\nFINISHED without an outcome: {finished}; RUNNING after repair: {running}; unusable stores: {unusable}; "
          f"lost signals: {lost}")
    return 1 if finished or running or unusable or lost else 0


if __name__ == "__main__":
    sys.exit(main())
