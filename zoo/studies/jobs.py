"""A study's sweep as the exact list of its jobs, and the params each job's run will log.

Hydra's basic sweeper joins ``hydra.sweeper.params`` (as ``key=values``) and the command-line
overrides, parses them with Hydra's own override grammar (so ``range(0,3)``, quoting and
``+key=`` mean what they mean to Hydra), lets a later override of a key replace an earlier one,
and takes the cartesian product: one override list per job. :func:`expand` calls that same
code, so ``zoo-ablate``'s job count, the claim validation and the tests see the jobs Hydra runs.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Mapping, Sequence

from zoo.config.origin import expand_lines
from zoo.studies.load import config_location, sweep_params
from zoo.tracking.runs import flat_params


# Hydra's options that take a value (the next argument)
VALUED_OPTIONS = ("--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp")


def task_overrides(argv: Iterable[str]) -> list[str]:
    """The overrides that reach the sweeper: no options or their values (a study folder may be
    ``runs/lr=0.1``), no ``hydra.*`` or ``hydra/`` ones."""
    args = list(argv)
    values = {i + 1 for i, a in enumerate(args) if a in VALUED_OPTIONS}
    return [a for i, a in enumerate(args) if "=" in a and not a.startswith("-") and i not in values
            and not a.lstrip("+~").startswith(("hydra.", "hydra/"))]


def expand(params: Mapping[str, str], overrides: Sequence[str] = ()) -> list[list[str]]:
    """One override list per job, in Hydra's order, exactly as its basic sweeper expands them."""
    return expand_lines([f"{k}={v}" for k, v in params.items()] + task_overrides(overrides))


def study_jobs(study: str, overrides: Sequence[str] = ()) -> list[list[str]]:
    """The jobs of a study (a shipped name or a file, zoo.studies.load) with these command-line
    overrides (none: the full scale)."""
    return expand(sweep_params(study), overrides)


def job_count(study: str, overrides: Sequence[str] = ()) -> int:
    return len(study_jobs(study, overrides))


@contextlib.contextmanager
def _composer(config_dir: str):
    """Hydra's compose: with the running app's search path inside a sweep (the callback), else
    from the study's folder (one initialization for all jobs: it costs more than a job)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        yield compose
        return
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        yield compose


def study_job_params(study: str, jobs: Sequence[Sequence[str]]) -> tuple[dict[str, str], ...]:
    """:func:`job_params` of a study named as ``zoo-ablate`` takes it (a shipped name or a file)."""
    config_dir, config_name = config_location(study)
    return job_params(config_name, tuple(map(tuple, jobs)), config_dir)


@functools.lru_cache(maxsize=None)
def job_params(config_name: str, jobs: tuple[tuple[str, ...], ...],
               config_dir: str | None = None) -> tuple[dict[str, str], ...]:
    """The params each job's run logs (its resolved config, flattened as MLflow stores it), the
    config ``config_name`` in ``config_dir`` (default: the shipped studies' folder).

    Jobs that differ only in ``seed`` compose once (Hydra's composition is ~65 ms a job) unless a
    config value interpolates the seed. Cached: ``zoo-ablate`` and the sweep callback in the same
    process compose once."""
    from omegaconf import OmegaConf

    import zoo.training.spec  # noqa: F401  (registers the config's resolvers, e.g. zoo.matched_init)
    def params_of(cfg) -> dict[str, str]:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        resolved.pop("study", None)  # the study is the parent's, not the job's
        return flat_params(resolved)

    composed: dict[tuple[str, ...], tuple[dict, bool]] = {}
    out = []
    with _composer(config_dir or config_location(config_name)[0]) as compose:
        for job in jobs:
            seed = [o for o in job if o.split("=", 1)[0] == "seed"]
            rest = tuple(o for o in job if o not in seed)
            if rest not in composed:
                cfg = compose(config_name=config_name, overrides=list(job))
                composed[rest] = (params_of(cfg), "${seed}" in str(OmegaConf.to_container(cfg, resolve=False)))
            params, uses_seed = composed[rest]
            if uses_seed:
                params = params_of(compose(config_name=config_name, overrides=list(job)))
            elif seed:
                params = {**params, "seed": seed[-1].split("=", 1)[1]}
            out.append(params)
    return tuple(out)
