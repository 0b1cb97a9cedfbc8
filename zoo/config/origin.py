"""Where the user started the command: relative paths in a config (``data.path``,
``model.target=FILE.py:...``) are taken from there, also inside a Hydra job that runs in its own
output folder (``hydra.job.chdir=true``; Hydra 1.3's default leaves the directory alone). And
which sweep this process launches: :func:`sweep_id`, the resolver ``${zoo.sweep_id:}`` that the
default sweep folder (conf/config.yaml) ends in, and the jobs Hydra's basic sweeper makes of it
(:func:`sweep_jobs`, what zoo.cli.precheck checks and the sweep callback counts). Nothing here
imports TensorFlow."""
from __future__ import annotations

import os
import secrets
from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf


def launch_folder() -> str:
    """Hydra's original working directory inside a job, else the current one."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        from hydra.utils import get_original_cwd

        return get_original_cwd()
    return os.getcwd()


def from_launch_folder(path) -> str:
    """``path`` made absolute (``~`` expanded), a relative one from :func:`launch_folder`."""
    path = os.path.expanduser(str(path))
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(launch_folder(), path))


# --- what a sweep's jobs take from where it was launched ----------------------------------------
ENV_RESOLVERS = ("${oc.env:", "${env:")


def env_keys(config) -> list[str]:
    """The dotted keys of ``config`` (outside ``hydra``) whose value reads the environment
    (``${oc.env:…}``), unresolved; ``tracking.uri`` under ``tracking=server``."""
    found = []

    def walk(node, prefix):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        elif isinstance(node, str) and any(r in node for r in ENV_RESOLVERS):
            found.append(prefix[:-1])

    tree = OmegaConf.to_container(config, resolve=False)
    walk({k: v for k, v in tree.items() if k != "hydra"}, "")
    return found


def _value(value) -> str:
    """``value`` as a Hydra override's value, taken literally: a quoted string (commas, ``=``,
    spaces and ``${`` stay text), or null, true/false, a number."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("'", "\\'").replace("${", "\\${")  # a backslash is literal
    return f"'{text}'"


def _absolute_store(uri: str | None) -> str | None:
    """A local MLflow store's path from the launch folder (``sqlite:///mlflow.db`` is relative to
    the working directory, which on a Ray node is where ``ray start`` ran); a server's URI as is."""
    if not uri:
        return uri
    import urllib.parse

    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    if scheme == "sqlite" and uri.lower().startswith("sqlite:///"):
        path = uri[len("sqlite:///"):]
        return f"sqlite:///{from_launch_folder(path)}" if path and path != ":memory:" else uri
    return uri  # a server's, as written (file stores are refused: zoo.training.spec.TrackingConfig)


def shared_overrides(sweep_dir: str | None, specs: list, from_env: list[str]) -> list[str]:
    """What every job of a sweep must take from where it is launched, as overrides appended to
    the command: resolved here, once, they travel with each job's config to any worker (a Ray or
    SLURM node resolves ``${oc.env:…}`` in its own environment, and relative paths from its own
    working directory). The sweep folder (``hydra.sweep.dir``) made absolute, so job folders
    (``.hydra/``, the job's log) land under the launch folder; the tracking store (a local one's
    path made absolute) and experiment; and every other key read from the environment
    (``from_env``), each when all ``specs`` (the jobs, zoo.cli.precheck) agree on it."""
    out = [f"hydra.sweep.dir={_value(from_launch_folder(sweep_dir))}"] if sweep_dir else []
    if not specs:
        return out

    def same(path: str):
        values = set()
        for spec in specs:
            node = spec.resolved
            for part in path.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, (dict, list)):
                return None, False
            values.add(node)
        return (values.pop(), True) if len(values) == 1 else (None, False)

    keys = ["tracking.uri", "tracking.experiment"] + [k for k in from_env if k not in ("tracking.uri",
                                                                                        "tracking.experiment")]
    for key in keys:
        value, agreed = same(key)
        if agreed:
            out.append(f"{key}={_value(_absolute_store(value) if key == 'tracking.uri' else value)}")
    return out


# --- a sweep's jobs, as Hydra's basic sweeper makes them ------------------------------------------
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def sweep_jobs(master: DictConfig) -> list[list[str]] | None:
    """The sweep's jobs as Hydra's basic sweeper expands them; None for another sweeper."""
    if OmegaConf.select(master, "hydra.sweeper._target_") != BASIC_SWEEPER:
        return None
    return expand_lines(sweep_lines(master))


def sweep_lines(config: DictConfig) -> list[str]:
    """The sweeper's ``key=values`` lines: ``hydra.sweeper.params``, then the task's overrides,
    as written (unresolved: ``model.depth=2,${oops}`` is the job's to resolve, and to fail)."""
    params = OmegaConf.to_container(OmegaConf.select(config, "hydra.sweeper.params") or OmegaConf.create({}),
                                    resolve=False)
    task = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
    return [f"{k}={v}" for k, v in params.items()] + [str(o) for o in task]


def expand_lines(lines: Sequence[str]) -> list[list[str]]:
    """One override list per job of ``key=values`` lines (the sweeper's params, then the task's
    overrides), by Hydra's basic sweeper's own code."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(lines))
    return BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]


_SWEEP_ID: list[str] = []


def sweep_id() -> str:
    """This process's sweep suffix, ``<pid>-<4 hex>``: the same for every job of its sweep
    (Hydra copies the resolver cache into each job's config, also to other processes) and
    different for a sweep started in the same second by another process, here or on another
    machine sharing the folder (the random part)."""
    if not _SWEEP_ID:
        _SWEEP_ID.append(f"{os.getpid()}-{secrets.token_hex(2)}")
    return _SWEEP_ID[0]


OmegaConf.register_new_resolver("zoo.sweep_id", sweep_id, use_cache=True, replace=True)
