"""``zoo-ablate``: run a ready-made ablation study from ``ablations/`` and judge its claim.

    zoo-ablate --list
    zoo-ablate init_depth --scale quick            # CI-size; full (default) is the study's own size
    zoo-ablate gated_cells --jobs 2                # joblib launcher, TF threads split per job
    zoo-ablate init_depth --force seed=3           # re-run finished jobs; extra Hydra overrides

A study is a Hydra sweep: this is ``zoo-train -m --config-dir <ablations> --config-name
<study>`` plus the scale's overrides, resume on (finished jobs with the same config and seed are
skipped unless ``--force``), and a sweep folder of its own. The sweep callback
(zoo.tracking.sweep) makes the MLflow parent run and judges the claim at the end; the table and
the verdict are printed here. Listing and argument errors do not import TensorFlow.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

from zoo.schema import SpecError
from zoo.study import SCALES, load_study, study_names, studies_dir, sweep_params


def job_count(name: str, overrides: list[str]) -> int:
    """Jobs of a study's sweep once command-line sweeps replace the file's."""
    params = sweep_params(name)
    for key, value in (o.split("=", 1) for o in overrides if "=" in o and not o.startswith("-")):
        if key in params or "," in value:
            params[key] = value
    return math.prod(len(v.split(",")) for v in params.values())


def describe() -> str:
    lines = []
    for name in study_names():
        study = load_study(name)
        lines.append(f"  {name:<16} {study.description}  "
                     f"[{job_count(name, study.overrides('quick'))} jobs quick, {job_count(name, [])} full]")
    return "studies (zoo-ablate <study> [--scale quick|full]):\n" + "\n".join(lines)


def hydra_argv(name: str, scale: str, jobs: int, force: bool, extra: list[str]) -> list[str]:
    study = load_study(name)
    sweep_dir = os.path.join("multirun", name, f"{scale}-{time.strftime('%Y%m%d-%H%M%S')}")
    argv = ["-m", "--config-dir", str(studies_dir()), "--config-name", name,
            f"+study.scale={scale}", f"hydra.sweep.dir={sweep_dir}",
            f"tracking.resume={'false' if force else 'true'}", *study.overrides(scale)]
    if jobs > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        argv += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}",
                 f"trainer.threads={max(1, cores // jobs)}"]
    return argv + list(extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zoo-ablate", description=__doc__.split("\n")[0],
                                     epilog="Studies live in ablations/; see README 'Ablation studies'.")
    parser.add_argument("study", nargs="?", help="study name (see --list)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. seed=1,2,3")
    parser.add_argument("--list", action="store_true", help="list the studies, one line each")
    parser.add_argument("--scale", choices=SCALES, default="full")
    parser.add_argument("--jobs", type=int, default=1, help="parallel jobs (joblib launcher)")
    parser.add_argument("--force", action="store_true", help="re-run jobs that already finished")
    args = parser.parse_intermixed_args(argv)  # `zoo-ablate study --force seed=1,2` too
    try:
        if args.list or not args.study:
            print(describe())
            return 0
        if args.jobs < 1:
            raise SpecError("--jobs", f"must be >= 1, got {args.jobs}")
        hydra_args = hydra_argv(args.study, args.scale, args.jobs, args.force, args.overrides)
    except SpecError as err:
        print(f"zoo-ablate: {err}", file=sys.stderr)
        return 2
    print(f"zoo-ablate: {args.study} at scale {args.scale}: "
          f"{job_count(args.study, hydra_args)} jobs", flush=True)
    from zoo.train import main as zoo_train

    saved = sys.argv
    sys.argv = ["zoo-train", *hydra_args]
    try:
        zoo_train()
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
