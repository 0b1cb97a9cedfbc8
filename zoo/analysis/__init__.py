"""A model at fixed weights: its gradients measured, compared, diagnosed (nothing trains).

    measure.py     a model's gradients on given batches through its instrumented step, at lr 0
    comparison.py  zoo.compare: two models' gradient flow side by side
    diagnosis/     zoo.diagnose: findings, remedies from the studies that reproduced, the report
"""
