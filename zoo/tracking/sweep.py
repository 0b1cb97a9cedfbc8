"""One MLflow parent run per sweep, a nested child run per job, resume, and the sweep's count.

Hydra has no MLflow integration; its callbacks are the hook. ``on_multirun_start`` (in the
launching process) lets a subclass refuse the sweep first (:meth:`SweepCallback.check_sweep`),
creates the parent run (tagged with the sweep's key, ``hydra.sweep.dir``) and leaves its id in
``<sweep dir>/zoo_sweep.json``. Each job, in whatever process or machine the launcher gives it,
finds the parent (that file, or the store for a worker on another machine), asks
:func:`skip_if_finished` (resume: a FINISHED run with the same config hash is reused), tags its
own run with ``mlflow.parentRunId`` (MlflowClient, no fluent "active run", so neither a previous
job's run nor a stray MLFLOW_RUN_ID can capture it) and hands its record back as a tag of the
parent (:func:`record_job`), so nothing depends on a shared disk. ``on_multirun_end`` ends the
runs of workers that died (KILLED), gathers the records, adopts the runs a resumed sweep reused
from an earlier invocation of the same study (a run another study trained stays nested there),
lists every reused run and why in ``zoo.reused_runs``, lets a subclass conclude while the parent
is still open (:meth:`SweepCallback.conclude`) and ends the parent last. The callback
conf/config.yaml names is the studies package's StudyCallback: this one, plus a study's claim
checked against its sweep first and judged at the end; this floor imports no study code. Hydra
calls no callback on Ctrl-C or SIGTERM: zoo.cli.train then ends the parent (and any job) as
KILLED (zoo.tracking.repair.close_owned); after SIGKILL the next ``zoo-ablate`` repairs them.

A sweep is one folder and one key: the default folder ends in :func:`zoo.config.origin.sweep_id` (this process's
pid and a random suffix, conf/config.yaml's ``hydra.sweep.dir``), so two sweeps started in the
same second in the same place no longer share a folder, a parent file and a key (before: every
job trained twice, all nested under the second parent, the first parent left RUNNING). A folder
given by hand is locked for the sweep's life (:func:`lock_sweep_dir`): a second sweep into it is
refused. Each callback ends the parent it created, not whatever the folder's file names now.
``on_multirun_end`` also counts the jobs (:class:`SweepOutcome`: finished, reused, failed, lost)
for zoo.cli.train's last line and exit code: 1 when every job failed, 3 when some did.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from zoo.config.origin import sweep_id  # noqa: F401  (registers ${zoo.sweep_id:}, which the sweep folder names)
from zoo.config.origin import sweep_jobs
from zoo.config.schema import SpecError
from zoo.runtime.stopping import check, name_of
from zoo.tracking import names, provenance
from zoo.tracking.repair import describe, keep_alive, record_end, repair
from zoo.tracking.runs import client, experiment_id, find_finished

log = logging.getLogger("zoo")
SWEEP_FILE = "zoo_sweep.json"
SWEEP_KEY = "zoo.sweep_key"
SWEPT_KEYS = "zoo.swept_keys"  # the keys the sweep varies, which name its jobs (zoo.tracking.names)
JOB_TAG = "zoo.job."


LOCK_FILE = "zoo_sweep.lock"
JOB_FILE = "zoo_job.json"  # a job's record in its own folder, for sweeps without MLflow

_locks: dict[str, object] = {}  # held until this process ends


def lock_sweep_dir(sweep_dir: Path) -> None:
    """Hold ``<sweep dir>/zoo_sweep.lock`` for the sweep's life; SpecError when another live
    sweep holds it (two sweeps in one folder would share its parent file and job folders)."""
    import fcntl


    key = str(sweep_dir.resolve())
    if key in _locks:
        return
    handle = open(sweep_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "?"
        handle.close()
        raise SpecError("hydra.sweep.dir", f"{sweep_dir} is in use by another sweep that is still running "
                                           f"(pid {owner}); give this one its own folder, or leave "
                                           f"hydra.sweep.dir unset (each sweep then gets a new one)") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _locks[key] = handle


def parent_run_id(sweep_dir: str | Path) -> str | None:
    path = Path(sweep_dir) / SWEEP_FILE
    return json.loads(path.read_text())["parent_run_id"] if path.is_file() else None


def _sweeping(hydra_cfg) -> bool:
    return hydra_cfg.mode == RunMode.MULTIRUN


def _sweep_key(sweep_dir) -> str:
    """The sweep as every job's config names it (``hydra.sweep.dir`` as configured, the same
    string on every machine), for jobs that do not share the launcher's disk."""
    return str(sweep_dir)[:5000]


_parents: dict[tuple[str, str, str], str] = {}  # a warm worker asks once per sweep


def _parent_in_store(uri: str, experiment: str, key: str) -> str | None:
    if (uri, experiment, key) in _parents:
        return _parents[uri, experiment, key]
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        return None
    found = c.search_runs([exp.experiment_id], f"tags.`{SWEEP_KEY}` = '{key}' and attributes.status = 'RUNNING'",
                          order_by=["attributes.start_time DESC"], max_results=1)
    if found:
        _parents[uri, experiment, key] = found[0].info.run_id
    return found[0].info.run_id if found else None


def parent_for(spec, hydra_cfg) -> str | None:
    """The sweep's parent run a job nests under (None outside a sweep or without MLflow): from
    the sweep folder's file where the job shares the launcher's disk, else (a Ray or SLURM
    worker on another machine) the RUNNING parent tagged with this sweep's key in the store."""
    if not (_sweeping(hydra_cfg) and spec.tracking.uri):
        return None
    return parent_run_id(hydra_cfg.sweep.dir) or _parent_in_store(
        spec.tracking.uri, spec.tracking.experiment, _sweep_key(hydra_cfg.sweep.dir))


def swept_keys_of(spec, hydra_cfg) -> list[str] | None:
    """The keys this job's sweep varies, as ``on_multirun_start`` recorded them: in the sweep
    folder's file, else on the parent run in the store; None outside a sweep or without MLflow."""
    if not (_sweeping(hydra_cfg) and spec.tracking.uri):
        return None
    path = Path(hydra_cfg.sweep.dir) / SWEEP_FILE
    if path.is_file():
        return json.loads(path.read_text()).get("swept_keys")
    parent = parent_for(spec, hydra_cfg)
    if parent is None:
        return None
    recorded = client(spec.tracking.uri).get_run(parent).data.tags.get(SWEPT_KEYS)
    return json.loads(recorded) if recorded else None


def record_job(spec, hydra_cfg, **record) -> None:
    """Hand this job's record to ``on_multirun_end`` as a tag of the sweep's parent run,
    ``zoo.job.<number>`` (through the store, so from any machine), and as ``zoo_job.json`` in
    the job's folder (what a sweep without MLflow counts); nothing outside a sweep. ``spec``
    None: a job whose config failed validation, found through the sweep folder's file."""
    if not _sweeping(hydra_cfg):
        return
    record = {"job": hydra_cfg.job.num, **{k: v[:2000] if isinstance(v, str) else v for k, v in record.items()}}
    try:
        folder = Path(str(hydra_cfg.runtime.output_dir))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / JOB_FILE).write_text(json.dumps(record))
    except Exception as err:  # a read-only or remote folder: the store's record still counts
        log.warning("could not write job %s's record in its folder: %s", hydra_cfg.job.num, err)
    if spec is not None:
        parent, uri = parent_for(spec, hydra_cfg), spec.tracking.uri
    else:
        path = Path(str(hydra_cfg.sweep.dir)) / SWEEP_FILE
        found = json.loads(path.read_text()) if path.is_file() else {}
        parent, uri = found.get("parent_run_id"), found.get("uri")
    if parent is None or not uri:
        return
    try:
        client(uri).set_tag(parent, f"{JOB_TAG}{int(hydra_cfg.job.num):05d}", json.dumps(record))
    except Exception as err:  # the run itself is safe in the store; the sweep goes on without its record
        log.error("could not leave job %s's record on the sweep's parent run %s: %s", hydra_cfg.job.num, parent, err)


@dataclass
class SweepOutcome:
    """How a sweep's jobs ended, for zoo.cli.train's last line and exit code."""
    jobs: int                                          # jobs the sweep ran (or meant to)
    failed: int = 0                                    # crashed, refused, killed or lost
    reused: int = 0                                    # skipped: a FINISHED run had their config
    failures: list[str] = field(default_factory=list)  # what went wrong, a short line each
    parent: str | None = None

    @property
    def exit_code(self) -> int:
        """0: every job finished (trained to the end, diverged, or reused); 1: every job failed
        (nothing to judge); 3: some failed (a study is judged without them)."""
        return 0 if not self.failed else 1 if self.failed >= self.jobs else 3

    def line(self) -> str:
        where = f"; MLflow parent run {self.parent}" if self.parent else ""
        if not self.failed:
            reused = f" ({self.reused} reused)" if self.reused else ""
            return f"sweep finished: all {self.jobs} jobs finished{reused}{where}"
        head = (f"sweep failed: all {self.jobs} jobs failed" if self.exit_code == 1
                else f"sweep finished with failures: {self.failed} of {self.jobs} jobs failed")
        more = f"; and {len(self.failures) - 1} more" if len(self.failures) > 1 else ""
        return f"{head} ({self.failures[0]}{more}){where}; exit code {self.exit_code}"


LAST_OUTCOME: list[SweepOutcome] = []  # set by on_multirun_end in the launching process


def _failure(record: dict) -> str:
    error = str(record.get("error", "")).strip().splitlines()
    return f"job {record.get('job', '?')}: {error[0] if error else 'failed'}"[:300]


def outcome_of(records: list[dict], expected: int | None, killed: int = 0,
               parent: str | None = None) -> SweepOutcome:
    """Count the jobs' records (one per job number: a job the launcher re-ran overwrote its
    record): one with an ``error`` is a failed job, and so is a job that left no record, because
    its worker died (``killed`` runs ended by the repair) or for no known reason; the rest
    finished (``outcome`` finished or diverged) or were reused. A killed run whose job has a
    record was re-run by the launcher (Ray retries a task whose worker died) and failed nothing;
    runs carry no job number, so with ``expected`` known the killed runs fill the jobs without a
    record first."""
    errors = [r for r in records if r.get("error")]
    if expected:
        unrecorded = max(0, expected - len(records))
        died = min(killed, unrecorded)
        jobs, lost = max(expected, len(records)), unrecorded - died
    else:
        died, lost, jobs = killed, 0, len(records) + killed
    failures = [_failure(r) for r in errors]
    if died:
        failures.append(f"{died} job(s) whose worker died, ended as KILLED")
    if lost:
        failures.append(f"{lost} job(s) left no record")
    return SweepOutcome(jobs, len(errors) + died + lost, sum(bool(r.get("reused")) for r in records),
                        failures, parent)


def skip_if_finished(spec, hydra_cfg) -> str | None:
    """With ``tracking.resume``: the FINISHED run with this job's config hash, recorded as reused
    (the job is then skipped); None when the job should run."""
    if not (spec.tracking.resume and spec.tracking.uri):
        return None
    digest = spec.config_hash
    done = find_finished(spec.tracking.uri, spec.tracking.experiment, digest)
    if done:
        log.info("already finished as MLflow run %s with this config and seed: skipped", done)
        record_job(spec, hydra_cfg, run_id=done, reused=True, config_hash=digest)
    return done


def job_records(c, parent: str) -> list[dict]:
    """The records the sweep's jobs left on its parent run, by job number."""
    tags = c.get_run(parent).data.tags
    return sorted((json.loads(v) for k, v in tags.items() if k.startswith(JOB_TAG)), key=lambda r: r.get("job", 0))


def _study_of_parent(c, run_id: str) -> str | None:
    parent = c.get_run(run_id).data.tags.get("mlflow.parentRunId")
    return c.get_run(parent).data.tags.get("zoo.study") if parent else None


class SweepCallback(Callback):
    """The sweep's parent run, its jobs' records and its outcome. A subclass adds what a kind of
    sweep needs through :meth:`check_sweep` (before anything is made) and :meth:`conclude`
    (after the jobs, before the parent run ends)."""

    @staticmethod
    def _repair(uri: str, config: DictConfig) -> list:
        """End the runs of workers that died during the sweep (SIGKILL, the OOM killer; Ray has
        re-run their jobs) as KILLED, so none is left RUNNING; the orphans ended."""
        try:
            killed = repair(uri, config.tracking.experiment)
        except Exception as err:  # the sweep's results matter more; zoo-runs repair can do it later
            log.warning("could not look for the runs of dead workers: %s", err)
            return []
        for line in describe(killed):
            log.warning("%s", line)
        return killed

    def __init__(self) -> None:
        self._parent: str | None = None    # the parent run this sweep created (not the folder's file's)
        self._uri: str | None = None
        self._expected: int | None = None  # jobs the sweeper will run

    @staticmethod
    def _expected_jobs(config: DictConfig) -> int | None:
        """The number of jobs Hydra's basic sweeper makes of this config; None for another sweeper."""
        try:
            jobs = sweep_jobs(config)
            return None if jobs is None else len(jobs)
        except Exception:  # the count only names lost jobs; the sweep itself will say what is wrong
            return None

    def check_sweep(self, config: DictConfig) -> None:
        """Refuse the sweep before any folder, run or job exists: print one line and raise
        SystemExit (Hydra turns a callback's other exceptions into a warning and goes on). A
        plain sweep has nothing to check here: zoo-train checked its jobs' configs before Hydra ran."""

    def conclude(self, c, uri: str, parent: str, config: DictConfig, run_ids: list[str], sweep_dir: Path) -> None:
        """After the jobs, with the parent run ``parent`` still open (``c``: a client of ``uri``;
        ``run_ids``: the runs the jobs made or reused): log what the sweep amounts to. An
        exception fails the parent run with it; a plain sweep adds nothing."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        LAST_OUTCOME.clear()
        self.check_sweep(config)
        study = OmegaConf.select(config, "study.name")
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        try:
            lock_sweep_dir(sweep_dir)
        except SpecError as err:
            print(f"zoo-train: config error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        for stale in sweep_dir.glob(f"*/{JOB_FILE}"):  # an earlier sweep's, in a folder given twice
            stale.unlink(missing_ok=True)
        self._expected = self._expected_jobs(config)
        uri = OmegaConf.select(config, "tracking.uri")
        if not uri:
            return
        c = client(uri)
        keep_alive(uri, config.tracking.experiment)  # the parent's heartbeat; Ctrl-C closes it (zoo.cli.train)
        tags = {"zoo.kind": "study" if study else "sweep", "zoo.sweep_dir": str(sweep_dir.resolve()),
                SWEEP_KEY: _sweep_key(config.hydra.sweep.dir),
                **{k: v for k, v in provenance.tags(0).items() if k != "zoo.seed"},
                "zoo.launcher": provenance.launcher(OmegaConf.select(config, "hydra.runtime.choices"))}
        varied = names.swept_keys(config.hydra.overrides.task, OmegaConf.select(config, "hydra.sweeper.params"),
                                  first=OmegaConf.select(config, "study.variant_keys", default=None) or ())
        tags[SWEPT_KEYS] = json.dumps(varied)
        if study:
            tags["zoo.study"] = study
            tags["zoo.scale"] = str(OmegaConf.select(config, "study.scale", default="full"))
        run = c.create_run(experiment_id(c, config.tracking.experiment, uri),
                           run_name=names.sweep_name(study, varied), tags=tags)
        swept = {**(OmegaConf.select(config, "hydra.sweeper.params") or {}),
                 **dict(o.split("=", 1) for o in config.hydra.overrides.task if "=" in o)}
        for key, value in swept.items():
            c.log_param(run.info.run_id, f"sweep.{key.lstrip('+~')}"[:250], str(value)[:6000])
        self._parent, self._uri = run.info.run_id, uri
        (sweep_dir / SWEEP_FILE).write_text(json.dumps({"parent_run_id": run.info.run_id, "uri": uri,
                                                        "swept_keys": varied}))
        log.info("sweep parent run %s (%s)", run.info.run_id, study or "sweep")

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        parent, uri = self._parent, self._uri
        if parent is None and (sweep_dir / SWEEP_FILE).is_file():  # a callback made elsewhere
            found = json.loads((sweep_dir / SWEEP_FILE).read_text())
            parent, uri = found["parent_run_id"], found["uri"]
        if parent is None:  # no MLflow: the jobs left their records in their folders
            records = {}
            for path in sweep_dir.glob(f"*/{JOB_FILE}"):
                record = json.loads(path.read_text())
                records[record.get("job")] = record
            LAST_OUTCOME[:] = [outcome_of(sorted(records.values(), key=lambda r: r.get("job", 0)), self._expected)]
            return
        c = client(uri)
        killed = [o for o in self._repair(uri, config)  # this sweep's jobs, not another's orphans
                  if c.get_run(o.run_id).data.tags.get("mlflow.parentRunId") == parent]
        jobs = job_records(c, parent)
        outcome = outcome_of(jobs, self._expected, len(killed), parent)
        LAST_OUTCOME[:] = [outcome]
        run_ids = [j["run_id"] for j in jobs if j.get("run_id")]
        study = OmegaConf.select(config, "study.name")
        reused = [j for j in jobs if j.get("reused")]
        for job in reused:
            if _study_of_parent(c, job["run_id"]) == study:  # an earlier invocation of this study: adopt it
                c.set_tag(job["run_id"], "mlflow.parentRunId", parent)
        c.set_tag(parent, "zoo.jobs", str(len(jobs)))
        c.set_tag(parent, "zoo.jobs_reused", str(len(reused)))
        if killed:
            c.set_tag(parent, "zoo.jobs_killed", "\n".join(f"{o.run_id}: {o.reason}" for o in killed)[:5000])
        if reused:  # what was reused and why; runs of another study stay nested where they were trained
            c.set_tag(parent, "zoo.reused_runs", "\n".join(
                f"{j['run_id']}: same config hash {j.get('config_hash', '?')}" for j in reused)[:5000])
        c.set_tag(parent, "zoo.jobs_failed", str(outcome.failed))
        if outcome.failures:
            c.set_tag(parent, "zoo.job_failures", "\n".join(outcome.failures)[:5000])
        status = "FAILED" if outcome.exit_code == 1 else "FINISHED"  # every job failed: nothing came of it
        ending = {"zoo.outcome": status.lower()}
        try:
            self.conclude(c, uri, parent, config, run_ids, sweep_dir)
            check()  # a stop whose raise a callback swallowed while concluding
        except Exception as err:  # the children are safe; say why the conclusion (a verdict) is missing
            status, ending = "FAILED", {"zoo.outcome": "failed", "zoo.error": f"{type(err).__name__}: {err}"[:5000]}
            log.exception("concluding the sweep failed (%s)", type(self).__name__)
        except KeyboardInterrupt as stop:  # Ctrl-C, SIGTERM while concluding: not FINISHED without a verdict
            status, ending = "KILLED", {"zoo.outcome": "killed", "zoo.killed": name_of(stop)}
            raise
        finally:  # as a job's run: FINISHED only with everything written, the outcome last
            for key, value in ending.items():
                c.set_tag(parent, key, value)
            c.set_terminated(parent, status)
            record_end(parent, status)
