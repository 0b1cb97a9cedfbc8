"""Run names that read in MLflow's runs table: what differs first, the verdict in front once known.

MLflow 3.17's runs table shows, unconfigured, the columns Run Name, Created, Dataset, Duration,
Source and Models (its default ``selectedColumns`` are Source, Models and Dataset); Description,
User, Version, params and tags are hidden until chosen, and a name is cut after ~20 characters
(the column is ~190 px wide; a nested run's fewer). So the run name is where a user sees a verdict first, and only its
start is read. A job is named by the values of its overrides, compactly (``sigmoid · depth=20``
for ``model.activation=sigmoid model.depth=20``): in a sweep only the keys the sweep varies, a
study's variant keys first, so siblings differ from their first word and the name is the same
every time the same sweep runs; outside a sweep every override (bookkeeping keys left out:
``hydra.job.config.override_dirname.exclude_keys``). When the run ends with a verdict, the
verdict goes in front: ``vanishing · sigmoid · depth=20``; a study's parent gets its claim's
verdict the same way.
"""
from __future__ import annotations

SEP = " · "
SELF_NAMED = ("activation", "init")  # keys whose values read on their own: sigmoid, he_normal


def _parse(overrides) -> list:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides([str(o) for o in overrides])


def part(key: str, value: str, groups=()) -> str:
    """One override as a name reads it: a config group's choice or a self-named value alone
    (``resnet``, ``sigmoid``), anything else ``leaf=value`` (``depth=20``, ``standardize=False``)."""
    leaf = key.split(".")[-1]
    return value if key in groups or leaf in SELF_NAMED else f"{leaf}={value}"


def job_name(task_overrides, exclude=(), swept: list[str] | None = None, groups=()) -> str | None:
    """The name of a run made with ``task_overrides`` (Hydra's ``hydra.overrides.task``): the
    overrides of the keys in ``swept``, in that order, when there are any; otherwise every
    override not in ``exclude`` (a key there leaves out the keys under it too: ``tracking``
    covers ``tracking.log_model``), config groups first in the order of ``groups`` (Hydra's
    ``runtime.choices``: model, data, optimizer), then by key. None when nothing is left."""
    dropped = tuple(str(e).lstrip("+~") for e in exclude)
    found = {}
    for override in _parse(task_overrides):
        key = override.key_or_group
        if override.is_delete() or any(key == d or key.startswith(f"{d}.") for d in dropped):
            continue
        found[key] = override.get_value_element_as_str()
    keys = [k for k in swept or () if k in found]
    if not keys:
        rank = {g: i for i, g in enumerate(groups)}
        keys = sorted(found, key=lambda k: (rank.get(k, len(rank)), k))
    return SEP.join(part(k, found[k], groups) for k in keys) or None


def swept_keys(task_overrides, sweeper_params: dict | None, first=()) -> list[str]:
    """The keys a sweep gives several values, as the basic sweeper combines them (the sweeper's
    ``params`` from the config, then the command line's overrides, the later one winning):
    ``first`` (a study's variant keys) in their order, then the others by key."""
    lines = [f"{k}={v}" for k, v in (sweeper_params or {}).items()] + [str(o) for o in task_overrides]
    last = {}
    for override in _parse(lines):
        last[override.key_or_group] = override.is_sweep_override()
    varying = [k for k, sweeps in last.items() if sweeps]
    return [k for k in first if k in varying] + sorted(k for k in varying if k not in first)


def judged(name: str | None, verdict: str | None) -> str | None:
    """``name`` with ``verdict`` in front (``vanishing · sigmoid``); ``name`` when there is none."""
    if not verdict:
        return name
    return f"{verdict}{SEP}{name}" if name else verdict


def sweep_name(study: str | None, swept: list[str]) -> str:
    """A sweep's parent run: the study's name, or ``sweep`` and the keys it varies by their
    leaf (``sweep · activation × init``), so two sweeps in one experiment read apart; the time
    is the runs table's *Created* column."""
    if study:
        return study
    return SEP.join(["sweep", " × ".join(k.split(".")[-1] for k in swept)]) if swept else "sweep"
