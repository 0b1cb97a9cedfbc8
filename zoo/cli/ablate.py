"""``zoo-ablate``: run an ablation study (from ``ablations/``, or your own file) and judge its claim.

    zoo-ablate --list
    zoo-ablate init_depth --scale quick            # CI-size; full (default) is the study's own size
    zoo-ablate mystudy.yaml --scale quick          # your study file, from where you launch
    zoo-ablate gated_cells --jobs 2                # joblib launcher, TF threads split per job
    zoo-ablate gated_cells --launcher ray --jobs 2 # a local Ray cluster (or --address HOST:PORT)
    zoo-ablate residual --launcher submitit_slurm hydra.launcher.partition=gpu tracking=server
    zoo-ablate init_depth --force seed=3           # re-run finished jobs; extra Hydra overrides

A study is a Hydra sweep: this is ``zoo-train -m --config-dir <ablations> --config-name
<study>`` plus the scale's overrides, resume on (finished jobs with the same config and seed are
skipped unless ``--force``), and a sweep folder of its own. A STUDY ending in ``.yaml`` or naming
a folder is a study file of your own (zoo.studies.load): its folder and stem are the config dir
and name; relative paths in it (``model.target=mynet.py:build``, ``data.path=mine.npz``) are
taken from where you launch, where every job runs (Hydra's ``hydra.job.chdir`` is off). The
study's checks are validated against its sweep first (zoo.studies.validate); the sweep callback
(zoo.studies.callback) makes the MLflow parent run and judges the claim at the end
(zoo.studies.judge). Listing and argument errors do not import TensorFlow, and neither does a
bad study file or a bad override: every job of the sweep this command makes (scale and extra
overrides included) is composed and validated first, and the claim's metrics checked against
those runs (zoo.cli.precheck, as ``zoo-train -m`` does), so ``model.depth=abc`` or
``model.activation=relu`` on a claim about saturation exits 2 with one line instead of a sweep
of skipped jobs or an "inconclusive" study. The exit code is zoo-train's: 1 when every job
failed, 3 when some did. Before launching, runs of the study's
experiment left RUNNING by a process that is gone (SIGKILL, a lost machine) are ended as KILLED
and listed (zoo.tracking.repair). What every job must share is resolved here and appended to the
command (zoo.config.origin.shared_overrides: the sweep folder as an absolute path, the tracking store,
keys read from the environment), so a worker on another node resolves none of it itself; with
``--address`` the Ray head is asked first, token authentication included (zoo.launch.ray_join).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from omegaconf.errors import OmegaConfBaseException

from zoo.launch.launchers import LAUNCHERS, launcher_overrides, refused_when_joining
from zoo.config.schema import SpecError
from zoo.studies.jobs import job_count
from zoo.studies.load import SCALES, config_location, load_study, study_file, study_names
from zoo.studies.validate import validate_study
from zoo.config.origin import sweep_id
from zoo.cli.precheck import check_command
from zoo.tracking import repair as orphans
from zoo.cli import train as zoo_train
from zoo.cli.train import HYDRA_CONFIG_ERRORS, hydra_error_line


def describe() -> tuple[str, list[str]]:
    """The listing, and one line per study file that does not load (listed, not fatal)."""
    lines, broken = [], []
    for name in study_names():
        try:
            study = load_study(name)
            lines.append(f"  {name:<16} {study.description}  "
                         f"[{job_count(name, study.overrides('quick'))} jobs quick, {job_count(name)} full]")
        except SpecError as err:
            lines.append(f"  {name:<16} BROKEN: {err}")
            broken.append(str(err))
    return "studies (zoo-ablate <study> [--scale quick|full]):\n" + "\n".join(lines), broken


def hydra_argv(name: str, scale: str, launcher: list[str], force: bool, extra: list[str]) -> list[str]:
    """The ``zoo-train -m`` command line of a study (a shipped name or a file); ``launcher`` from
    zoo.launch.launchers. The sweep folder is ``multirun/<file stem>/…`` under the working directory."""
    study = load_study(name)
    config_dir, config_name = config_location(name)
    # the time to the second, and this process's suffix: two studies started in the same second
    # in one folder get a folder and an MLflow parent each (zoo.config.origin.sweep_id)
    sweep_dir = os.path.join("multirun", config_name, f"{scale}-{time.strftime('%Y%m%d-%H%M%S')}-{sweep_id()}")
    argv = ["-m", "--config-dir", config_dir, "--config-name", config_name,
            f"+study.scale={scale}", f"hydra.sweep.dir={sweep_dir}",
            f"tracking.resume={'false' if force else 'true'}", *study.overrides(scale)]
    return argv + launcher + list(extra)


def check_overrides(name: str, hydra_args: list[str], extra: list[str] = ()):
    """Compose and validate (zoo.training.spec, no TensorFlow) every job of the study's sweep as this
    command makes it, scale and extra overrides included, and check the claim's metrics against
    those runs (zoo.cli.precheck, what ``zoo-train -m`` does); the first job's spec. Raises
    SpecError, or Hydra's own exception for an override it refuses. ``extra`` is kept for
    callers of the earlier signature; ``hydra_args`` holds them."""
    return check_command(list(hydra_args)).specs[0]


def repair_before(spec) -> None:
    """End the runs of this study's experiment whose process is gone, and say which."""
    if not spec.tracking.uri:
        return
    try:
        repaired = orphans.repair(spec.tracking.uri, spec.tracking.experiment)
    except Exception as err:
        print(f"zoo-ablate: could not look for orphaned runs in {spec.tracking.uri}: "
              f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}", file=sys.stderr)
        return
    for line in orphans.describe(repaired):
        print(f"zoo-ablate: {line}")
    if repaired:
        print(f"zoo-ablate: repaired {len(repaired)} orphaned run(s) of experiment {spec.tracking.experiment}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zoo-ablate", description=__doc__.split("\n")[0],
                                     epilog="Studies live in ablations/, or give your own study file's path; "
                                            "see docs/guides/studies.md.")
    parser.add_argument("study", nargs="?", help="study name (see --list), or your study file (PATH.yaml)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. seed=1,2,3")
    parser.add_argument("--list", action="store_true", help="list the studies, one line each")
    parser.add_argument("--scale", choices=SCALES, default="full")
    parser.add_argument("--launcher", choices=LAUNCHERS.names(),
                        help="where the jobs run: " + "; ".join(f"{e.name}: {e.description}" for e in LAUNCHERS)
                        + " (default: basic, or joblib with --jobs > 1)")
    parser.add_argument("--jobs", type=int, help="jobs at once (default: 1 for basic, the cores otherwise)")
    parser.add_argument("--threads", type=int, help="TensorFlow threads per job (default: cores / jobs)")
    parser.add_argument("--address", help="Ray: an existing cluster's address (HOST:PORT or auto)")
    parser.add_argument("--force", action="store_true", help="re-run jobs that already finished")
    args = parser.parse_intermixed_args(argv)  # `zoo-ablate study --force seed=1,2` too
    try:
        if args.list or not args.study:
            listing, broken = describe()
            print(listing)
            for line in broken:
                print(f"zoo-ablate: {line}", file=sys.stderr)
            return 0
        launcher = launcher_overrides(args.launcher, args.jobs, args.address, args.threads)
    except SpecError as err:
        print(f"zoo-ablate: {err}", file=sys.stderr)
        return 2
    try:
        validate_study(args.study)  # every check against the full-scale sweep, before training
        hydra_args = hydra_argv(args.study, args.scale, launcher, args.force, args.overrides)
    except SpecError as err:
        print(f"zoo-ablate: {err}", file=sys.stderr)
        return 2
    except (*HYDRA_CONFIG_ERRORS, OmegaConfBaseException) as err:  # a study file Hydra cannot compose
        print(f"zoo-ablate: {study_file(args.study)}: {hydra_error_line(err)}", file=sys.stderr)
        return 2
    try:
        jobs = job_count(args.study, hydra_args)
        checked = check_command(list(hydra_args))  # check_overrides, keeping what the jobs share
        spec = checked.specs[0]
        if args.address:
            refused_when_joining(args.overrides)
    except SpecError as err:
        print(f"zoo-ablate: config error: {err}", file=sys.stderr)
        return 2
    except HYDRA_CONFIG_ERRORS as err:
        print(f"zoo-ablate: config error: {hydra_error_line(err)}", file=sys.stderr)
        return 2
    if args.address:
        import zoo.launch.ray_join as ray_join

        try:
            turned_on = ray_join.prepare(args.address)
        except SpecError as err:
            print(f"zoo-ablate: {err}", file=sys.stderr)
            return 2
        if turned_on:
            print(f"zoo-ablate: {turned_on}", flush=True)
    import zoo.launch.slurm as slurm

    hydra_args += slurm.overrides(checked.specs, hydra_args)  # SLURM: zoo.launch.slurm's launcher; memory by the estimate
    print(f"zoo-ablate: {args.study} at scale {args.scale}: {jobs} jobs"
          + "".join(f"; {o}" for o in hydra_args if o.startswith("hydra.launcher.mem_gb=")), flush=True)
    repair_before(spec)
    saved = sys.argv
    # the sweep folder, the store and whatever reads the environment, resolved here for every job
    sys.argv = ["zoo-train", *hydra_args, *checked.shared_overrides()]
    try:
        zoo_train.main(checked=True, prog="zoo-ablate")  # exits 1 when every job failed, 3 when some did (its last line says)
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
