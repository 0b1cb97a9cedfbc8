"""Every job of a ``zoo-train`` command checked before the first one starts (no TensorFlow).

Hydra validates nothing of ours, and in a sweep it hands each job its config only when the job
starts: a bad value in job 2 of ``-m model.depth=3,abc`` used to be found after job 1 had
trained, skipped with a log line, and the sweep exited 0. Hydra also creates a run's output
folder (``outputs/DATE/TIME``) before the task sees its config, so a config error left one
behind. Here the command line is read with Hydra's own parser, the config composed as Hydra
will compose it (:class:`hydra._internal.hydra.Hydra`, the same search path, ``--config-dir``,
``--config-name``, ``hydra.mode``), and for a sweep every job's config made by the sweeper's
own expansion (zoo.config.origin.sweep_jobs) and Hydra's ``load_sweep_config``, then validated
(zoo.training.spec.validate). A study's claim is checked against the jobs this command makes
(zoo.studies.validate.check_metrics: ``model.activation=relu`` makes ``saturated_fraction``
impossible). The first problem is raised, before any folder or run exists: a SpecError (the job
named), a YAML error as a SpecError naming the file and line, or Hydra's own exception.

Jobs that differ only in ``seed`` are composed once (a composition costs ~65 ms, a study has
3+ seeds per variant) unless the config interpolates the seed.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from zoo.config.origin import env_keys, shared_overrides, sweep_jobs
from zoo.config.schema import SpecError
from zoo.studies.load import from_section
from zoo.studies.validate import check_metrics, study_config_file
from zoo.tracking.runs import flat_params
from zoo.training.spec import _seed, omegaconf_line, validate

# flags after which Hydra runs no job (help, printing the config, shell completion)
NO_JOB_FLAGS = ("help", "hydra_help", "cfg", "info", "shell_completion", "experimental_rerun")


@dataclass
class Checked:
    """What a command will run: one spec and params per job, in Hydra's order."""
    multirun: bool
    jobs: list[list[str]]          # each job's overrides (a run: the command line's)
    specs: list                    # zoo.training.spec.RunSpec per job
    params: list[dict[str, str]]   # what each job's run logs (its resolved config, flattened)
    study: object | None = None    # zoo.studies.load.StudyConfig of a study sweep
    sweep_dir: str | None = None   # a sweep's folder (hydra.sweep.dir), resolved here
    from_env: list[str] = dataclasses.field(default_factory=list)  # keys read from the environment

    def shared_overrides(self) -> list[str]:
        """What the jobs must take from the launching side (zoo.config.origin.shared_overrides)."""
        return shared_overrides(self.sweep_dir, self.specs, self.from_env) if self.multirun else []


def yaml_error(err) -> SpecError:
    """A YAML syntax error as one line naming the file and line (``bad.yaml:8: YAML syntax error:
    expected ',' or ']', but got ':'``)."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    where = f"{mark.name}:{mark.line + 1}" if mark is not None else "config"
    problem = getattr(err, "problem", None) or getattr(err, "context", None) or str(err).splitlines()[0]
    context, opened = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and context != problem and opened is not None:  # where the unclosed thing began
        problem += f" ({context} from line {opened.line + 1})"
    return SpecError(where, f"YAML syntax error: {problem}")


def _task_config(config: DictConfig) -> DictConfig:
    """The job's config without Hydra's node, as Hydra's run_job hands it to the task."""
    task = copy.deepcopy(config)
    with read_write(task), open_dict(task):
        del task["hydra"]
    return task


def _validate(config: DictConfig, stores_checked: set | None = None):
    """Validate a composed job config with HydraConfig set, as inside the job (``${hydra:…}``
    interpolations and zoo.config.origin's launch folder read it); a store already in
    ``stores_checked`` is not inspected again (zoo.training.spec.validate)."""
    from hydra.core.hydra_config import HydraConfig


    HydraConfig.instance().set_config(config)
    try:
        return validate(_task_config(config), stores_checked)
    finally:
        HydraConfig.instance().cfg = None


def _params(spec) -> dict[str, str]:
    resolved = {k: v for k, v in spec.resolved.items() if k not in ("study", "hydra")}
    return flat_params(resolved)


def _seed_value(override: str):
    """The value Hydra's grammar gives ``seed=…`` (``1`` an int, ``abc`` a string)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(override).value()


def _check_jobs(hydra, master: DictConfig, jobs: list[list[str]]) -> tuple[list, list]:
    """Validate each job (its spec, its params); SpecError naming the first bad job."""
    specs, params = [], []
    composed: dict[tuple[str, ...], object] = {}
    stores: set = set()  # each job's store is the same few: inspected once, not once per job
    for i, job in enumerate(jobs):
        seeds = [o for o in job if o.split("=", 1)[0] == "seed"]
        rest = tuple(o for o in job if o not in seeds)
        try:
            if rest in composed:  # the same config with another seed: only the seed is new
                value = _seed_value(seeds[-1]) if seeds else composed[rest].seed
                spec = dataclasses.replace(composed[rest], seed=_seed(value),
                                           resolved={**composed[rest].resolved, "seed": value})
            else:
                config = hydra.config_loader.load_sweep_config(master, list(job))
                spec = _validate(config, stores)
                if "${seed}" not in str(OmegaConf.to_container(config, resolve=False)):
                    composed[rest] = spec
        except SpecError as err:
            raise SpecError("", f"{err} (job {i + 1} of {len(jobs)}: {' '.join(job)})") from None
        specs.append(spec)
        params.append(_params(spec))
    return specs, params


def check_command(argv: list[str], config_path: str = "pkg://zoo.conf",
                  config_name: str = "config") -> Checked | None:
    """Check the jobs of ``zoo-train ARGV`` (``config_path``/``config_name``: the app's own, as in
    its ``@hydra.main``); None when the command runs no job (``--help``, ``--cfg``, …).

    Raises SpecError (one line: the value, and in a sweep which job), or Hydra's own exception
    for a command line it refuses, exactly as Hydra would raise it when the job starts."""
    import yaml
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path, get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import SearchPathException
    from hydra.types import RunMode

    args = get_args_parser().parse_args(argv)
    if any(getattr(args, flag, None) for flag in NO_JOB_FLAGS):
        return None
    config_name = args.config_name or config_name
    search_path = create_automatic_config_search_path(None, None, args.config_path or config_path)
    if args.config_dir is not None:
        from hydra.core.config_search_path import SearchPathQuery

        config_dir = os.path.abspath(args.config_dir)
        if not os.path.isdir(config_dir):
            raise SearchPathException(f"Additional config directory '{config_dir}' not found")
        search_path.prepend(provider="command-line", path=f"file://{config_dir}",
                            anchor=SearchPathQuery(provider="schema"))
    overrides = list(args.overrides)
    GlobalHydra.instance().clear()
    try:
        hydra = Hydra.create_main_hydra2(task_name="train", config_search_path=search_path)
        try:
            # a config may ask for a sweep itself (hydra.mode: MULTIRUN), as Hydra's CLI reads it;
            # get_mode swallows errors, which the composition below then raises
            multirun = args.multirun or hydra.get_mode(config_name, overrides) == RunMode.MULTIRUN
            master = hydra.compose_config(config_name, overrides,
                                          run_mode=RunMode.MULTIRUN if multirun else RunMode.RUN)
            if not multirun:
                spec = _validate(master)
                return Checked(False, [overrides], [spec], [_params(spec)])
            shared = {"sweep_dir": _sweep_dir(master), "from_env": env_keys(master)}
            jobs = sweep_jobs(master)
            if jobs is None:  # another sweeper chooses its jobs as it goes: nothing to expand here
                return Checked(True, [], [], [], **shared)
            specs, params = _check_jobs(hydra, master, jobs)
            study = _check_study(master, params)
            return Checked(True, jobs, specs, params, study, **shared)
        except yaml.YAMLError as err:
            raise yaml_error(err) from None
        except OmegaConfBaseException as err:  # one Hydra did not wrap: its key and first line
            raise SpecError(getattr(err, "full_key", None) or "", f"config error: {omegaconf_line(err)}") from None
    finally:
        GlobalHydra.instance().clear()


def _sweep_dir(master: DictConfig) -> str | None:
    """The sweep's folder as Hydra will resolve it here (``${now:…}``, ``${zoo.sweep_id:}``:
    zoo.config.origin's resolver); None when it reads something only a job has."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import setup_globals

    import zoo.config.origin  # noqa: F401  (registers ${zoo.sweep_id:})

    setup_globals()  # ${now:…}, ${hydra:…}: what Hydra registers before it composes
    HydraConfig.instance().set_config(master)
    try:
        return str(master.hydra.sweep.dir)
    except OmegaConfBaseException:
        return None
    finally:
        HydraConfig.instance().cfg = None


def _check_study(master: DictConfig, params: list[dict[str, str]]):
    """A study sweep's claim against the runs these jobs make (its variants against the full
    sweep are checked by the sweep callback, zoo.studies.validate.validate_sweep)."""
    if OmegaConf.select(master, "study") is None:
        return None
    where = study_config_file(master)
    try:
        study = from_section(master.study)
    except SpecError as err:
        raise SpecError(where, str(err)) from None
    check_metrics(study, params, where)
    return study
