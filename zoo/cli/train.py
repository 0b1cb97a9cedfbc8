"""``zoo-train``: one instrumented training run per Hydra job (``-m`` for sweeps).

Thin on purpose: check every job's config (zoo.cli.precheck), compose (Hydra), validate (zoo.training.spec,
no TensorFlow), maybe skip (resume), then hand over to zoo.training.run. A config error, Hydra's own
included (an unknown group option, a sweep without ``-m``, an override that does not parse), a
YAML error or an interpolation that does not resolve, in any job of a sweep, prints one line
and exits 2 before the first job, before TensorFlow is imported and before Hydra makes a
folder. Within a sweep a job never kills the sweep: a crash (or a config refused inside the job,
when something changed since the check) is recorded (the crash as a FAILED MLflow run with its
error), and the next job runs; the sweep's last line counts the failed jobs, and the exit code
is 1 when all failed, 3 when some did (zoo.tracking.sweep.SweepOutcome). With
``tracking.resume=true`` a job whose config and seed already have a FINISHED run is skipped
(zoo.tracking.sweep.skip_if_finished).

Ctrl-C and SIGTERM take the same path: SIGTERM raises :class:`zoo.runtime.stopping.Terminated` (a
KeyboardInterrupt) in the main thread, and the request is recorded, so that a raise swallowed
on the way is raised again at the next training step or job (zoo.runtime.stopping). zoo.training.run ends the
job's run as KILLED (``zoo.outcome=killed``), and on the way out every run this process still has open, a sweep's parent included (Hydra calls no callback
then), is ended as KILLED too; with the joblib launcher the jobs of workers that died with the
sweep are repaired (zoo.tracking.repair). Exit code 130 (SIGINT) or 143 (SIGTERM). Signals
after the first do not cut that cleanup short; the third, or a stop still running 30 s after
the first signal, exits at once, and interpreter exit gets 5 s (zoo.runtime.stopping).
"""
from __future__ import annotations

import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, OverrideParseException, SearchPathException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

import zoo.runtime.stopping as stopping
from zoo._lazy import pin_backend
from zoo.cli import stopped
from zoo.cli.stopped import close_open_runs
from zoo.config.schema import SpecError
from zoo.training.spec import validate
from zoo.tracking import names, repair, sink_for, sweep
from zoo.cli.precheck import check_command, yaml_error
from zoo.tracking.runs import client, ui_link

log = logging.getLogger("zoo")


def _run(spec, hydra_cfg, sweeping: bool):
    """Train one job; inside a sweep a crash is recorded and the sweep goes on."""
    from zoo.training.run import run  # imports TensorFlow: 3-5 s
    # a signal during that import is raised inside it, where its own error handling can swallow
    # it (seen: the job's run made, then KILLED at its first step, 3.6 s after SIGTERM)
    stopping.check()
    sink = sink_for(spec.tracking, sweep.parent_for(spec, hydra_cfg))
    try:
        result = run(spec, sink, run_name=run_name(spec, hydra_cfg))
    except SpecError as err:  # found while building (a user's builder, data that does not fit it)
        if not sweeping:
            remove_run_folder(hydra_cfg)
            print(f"zoo-train: config error: {one_line(str(err))}", file=sys.stderr)
            sys.exit(2)  # zoo.training.run recorded the run as FAILED with its error
        log.error("config error, job recorded as a FAILED run; the sweep goes on: %s", err)
        sweep.record_job(spec, hydra_cfg, run_id=sink.run_id, error=f"SpecError: {err}")
        return None
    except KeyboardInterrupt as stop:  # zoo.training.run ended the run KILLED: say by what, there and to the sweep
        name = stopping.name_of(stop)
        try:
            sink.set_tags({"zoo.killed": name})
            sweep.record_job(spec, hydra_cfg, run_id=sink.run_id, error=f"stopped by {name}")
        except Exception as err:  # the stop goes on; zoo.cli.train closes what is still open
            log.warning("could not record the stop: %s", err)
        raise
    except SystemExit as stop:  # zoo.training.run ended the run FAILED; nothing in the zoo exits mid-run
        sink.set_tags({"zoo.error": f"SystemExit({stop.code}) mid-run: the job's runner exited (submitit "
                                    "does when it requeues a SLURM job that timed out or was preempted; "
                                    "the requeued job starts again from step 0)"})
        raise
    except Exception as err:
        try:  # zoo.training.run says why for a failed step; this also covers a failure while writing the report
            sink.set_tags({"zoo.error": f"{type(err).__name__}: {err}"[:5000]})
        except Exception:
            pass
        if not sweeping:
            raise
        log.exception("job failed (recorded as a FAILED run); the sweep goes on")
        sweep.record_job(spec, hydra_cfg, run_id=sink.run_id, error=f"{type(err).__name__}: {err}")
        return None
    sweep.record_job(spec, hydra_cfg, run_id=result.run_id, outcome=result.outcome)
    print(f"zoo-train: {result.summary_line()}"
          + (f"; MLflow run {result.run_id} in {spec.tracking.uri}{_ui(spec, result.run_id)}" if spec.tracking.uri else ""))
    return result.verdict.label


def _ui(spec, run_id: str) -> str:
    """' (UI: <link>)' for a run on a tracking server, in MLflow's machine-learning view (MLflow
    3.17 opens experiments on its GenAI overview otherwise: zoo.tracking.runs.ML_VIEW)."""
    if not spec.tracking.uri.startswith(("http://", "https://")):
        return ""
    try:
        experiment = client(spec.tracking.uri).get_run(run_id).info.experiment_id
    except Exception:  # the link is a convenience; the run is recorded
        return ""
    return f" (UI: {ui_link(spec.tracking.uri, experiment, run_id)})"


def run_name(spec, hydra_cfg) -> str | None:
    """What differs, compactly (zoo.tracking.names): in a sweep the values of the keys it varies,
    else every override but the bookkeeping (``hydra.job.config.override_dirname.exclude_keys``)."""
    return names.job_name(hydra_cfg.overrides.task, hydra_cfg.job.config.override_dirname.exclude_keys,
                          sweep.swept_keys_of(spec, hydra_cfg), list(hydra_cfg.runtime.choices))


@hydra.main(version_base="1.3", config_path="pkg://zoo.conf", config_name="config")
def app(cfg: DictConfig):
    """One job, in whatever process the launcher gives it (a loky worker has its own signals)."""
    stopping.install()
    stopping.check()  # a stop whose first raise was swallowed: no new job starts
    hydra_cfg = HydraConfig.get()
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        spec = validate(cfg)
    except SpecError as err:  # zoo.cli.precheck passed it: something changed since (memory, a server)
        if sweeping:
            log.error("config error, job recorded as failed; the sweep goes on: %s", err)
            sweep.record_job(None, hydra_cfg, error=f"SpecError: {err}")
            return None
        remove_run_folder(hydra_cfg)
        print(f"zoo-train: config error: {one_line(str(err))}", file=sys.stderr)
        sys.exit(2)
    pin_backend()
    repair.keep_alive(spec.tracking.uri, spec.tracking.experiment)
    try:
        done = sweep.skip_if_finished(spec, hydra_cfg)
        if done:
            print(f"zoo-train: skipped, already finished as MLflow run {done}")
            return "skipped"
        return _run(spec, hydra_cfg, sweeping)
    except KeyboardInterrupt as stop:  # zoo.training.run ended the job's run; anything else still open too
        repair.close_owned("KILLED", stopping.name_of(stop))
        raise


def one_line(message: str) -> str:
    """A message on one line (a config error is one line, whoever wrote it)."""
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


def remove_run_folder(hydra_cfg) -> None:
    """Remove the run's folder that Hydra made before the config reached us (``outputs/DATE/TIME``
    with its ``.hydra/`` and log), and the date folder if that leaves it empty: a run refused
    for its config leaves nothing behind. Anything else in it, and the launch folder, stay."""
    import shutil
    from pathlib import Path

    folder = Path(str(hydra_cfg.runtime.output_dir)).resolve()
    launch = Path(str(hydra_cfg.runtime.cwd)).resolve()
    ours = {".hydra", f"{hydra_cfg.job.name}.log"}
    if folder == launch or launch not in folder.parents or not folder.is_dir() or set(os.listdir(folder)) - ours:
        return
    shutil.rmtree(folder, ignore_errors=True)
    for parent in folder.parents:  # outputs/DATE, outputs: only while empty, never the launch folder
        if parent == launch:
            break
        try:
            parent.rmdir()
        except OSError:
            break


# --- the command: signals, Hydra's errors, nothing left open ----------------------------------
HYDRA_CONFIG_ERRORS = (OverrideParseException, ConfigCompositionException, SearchPathException)


def hydra_error_line(err: Exception) -> str:
    """Hydra's message on one line, in its own words: every line up to the config search path
    (the options it lists joined by commas), joined by '; ', and the OmegaConf cause's first line."""
    lines: list[str] = []
    for line in str(err).splitlines():
        if line.startswith("Config search path"):
            break
        if line.startswith("\t") and lines:  # an option listed under "Available options in 'model':"
            lines[-1] += (" " if lines[-1].endswith(":") else ", ") + line.strip()
        elif line.strip():
            lines.append(line.strip())
    if isinstance(err.__cause__, OmegaConfBaseException) and str(err.__cause__).strip():
        lines.append(str(err.__cause__).strip().splitlines()[0])
    text = "; ".join(line.removesuffix(".") if i < len(lines) - 1 else line for i, line in enumerate(lines))
    if isinstance(err, OverrideParseException) and err.override and err.override not in text:
        text = f"{err.override}: {text}"
    return text


def main(checked: bool = False, prog: str = "zoo-train") -> None:
    """``zoo-train``: the Hydra app, with Hydra's config errors as one line and exit code 2 (it
    would print 3-16 lines and exit 1), and no run left RUNNING when it stops early.

    Every job's config is checked first (zoo.cli.precheck; ``checked``: the caller, zoo-ablate, has
    done it), so a bad value anywhere in a sweep, a YAML error, an interpolation that does not
    resolve or a claim the overrides make impossible stops the command before the first job and
    before Hydra makes a folder. A sweep ends with one line counting its jobs; the exit code is
    1 when every job failed and 3 when some did (zoo.tracking.sweep.SweepOutcome).

    Hydra reports errors itself unless ``HYDRA_FULL_ERROR=1``, its documented switch, which makes
    the app raise them instead; set here for the call, so they can be told apart (a crash of a
    single run then prints its whole traceback, exit 1). A user who set it gets Hydra's raise.
    ``prog``: the command the user typed, which the command's own lines name (zoo-ablate's)."""
    import yaml


    stopping.install()
    pin_backend()  # before anything can import TensorFlow, here or in a joblib worker
    users_full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        if not checked:
            found = check_command(sys.argv[1:])
            if found is not None:  # a sweep's folder, store and environment, resolved here for every job
                import zoo.launch.slurm as slurm

                sys.argv += found.shared_overrides()
                sys.argv += slurm.overrides(found.specs, sys.argv[1:])  # submitit_slurm: as zoo-ablate runs it
        app()
        stopping.check()  # signalled, the command does not exit 0 whatever swallowed the raise
    except SpecError as err:  # zoo.cli.precheck's: nothing ran, nothing was made
        print(f"{prog}: config error: {one_line(str(err))}", file=sys.stderr)
        sys.exit(2)
    except yaml.YAMLError as err:  # a config file Hydra could not read (also one the precheck skipped)
        if users_full_error == "1":
            raise
        close_open_runs("FAILED", f"config error: {yaml_error(err)}")
        print(f"{prog}: config error: {yaml_error(err)}", file=sys.stderr)
        sys.exit(2)
    except HYDRA_CONFIG_ERRORS as err:
        if users_full_error == "1":
            raise
        close_open_runs("FAILED", f"config error: {hydra_error_line(err)}")  # e.g. job 2 of -m model=mlp,foo
        print(f"{prog}: config error: {one_line(hydra_error_line(err))}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as stop:  # a second signal does not raise (zoo.runtime.stopping): the cleanup runs whole
        stopped.end(prog, stop)  # exit within seconds, whatever MLflow's threads wait for
    except Exception as err:
        stop = stopping.stop_behind(err)
        if stop is not None:  # a signal that a library turned into another error: a stop all the same
            stopped.end(prog, stop)
        sweeping = _multirun()
        if sweeping:
            _wait_for_workers()
        closed = close_open_runs("FAILED", f"{type(err).__name__}: {err}")
        if not sweeping or users_full_error == "1":
            raise
        # the jobs catch their own errors, so this is the launcher: a worker it lost (submitit's
        # UncompletedJobError after a SIGKILL, joblib's TerminatedWorkerError), not our traceback
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(f"{prog}: the launcher stopped the sweep: {type(err).__name__}: {first}; {closed}. Finished "
              "runs are kept: the same zoo-ablate command resumes and re-runs only the missing jobs.",
              file=sys.stderr)
        sys.exit(1)
    finally:
        if users_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = users_full_error
    if sweep.LAST_OUTCOME:  # the sweep's last word: how many jobs failed, and the exit code
        outcome = sweep.LAST_OUTCOME.pop()
        print(f"{prog}: {outcome.line()}", file=sys.stderr if outcome.exit_code else sys.stdout, flush=True)
        if outcome.exit_code:
            sys.exit(outcome.exit_code)


def _multirun() -> bool:
    return any(a in ("-m", "--multirun") for a in sys.argv[1:])


def _wait_for_workers(timeout: float = 30.0) -> None:
    """Let a broken pool finish killing its workers before their runs are judged orphans: loky
    fails the sweep first and kills (and reaps) the other workers after, so a repair at once
    would find a run whose owner is still alive and leave it RUNNING."""
    import multiprocessing
    import time

    deadline = time.monotonic() + timeout
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.1)


if __name__ == "__main__":
    main()
