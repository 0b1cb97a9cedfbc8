"""gradzoo's SLURM launcher as Hydra wants a launcher: a class in the ``hydra_plugins`` package
(``hydra.launcher._target_=hydra_plugins.zoo_slurm.SlurmLauncher``, which zoo.launch.slurm.overrides
sets). Hydra's submitit SLURM launcher, waiting for every job: zoo.launch.slurm says why and how."""
try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _HydraSlurmLauncher
except ImportError:  # no hydra-submitit-launcher (the "cluster" extra): nothing to extend
    pass
else:
    class SlurmLauncher(_HydraSlurmLauncher):
        def launch(self, job_overrides, initial_job_idx):
            from zoo.launch.slurm import launch

            return launch(self, job_overrides, initial_job_idx)
