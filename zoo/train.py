"""``zoo-train``: one instrumented training run per Hydra job (``-m`` for sweeps).

Thin on purpose: compose (Hydra), validate (zoo.spec, no TensorFlow), then hand over to
zoo.run. A config error prints one line and exits 2 before TensorFlow is imported. Within a
sweep a job never kills the sweep: a config error or a crash is logged and recorded (the crash
as a FAILED MLflow run with its error), and the next job runs. With ``tracking.resume=true`` a
job whose config and seed already have a FINISHED run is skipped (see zoo.tracking.runs).
"""
from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from zoo._lazy import pin_backend
from zoo.schema import SpecError
from zoo.spec import validate

log = logging.getLogger("zoo")


def _run_name() -> str | None:
    job = HydraConfig.get().job
    return job.override_dirname or None


@hydra.main(version_base="1.3", config_path="pkg://zoo.conf", config_name="config")
def main(cfg: DictConfig):
    hydra_cfg = HydraConfig.get()
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        spec = validate(cfg)
    except SpecError as err:
        if sweeping:
            log.error("config error, job skipped: %s", err)
            return None
        print(f"zoo-train: config error: {err}", file=sys.stderr)
        sys.exit(2)
    pin_backend()
    from zoo.run import run
    from zoo.tracking import sink_for
    from zoo.tracking.runs import config_hash, find_finished
    from zoo.tracking.sweep import parent_run_id, write_job_record

    parent = parent_run_id(hydra_cfg.sweep.dir) if sweeping and spec.tracking.uri else None
    job = {"job": hydra_cfg.job.num if sweeping else 0, "parent_run_id": parent}
    if spec.tracking.resume and spec.tracking.uri:
        done = find_finished(spec.tracking.uri, spec.tracking.experiment, config_hash(spec.resolved))
        if done:
            log.info("already finished as MLflow run %s with this config and seed: skipped", done)
            print(f"zoo-train: skipped, already finished as MLflow run {done}")
            if sweeping:
                write_job_record(hydra_cfg.runtime.output_dir, run_id=done, reused=True, **job)
            return "skipped"
    sink = sink_for(spec.tracking, parent)
    try:
        result = run(spec, sink, run_name=_run_name())
    except Exception as err:
        if not sweeping:
            raise
        log.exception("job failed (recorded as a FAILED run); the sweep goes on")
        write_job_record(hydra_cfg.runtime.output_dir, run_id=sink.run_id, error=f"{type(err).__name__}: {err}", **job)
        return None
    if sweeping:
        write_job_record(hydra_cfg.runtime.output_dir, run_id=result.run_id, outcome=result.outcome, **job)
    print(f"zoo-train: {result.outcome} after {len(result.stats.step)} steps; "
          f"verdict {result.verdict.label} ({result.verdict.reason})"
          + (f"; MLflow run {result.run_id} in {spec.tracking.uri}" if spec.tracking.uri else ""))
    return result.verdict.label


if __name__ == "__main__":
    main()
