"""Sweep throughput: the same 8-job sweep with Hydra's basic launcher and with joblib at 2 workers.

The sweep is 8 seeds of a depth-10, width-64 ReLU MLP on digits for 3 epochs (69 steps each),
logged to a fresh sqlite store. The basic launcher runs the jobs one after another in one
process; joblib runs 2 worker processes, each job limited to cores/2 TensorFlow threads
(``trainer.threads``), as ``zoo-ablate --jobs 2`` does. Wall time is the whole command,
interpreter start-up and TensorFlow import included, which is what a user waits for.

    python benchmarks/sweep.py [--rounds 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

SWEEP = ["model.depth=10", "model.width=64", "trainer.epochs=3", "seed=0,1,2,3,4,5,6,7"]
JOBS = 8


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def timed(extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "zoo.train", "-m", *SWEEP, *extra], cwd=tmp,
                              capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if done.returncode != 0 or done.stdout.count("zoo-train: finished") != JOBS:
            raise SystemExit(f"sweep failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ways = {"basic launcher (1 process)": [],
            "joblib, 2 workers": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                                  f"trainer.threads={max(1, cores() // 2)}"]}
    times = {name: [] for name in ways}
    for r in range(args.rounds):
        for name, extra in ways.items():
            times[name].append(timed(extra))
            print(f"  round {r + 1}/{args.rounds} {name}: {times[name][-1]:.1f}s", flush=True)
    base = statistics.median(times["basic launcher (1 process)"])
    print(f"\n{JOBS}-job sweep ({' '.join(SWEEP)}), {cores()} cores, median of {args.rounds} rounds\n")
    print("| launcher | wall s | runs/minute | speed-up |")
    print("|---|---|---|---|")
    for name in ways:
        t = statistics.median(times[name])
        print(f"| {name} | {t:.1f} | {JOBS * 60 / t:.1f} | {base / t:.2f}× |")


if __name__ == "__main__":
    main()
