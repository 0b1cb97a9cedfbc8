"""``zoo-train``: one instrumented training run per Hydra job (``-m`` for sweeps).

Thin on purpose: compose (Hydra), validate (zoo.spec, no TensorFlow), then hand over to
zoo.run. A config error prints one line and exits 2 before TensorFlow is imported; within a
sweep it fails only its own job, and the sweep goes on.
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
    try:
        spec = validate(cfg)
    except SpecError as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            log.error("config error, job skipped: %s", err)
            return None
        print(f"zoo-train: config error: {err}", file=sys.stderr)
        sys.exit(2)
    pin_backend()
    from zoo.run import run
    from zoo.tracking import sink_for

    result = run(spec, sink_for(spec.tracking), run_name=_run_name())
    print(f"zoo-train: {result.outcome} after {len(result.stats.step)} steps; "
          f"verdict {result.verdict.label} ({result.verdict.reason})"
          + (f"; MLflow run {result.run_id} in {spec.tracking.uri}" if spec.tracking.uri else ""))
    return result.verdict.label


if __name__ == "__main__":
    main()
