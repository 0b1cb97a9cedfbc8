"""Where a study's jobs run (``zoo-ablate --launcher NAME``): nothing here imports TensorFlow.

    launchers.py  the launcher registry: Hydra's basic, joblib, Ray, submitit, as overrides
    slurm.py      SLURM through submitit: what a job asks for, its name, the launching side's wait
    ray_join.py   joining an existing Ray cluster, checked from the launching machine first

The Hydra plugin that makes ``zoo_slurm`` a launcher name lives in hydra_plugins/zoo_slurm
(Hydra finds plugins only there).
"""
