"""Sweep throughput: runs per minute of one study with each launcher and tracking store.

The same study (default ``regularization``: depth-20 sigmoid and ReLU MLPs, 3 jobs quick, 18
full) runs as a user runs it, ``zoo-ablate STUDY --scale S [--launcher L --jobs 2]``, each time
in a fresh folder with a fresh sqlite store (nothing to resume), and again, basic and joblib,
logging to an MLflow server on PostgreSQL on this machine (zoo.tracking.server; a fresh
experiment each time). Speed-ups are against the basic launcher on the same store. Wall time is the
whole command: interpreter start, TensorFlow import in every worker, the study's judgement.

    python benchmarks/sweep.py [--study regularization] [--scales quick,full] [--ways basic,joblib,...]

Every way must finish every job (checked in the store): a fast sweep that lost runs is no result.
"Cores busy" is the machine's busy CPU time over the command's wall time (``/proc/stat``, so
Ray's workers and the tracking server count): how much of the machine each way could use. "s a
job" is the mean run time of a job (its MLflow run's start to end): what a job costs once its
worker is warm, and how much two jobs at once slow each other.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

WAYS = {  # --ways name: (label, zoo-ablate flags, store); a basic way first sets its store's 1.00x
    "basic": ("basic (1 process)", [], "sqlite"),
    "joblib": ("joblib, 2 workers", ["--launcher", "joblib", "--jobs", "2"], "sqlite"),
    "ray": ("Ray local, 2 CPUs", ["--launcher", "ray", "--jobs", "2"], "sqlite"),
    "submitit_local": ("submitit_local, 2 at a time", ["--launcher", "submitit_local", "--jobs", "2"], "sqlite"),
    "basic_server": ("basic (1 process), HTTP server on PostgreSQL", [], "server"),
    "server": ("joblib, 2 workers, HTTP server on PostgreSQL", ["--launcher", "joblib", "--jobs", "2"], "server"),
}


def finished_children(uri: str, experiment: str) -> tuple[int, float]:
    """How many jobs finished, and their mean run time (s): a job's own cost, start-up aside."""
    from mlflow import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'", max_results=1000)
    jobs = [r for r in runs if r.data.tags.get("zoo.kind") is None]
    return len(jobs), sum(r.info.end_time - r.info.start_time for r in jobs) / 1000 / max(1, len(jobs))


def _busy_cpu() -> float:
    """CPU seconds the whole machine has been busy (``/proc/stat``: all but idle and iowait), so
    Ray's workers, which are not the command's children, count too; run on an otherwise idle box."""
    fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def timed(study: str, scale: str, flags: list[str], uri: str, experiment: str) -> tuple[float, float, int, float]:
    with tempfile.TemporaryDirectory() as tmp:
        uri = uri or f"sqlite:///{tmp}/mlflow.db"
        tracking = [] if uri.startswith("sqlite") else ["tracking=server"]
        cmd = [sys.executable, "-m", "zoo.cli.ablate", study, "--scale", scale, *flags, *tracking,
               f"tracking.uri={uri}", f"tracking.experiment={experiment}"]
        cpu_before = _busy_cpu()
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        busy = (_busy_cpu() - cpu_before) / seconds
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return (seconds, busy, *finished_children(uri, experiment))


def main():
    from zoo.launch.launchers import cores
    from zoo.studies.jobs import job_count
    from zoo.studies.load import load_study

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default="regularization")
    parser.add_argument("--scales", default="quick,full")
    parser.add_argument("--ways", default=",".join(WAYS), help=f"some of {', '.join(WAYS)}")
    args = parser.parse_args()
    ways = [WAYS[w] for w in args.ways.split(",")]
    rows = []
    with ExitStack() as stack:
        server = None
        if any(store == "server" for _, _, store in ways):
            from zoo.tracking.server import team_server

            root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            root.chmod(0o755)  # as root, PostgreSQL runs as the postgres user, which must enter it
            server = stack.enter_context(team_server(root))
        for scale in args.scales.split(","):
            jobs = job_count(args.study, load_study(args.study).overrides(scale))
            bases = {}  # store -> the basic launcher's time on it
            for i, (name, flags, tracking) in enumerate(ways):
                seconds, busy, finished, per_job = timed(args.study, scale, flags, server if tracking == "server" else "",
                                          f"bench-{scale}-{i}-{int(time.time())}")
                if finished != jobs:
                    raise SystemExit(f"{name} at {scale}: {finished} of {jobs} jobs finished")
                if not flags:
                    bases[tracking] = seconds
                ratio = bases[tracking] / seconds if tracking in bases else float("nan")
                rows.append((scale, jobs, name, seconds, jobs * 60 / seconds, ratio, busy, per_job))
                print(f"  {scale} {name}: {seconds:.1f} s, {busy:.2f} cores busy, {per_job:.1f} s a job", flush=True)
    print(f"\n`{args.study}` study, {cores()} cores, one run each; speed-up against the basic launcher "
          f"on the same store\n")
    print("| scale | jobs | launcher and store | wall s | runs/minute | vs basic | cores busy | s a job |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for scale, jobs, name, seconds, rate, ratio, busy, per_job in rows:
        print(f"| {scale} | {jobs} | {name} | {seconds:.1f} | {rate:.1f} | {ratio:.2f}× | {busy:.2f} | {per_job:.1f} |")


if __name__ == "__main__":
    main()
