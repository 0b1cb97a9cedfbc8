"""A study's Hydra callback: the sweep's parent run (zoo.tracking.sweep), plus the study's claim.

conf/config.yaml names :class:`StudyCallback` for every ``-m`` sweep; a sweep whose config has no
``study`` section gets exactly zoo.tracking.sweep's callback. For a study, before any folder,
run or job exists, its checks are validated against the sweep (zoo.studies.validate: a bad
check prints one line and exits 2, since Hydra would only warn about a callback's exception);
after the last job, while the parent run is still open, the claim is judged and the table,
plots and verdict logged on the parent (zoo.studies.judge). The parent ends after that, FAILED
if judging failed and KILLED if a stop came meanwhile: zoo.tracking.sweep ends it.
"""
from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from zoo.tracking.sweep import SweepCallback
from zoo.config.schema import SpecError
from zoo.studies.judge import judge_study
from zoo.studies.validate import validate_sweep


class StudyCallback(SweepCallback):
    """:class:`zoo.tracking.sweep.SweepCallback`, with a study checked first and judged last."""

    def check_sweep(self, config: DictConfig) -> None:
        if not OmegaConf.select(config, "study.name"):
            return
        try:
            validate_sweep(config)
        except SpecError as err:
            print(f"zoo-train: study error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    def conclude(self, c, uri: str, parent: str, config: DictConfig, run_ids: list[str], sweep_dir: Path) -> None:
        if OmegaConf.select(config, "study") is None:
            return
        judge_study(c, uri, parent, config.study, run_ids, sweep_dir)
