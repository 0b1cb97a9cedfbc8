"""Sweep throughput: runs per minute of one study with each launcher and tracking store.

The same study (default ``regularization``: depth-20 sigmoid and ReLU MLPs, 3 jobs quick, 18
full) runs as a user runs it, ``zoo-ablate STUDY --scale S [--launcher L --jobs 2]``, each time
in a fresh folder with a fresh sqlite store (nothing to resume), and once more with joblib
logging to an MLflow server on PostgreSQL on this machine (zoo.tracking.server). Wall time is the
whole command: interpreter start, TensorFlow import in every worker, the study's judgement.

    python benchmarks/sweep.py [--study regularization] [--scales quick,full] [--ways basic,joblib,...]

Every way must finish every job (checked in the store): a fast sweep that lost runs is no result.
"Cores busy" is the CPU time of the command's processes over its wall time (the server's own
work, in another process, is not counted): how much of the machine each way could use.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

WAYS = {  # name: (zoo-ablate flags, tracking)
    "basic (1 process)": ([], "sqlite"),
    "joblib, 2 workers": (["--launcher", "joblib", "--jobs", "2"], "sqlite"),
    "Ray local, 2 CPUs": (["--launcher", "ray", "--jobs", "2"], "sqlite"),
    "submitit_local, 2 at a time": (["--launcher", "submitit_local", "--jobs", "2"], "sqlite"),
    "joblib, 2 workers, HTTP server on PostgreSQL": (["--launcher", "joblib", "--jobs", "2"], "server"),
}
SHORT = {"basic": "basic (1 process)", "joblib": "joblib, 2 workers", "ray": "Ray local, 2 CPUs",
         "submitit_local": "submitit_local, 2 at a time", "server": "joblib, 2 workers, HTTP server on PostgreSQL"}


def finished_children(uri: str, experiment: str) -> int:
    from mlflow import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'", max_results=1000)
    return sum(1 for r in runs if r.data.tags.get("zoo.kind") is None)


def _children_cpu() -> float:
    """CPU seconds of the finished child processes (and theirs, once reaped): the command's work."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(study: str, scale: str, flags: list[str], uri: str, experiment: str) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        uri = uri or f"sqlite:///{tmp}/mlflow.db"
        tracking = [] if uri.startswith("sqlite") else ["tracking=server"]
        cmd = [sys.executable, "-m", "zoo.ablate", study, "--scale", scale, *flags, *tracking,
               f"tracking.uri={uri}", f"tracking.experiment={experiment}"]
        cpu_before = _children_cpu()
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        busy = (_children_cpu() - cpu_before) / seconds
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return seconds, busy, finished_children(uri, experiment)


def main():
    from zoo.studies.jobs import job_count
    from zoo.studies.load import load_study

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default="regularization")
    parser.add_argument("--scales", default="quick,full")
    parser.add_argument("--ways", default=",".join(SHORT), help=f"some of {', '.join(SHORT)}")
    args = parser.parse_args()
    ways = [SHORT[w] for w in args.ways.split(",")]
    rows = []
    with ExitStack() as stack:
        server = None
        if any(WAYS[w][1] == "server" for w in ways):
            from zoo.tracking.server import team_server

            server = stack.enter_context(team_server(Path(stack.enter_context(tempfile.TemporaryDirectory()))))
        for scale in args.scales.split(","):
            jobs = job_count(args.study, load_study(args.study).overrides(scale))
            base = None
            for i, name in enumerate(ways):
                flags, tracking = WAYS[name]
                seconds, busy, finished = timed(args.study, scale, flags, server if tracking == "server" else "",
                                          f"bench-{scale}-{i}-{int(time.time())}")
                if finished != jobs:
                    raise SystemExit(f"{name} at {scale}: {finished} of {jobs} jobs finished")
                base = base or seconds
                rows.append((scale, jobs, name, seconds, jobs * 60 / seconds, base / seconds, busy))
                print(f"  {scale} {name}: {seconds:.1f} s, {busy:.2f} cores busy", flush=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"\n`{args.study}` study, {cores} cores, one run each (the first way is the 1.00x)\n")
    print("| scale | jobs | launcher and store | wall s | runs/minute | vs basic | cores busy |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for scale, jobs, name, seconds, rate, ratio, busy in rows:
        print(f"| {scale} | {jobs} | {name} | {seconds:.1f} | {rate:.1f} | {ratio:.2f}× | {busy:.2f} |")


if __name__ == "__main__":
    main()
