"""The vocabulary a run's config is written in, checked before TensorFlow (nothing here imports it).

    registry.py   one Registry type: name -> builder, description, schema (models, data, optimizers, ...)
    schema.py     typed config sections with range checks (Section, SpecError)
    optimizers.py the optimizer registry and the gradient-clipping keys that travel with it
    budget.py     a run's memory, estimated in closed form before anything is built
    origin.py     where the user started the command (relative paths), the sweep's id and jobs

A family (zoo.models) or dataset (zoo.data) registers itself with these; the run spec that
combines them is zoo.training.spec.
"""
