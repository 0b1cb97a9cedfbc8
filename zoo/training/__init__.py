"""The zoo's own training: a config becomes a run.

    spec.py        the validated run spec: a composed Hydra config checked section by section
                   (and the public build_model / load_dataset)
    run.py         one run: build -> train loop -> finish (final numbers, report, verdict)
    step.py        the train step: forward, objective, gradients, penalty, clip, apply; measured by
                   zoo.instruments.meter
    evaluation.py  inference-mode evaluation, right after any number of steps
    pretrain.py    greedy layer-wise pretraining of an MLP's hidden blocks
"""
