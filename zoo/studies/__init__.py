"""Ablation studies: everything about a study in one package, one job per module.

Imports point down this list (nothing here imports TensorFlow; matplotlib only when drawing)::

    callback.py  the sweep's Hydra callback for a study: checked first, judged last
    judge.py     judge a finished study: records → claim verdict, tables, plots, parent-run tags
    validate.py  before training: the study's checks against its expanded full-scale sweep
    jobs.py      a sweep's jobs, exactly as Hydra's basic sweeper expands them; their params
    load.py      study files, StudyConfig, names, sweep params
    plots.py     study plots: one table maps plot kind -> (function, file name)
    tables.py    summary rows per variant, markdown and csv
    claims.py    the claim checker: checks, comparisons in the metric's scale, verdicts
    records.py   RunRecord, which runs count as data, fetching records from MLflow
    metrics.py   the metric names runs log, and the scale (linear | log10) each is compared on
"""
