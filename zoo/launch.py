"""Where the user started the command: relative paths in a config (``data.path``,
``model.target=FILE.py:...``) are taken from there, also inside a Hydra job that runs in its own
output folder (``hydra.job.chdir=true``; Hydra 1.3's default leaves the directory alone). Nothing
here imports TensorFlow."""
from __future__ import annotations

import os


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
