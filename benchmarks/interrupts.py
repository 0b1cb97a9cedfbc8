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
  later, while the first one's cleanup runs.

After each trial ``zoo-runs repair`` runs on the store, and the store is read back. Counted:
runs FINISHED without ``zoo.outcome`` (a run cut short that looks complete: resume would skip
it), runs still RUNNING after the repair, and unusable stores (the repair or a search fails).
All three must be 0; the script exits 1 otherwise. Also shown: the exit codes, seconds from the
(first) signal to the exit, runs left RUNNING that the repair had to end, and KILLED runs
without ``zoo.outcome=killed`` and ``zoo.killed``.

    python benchmarks/interrupts.py [--moments loop_end,report,judgement,store,double]
                                    [--signals SIGTERM,SIGINT] [--trials N]

``--trials N`` keeps the first N offsets of each moment. The whole replay (26 trials) takes
5 minutes on an otherwise idle 2-core machine, 8-11 shared with other jobs (a judgement trial
~25 s, a store trial ~12 s), ``--trials 1`` about 3.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

TINY = ["model.depth=2", "model.width=8", "trainer.epochs=2"]
LAST_EPOCH = re.compile(r"epoch (\d+)/\1 ")


@dataclass
class Moment:
    args: list[str]        # after `python -m`
    offsets: list[float]   # seconds after the trigger
    trigger: str           # "last_epoch", "study_done" or "store"
    first_at: float | None = None  # a double signal: the first this long after the trigger, and the
    #                                second `offset` after the first


MOMENTS = {
    "loop_end": Moment(["zoo.cli.train", *TINY], [0.0, 0.15], "last_epoch"),
    "report": Moment(["zoo.cli.train", "-m", *TINY, "seed=0,1"], [0.3, 0.8], "last_epoch"),
    "judgement": Moment(["zoo.cli.ablate", "input_scaling", "--scale", "quick"], [0.02, 0.15, 0.4], "study_done"),
    "store": Moment(["zoo.cli.train", "-m", *TINY, "seed=0"], [0.05, 0.2, 0.5, 1.0, 1.5], "store"),
    "double": Moment(["zoo.cli.train", *TINY], [0.1, 0.3], "last_epoch", first_at=0.0),
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
    repaired: int = 0                # runs the stop left RUNNING, ended by the repair
    killed_without_tags: int = 0
    note: str = ""
    lines: list[str] = field(default_factory=list)


def _env() -> dict[str, str]:
    here = Path(__file__).resolve().parents[1]
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": path or str(here)}


def run_trial(name: str, sig: signal.Signals, offset: float, folder: Path, timeout: float = 180) -> Trial:
    """One command, one moment, one signal; the store checked after."""
    moment = MOMENTS[name]
    trial = Trial(name, sig.name, offset)
    # SIGINT as a terminal leaves it (a background shell starts us with it ignored), in a group
    proc = subprocess.Popen([sys.executable, "-m", *moment.args], cwd=folder, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    fired = threading.Event()
    done_jobs = [0]

    def read():
        for line in proc.stdout:
            trial.lines.append(line.rstrip())
            if moment.trigger == "last_epoch" and LAST_EPOCH.search(line):
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
        if moment.trigger == "store" and db.exists():
            fired.set()
        if fired.wait(0.005):
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
    if sent is not None:
        trial.stop_seconds = time.monotonic() - sent
    elif not trial.note:
        trial.note = "ended before the moment" if not fired.is_set() else "ended before the signal"
    check_store(trial, folder)
    return trial


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
                      f"{trial.running_after_repair}, unusable {trial.unusable}"
                      + (f"; {trial.note}" if trial.note else ""), flush=True)
    return results


def table(results: list[Trial]) -> str:
    """One row per moment and signal, then the totals."""
    rows = ["| moment | signal | trials (signalled) | exit codes | s to stop (max) | FINISHED w/o outcome "
            "| RUNNING after repair | unusable stores | left RUNNING, repaired | KILLED w/o tags |",
            "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    keys = list(dict.fromkeys((t.moment, t.signal) for t in results))
    for moment, sig in keys:
        group = [t for t in results if (t.moment, t.signal) == (moment, sig)]
        stops = [t.stop_seconds for t in group if t.stop_seconds is not None]
        codes = ", ".join(str(c) for c in sorted({t.code for t in group}, key=lambda c: (c is None, c)))
        rows.append(f"| {moment} | {sig} | {len(group)} ({sum(t.signalled for t in group)}) | {codes} | "
                    f"{max(stops):.2f} | " if stops else f"| {moment} | {sig} | {len(group)} (0) | {codes} | - | ")
        rows[-1] += " | ".join(str(sum(getattr(t, k) for t in group)) for k in (
            "finished_without_outcome", "running_after_repair", "unusable", "repaired", "killed_without_tags")) + " |"
    return "\n".join(rows)


def totals(results: list[Trial]) -> tuple[int, int, int]:
    return (sum(t.finished_without_outcome for t in results), sum(t.running_after_repair for t in results),
            sum(t.unusable for t in results))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--moments", default=",".join(MOMENTS), help=f"some of {', '.join(MOMENTS)}")
    parser.add_argument("--signals", default="SIGTERM,SIGINT")
    parser.add_argument("--trials", type=int, help="the first N offsets of each moment")
    args = parser.parse_args(argv)
    started = time.monotonic()
    results = replay(args.moments.split(","), args.signals.split(","), args.trials)
    print(f"\n{len(results)} trials in {time.monotonic() - started:.0f} s\n")
    print(table(results))
    finished, running, unusable = totals(results)
    print(f"\nFINISHED without an outcome: {finished}; RUNNING after repair: {running}; unusable stores: {unusable}")
    return 1 if finished or running or unusable else 0


if __name__ == "__main__":
    sys.exit(main())
