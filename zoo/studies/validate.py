"""A study checked before any training: its own section (zoo.studies.load) and every check's
variants against the jobs of its full-scale sweep.

A check naming a variant no job produces (``model.init: he`` where the sweep has
``he_normal``) would be "inconclusive: no run matches" after the whole sweep; here it fails in
about a second with one line naming the study file. Variants are matched against the params
each job's run will log (its resolved config), by meaning, as the claim checker matches runs.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from omegaconf import OmegaConf

from zoo.config.schema import SpecError
from zoo.studies.jobs import expand, job_params, study_job_params, study_jobs
from zoo.studies.load import StudyConfig, from_section, load_study, study_file
from zoo.studies.metrics import needs_of
from zoo.studies.records import fmt_variant, matches, same


def _why_no_job(variant: Mapping, params: Sequence[Mapping]) -> str:
    for key, value in variant.items():
        if not any(key in p for p in params):
            return f"no job has the param {key!r}"
        if not any(same(p[key], value) for p in params if key in p):
            seen = sorted({p[key] for p in params if key in p})
            return f"{key} is one of {', '.join(seen)} in the sweep, never {value!r}"
    return "no single job has all these values together"


def check_variants(study: StudyConfig, params: Sequence[Mapping], where: str) -> None:
    """Every ``variant`` and ``than`` of every check matches at least one job's params."""
    for i, check in enumerate(study.claim["checks"]):
        for side in ("variant", "than"):
            if side in check and not any(matches(p, check[side]) for p in params):
                raise SpecError(where, f"study.claim: claim check {i}: {side} {fmt_variant(check[side])} "
                                       f"matches none of the {len(params)} jobs of the full-scale sweep: "
                                       f"{_why_no_job(check[side], params)}")


MIN_SEEDS = 3


def check_seeds(study: StudyConfig, params: Sequence[Mapping], where: str) -> None:
    """Every variant runs at least MIN_SEEDS seeds at full scale: one seed never decides, and
    two give a spread too rough to separate anything."""
    seeds: dict[tuple, set] = {}
    for p in params:
        seeds.setdefault(tuple(str(p.get(k, "")) for k in study.variant_keys), set()).add(p.get("seed"))
    few = {k: len(v) for k, v in seeds.items() if len(v) < MIN_SEEDS}
    if few:
        variant, n = next(iter(few.items()))
        raise SpecError(where, f"study: variant {dict(zip(study.variant_keys, variant))} runs {n} "
                               f"seed(s) at full scale; sweep at least {MIN_SEEDS} (e.g. seed: 0,1,2)")


def check_metrics(study: StudyConfig, params: Sequence[Mapping], where: str) -> None:
    """Every check's metric can be logged by the runs of its sides that these jobs make (the
    command's overrides included: ``model.activation=relu`` on a claim over
    ``saturated_fraction``, which only sigmoid and tanh layers have). A side no job matches is
    left to the other checks (a quick scale runs fewer variants); a run whose config cannot tell
    (a custom model) counts as able."""
    for i, check in enumerate(study.claim["checks"]):
        needs = needs_of(str(check["metric"]))
        if needs is None:
            continue
        for side in ("variant", "than"):
            runs = [p for p in params if side in check and matches(p, check[side])]
            if runs and all(needs.test(p) is False for p in runs):
                seen = "; ".join(f"{key}={', '.join(sorted({p.get(key, 'unset') for p in runs}))}"
                                 for key in needs.keys)
                raise SpecError(where, f"study.claim: claim check {i}: {check['metric']} is logged only by "
                                       f"runs with {needs.what}, and the {len(runs)} run(s) of {side} "
                                       f"{fmt_variant(check[side])} this command makes have {seen}")


def validate_study(name: str) -> StudyConfig:
    """A study (a shipped name or a file of your own), checked; ``zoo-ablate`` calls this
    before launching."""
    study = load_study(name)
    params = study_job_params(name, study_jobs(name))
    check_variants(study, params, str(study_file(name)))
    check_seeds(study, params, str(study_file(name)))
    return study


def study_config_file(config) -> str:
    """The file a composed study config came from (its config dir and name), for messages."""
    name = str(config.hydra.job.config_name)
    for source in OmegaConf.select(config, "hydra.runtime.config_sources") or []:
        if source.get("schema") == "file" and (Path(source.path) / f"{name}.yaml").is_file():
            return str(Path(source.path) / f"{name}.yaml")
    return f"{name}.yaml"


def validate_sweep(config) -> StudyConfig:
    """The study of a running ``zoo-train -m --config-dir … --config-name S`` sweep, checked
    against the file's own (full-scale) sweep; raises SpecError so Hydra stops before any job."""
    where = study_config_file(config)
    try:
        study = from_section(config.study)
    except SpecError as err:
        raise SpecError(where, str(err)) from None
    params = {str(k): str(v) for k, v in (OmegaConf.select(config, "hydra.sweeper.params") or {}).items()}
    jobs = expand(params)
    full = job_params(str(config.hydra.job.config_name), tuple(map(tuple, jobs)), str(Path(where).parent))
    check_variants(study, full, where)
    check_seeds(study, full, where)
    return study
