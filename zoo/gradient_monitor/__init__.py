"""``zoo.GradientMonitor``: the zoo's instruments (zoo.instruments, zoo.records) on a user's own Keras model, in
its ``fit`` or its own loop, and the records (zoo.report) written into the user's MLflow run.

- ``callback``: the monitor itself;
- ``hooks``: where every training step passes (the optimizer's ``apply`` and ``scale_loss``,
  fit's probe-step train function), wrapped on the user's objects without replacing their step;
- ``_keras``: the private Keras internals these read, all in one place.
"""
