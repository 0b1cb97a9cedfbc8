"""What the zoo's studies showed, as advice for a diagnosed model: only what a study reproduced.

Each :class:`Evidence` is one study's result on this machine (its verdict and measured numbers,
the same as docs/results/studies.md, which tests/test_diagnose.py checks) and the findings
of a diagnosis it speaks to. A remedy is offered only when its study is **reproduced**; a
finding that only inconclusive or failed studies touch gets those named as "not shown", with
their numbers, and no advice. The claim's words are read from the study file itself
(ablations/<study>.yaml, ``study.claim.text``), not restated here.

Findings are named by kind (zoo.analysis.diagnosis.findings lists them, most severe first: ``ill_posed``,
``diverged``, ``vanishing_depth``, ``exploding_time``, ``input_scale``, ``target_scale``,
``saturated``, ...); facts about the model select and withhold advice: ``saturating_activations``
(it has sigmoid or tanh layers), ``batch_norm``, ``recurrent``, ``adaptive_optimizer`` (compiled
with Adam or a relative), ``fan_in_init`` (every kernel initialized by a fan-in rule: He, Glorot,
LeCun, orthogonal), ``constant_inputs``. Each finding gets the evidence whose ``when`` sets
contain it and are all present (:func:`for_finding`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from zoo.studies.load import study_file


@dataclass(frozen=True)
class Evidence:
    study: str                      # ablations/<study>.yaml
    verdict: str                    # reproduced | inconclusive | not reproduced (docs/results/studies.md)
    numbers: str                    # what was measured, as in docs/results/studies.md
    advice: str                     # the change the study supports (empty: none)
    when: tuple[frozenset, ...]     # finding kinds: the evidence applies when any set is all present
    helps: bool = True              # False: a negative result (the change does not help)
    unless: frozenset = frozenset()  # ... and none of these is (the model does it already)

    @property
    def reproduced(self) -> bool:
        return self.verdict == "reproduced"


def _when(*sets: str) -> tuple[frozenset, ...]:
    return tuple(frozenset(s.split()) for s in sets)


EVIDENCE = (
    Evidence("activation_depth", "reproduced",
             "depth 20 at step 1: sigmoid's first-layer gradient 2.5e-12 vs ReLU+He 2.0; at depth 50 "
             "sigmoid's is 3.4e-31; train loss SELU 0.14 ± 0.08 vs sigmoid 2.30",
             "replace sigmoid / tanh by ReLU with He initialization, or SELU with LeCun initialization",
             _when("vanishing_depth saturating_activations", "vanishing_scale saturating_activations")),
    Evidence("normalization", "reproduced",
             "sigmoid, depth 20: flow at step 1 0.70 with batch norm vs 2.8e-12 without; train loss "
             "0.58 ± 0.01 vs 2.30 (val acc 0.95 vs 0.10)",
             "add batch normalization before each sigmoid / tanh (layer norm did not rescue sigmoid "
             "in the same study)",
             _when("vanishing_depth saturating_activations")),
    Evidence("pretraining", "reproduced",
             "depth-10 sigmoid, N(0, 0.05²): first-layer gradient at the first fine-tuning step 0.020 "
             "with tied-weight pretraining vs 1.2e-9 without; train loss 0.15 ± 0.015 vs 2.30",
             "greedy layer-wise autoencoder pretraining of the hidden layers (zoo-train pretrain.epochs=N)",
             _when("vanishing_depth saturating_activations")),
    Evidence("optimizer", "reproduced",
             "depth-5 sigmoid MLP, 30 epochs: train loss Adam 0.29 ± 0.05 vs SGD 2.30; momentum "
             "2.297 vs SGD 2.302: lower on every seed (paired), but both at chance",
             "train with Adam rather than plain SGD or momentum",
             _when("vanishing_depth saturating_activations"), unless=frozenset({"adaptive_optimizer"})),
    Evidence("init_depth", "reproduced",
             "depth 50, first-layer gradient at step 1: 6.1e-28 ×/÷ 1.14 with N(0, 0.05²) (read as "
             "exactly 0 before) vs 0.58 ×/÷ 2.0 with He; its first/last ratio is 3.1: every layer "
             "starves alike (the scale rule's case). Final train loss He 1.46 ± 0.16 vs Glorot 2.30 (chance)",
             "initialize by fan-in (He for ReLU, Glorot for sigmoid / tanh) instead of a fixed small scale",
             _when("vanishing_scale"), unless=frozenset({"fan_in_init", "constant_inputs"})),
    Evidence("bn_explosion", "reproduced",
             "step-1 flow plain-56 678 ×/÷ 1.6 vs plain-20 2.7 (> 10×); ResNet-56 0.34 (< 1/10 of plain-56)",
             "add residual connections (batch norm in a deep plain net makes the input side's "
             "gradient explode at initialization)",
             _when("exploding_depth batch_norm")),
    Evidence("residual_sgd", "reproduced",
             "plain-56 flow at step 1 467; train loss plain-56 1.57 ± 0.25 vs plain-20 0.0036 ± 0.0027; "
             "ResNet-56 0.032 ± 0.028",
             "add residual connections: the deep plain net trains worse than a shallow one, the "
             "residual net of the same depth does not",
             _when("exploding_depth batch_norm")),
    Evidence("clipping", "reproduced",
             "unclipped diverges 2/3, global-norm clipping 0/3, clipvalue 0.5 1/3",
             "clip the gradient by its global norm (Keras: optimizer global_clipnorm=1.0)",
             _when("diverged", "exploding_time", "exploding_depth recurrent", "exploding_scale recurrent")),
    Evidence("learning_rate", "reproduced",
             "lr 1 diverges 3/3, lr 0.01 0/3; train loss lr 0.01 1.35 ± 0.12 vs lr 1e-4 2.53 ± 0.05",
             "lower the learning rate (by a decade at a time)",
             _when("diverged")),
    Evidence("regularization", "reproduced",
             "the sigmoid net's end flow is 2.9e-17 (L1) and 2.5e-16 (L2), < 1e-3",
             "L1 / L2 weight penalties do not rescue it",
             _when("vanishing_depth saturating_activations"), helps=False),
    Evidence("gated_init", "inconclusive",
             "T=150, share of the gradient reaching step 0 at step 1, 5 seeds: IRNN 1.0 (> 0.1, holds); "
             "chrono LSTM 0.021 vs forget bias 1 1.1e-11 (holds); tanh RNN 8.7e-5 ×/÷ 12: below 1e-3 on "
             "average but within the spread over seeds",
             "", _when("vanishing_time")),
    Evidence("gated_cells", "not reproduced",
             "final train MSE GRU 0.027 ± 0.014 (< 0.0835, holds), tanh RNN 0.174 (holds), chrono LSTM "
             "0.103 ± 0.031 (inconclusive), LSTM with forget bias 1 0.174 ± 0.0003",
             "", _when("vanishing_time")),
    Evidence("input_scaling", "not reproduced",
             "920 SGD steps, 5 seeds: raw pixels (0..16) saturate 75% of the first tanh layer vs 0.38% "
             "standardized (holds); final train loss standardized 0.122 ± 0.013 vs raw 0.078 ± 0.011: raw is "
             "lower on every seed (fails)",
             "", _when("input_scale")),
    Evidence("target_scaling", "reproduced",
             "Adam, 1,280 steps, 5 seeds: last-layer gradient at step 1 234 ×/÷ 1.26 with std-100 targets vs "
             "12.7 ×/÷ 1.89 standardized (> 10×); final train loss over the constant predictor's 0.089 ± 0.006 "
             "vs 0.045 ± 0.005",
             "standardize the regression targets (subtract their training mean, divide by their std; invert "
             "that on the predictions)",
             _when("target_scale")),
)


@functools.cache
def claim_text(study: str) -> str:
    """The claim as the study file states it (ablations/<study>.yaml)."""
    import yaml


    return " ".join(yaml.safe_load(study_file(study).read_text())["study"]["claim"]["text"].split())


def for_finding(kind: str, findings: set[str]) -> list[Evidence]:
    """The evidence that speaks to finding ``kind`` of a model whose findings (and facts) are
    ``findings``: a ``when`` set that holds ``kind`` and is all present, none of ``unless``."""
    return [e for e in EVIDENCE if any(kind in need and need <= findings for need in e.when)
            and not (e.unless & findings)]
