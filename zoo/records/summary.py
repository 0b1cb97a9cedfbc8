"""A run's few headline numbers (``summary/*``), the ones a study's claim compares across runs.

- ``*_init``: at initialization, i.e. the gradient of step 1, computed before any update. A
  batch-normalized net is already another net after one step (Yang et al. 2019), so "the first
  10% of training" is not initialization.
- ``*_start``: the median over the first window of steps (verdict.windows: 10% of the run, at
  least 5 steps), where the initialization still rules but one batch does not decide;
- ``*_end``: the median over the last window.

Per layer numbers are the first (input side) and last (output head) monitored kernels' gradient
norms and their ratio, the flow. Gradient through time is read at the first (step 1) and the
last probe step, each instrument's own numbers (zoo.instruments: ``summarize``): the
gradient through time's ||dL/dx_0|| / ||dL/dx_T|| for the first sequence, the first LSTM
layer's mean forget gate.

``block_flow``: for a model made of blocks whose inputs are measured per position (the sequences
a builder declares, zoo.models.roles: a Transformer's blocks, a stacked RNN's layers), the
joint gradient norm of the first block's kernels over the last block's: the per-layer profile
of Xiong et al. 2020 (Sec. 3.4, Fig. 3) in one number. A block's kernels are those of the layers
it names: ``block01`` holds ``block01_query`` ... ``block01_mlp_dense2``; ``rnn1`` holds ``rnn1``
and ``rnn1/recurrent``.
"""
from __future__ import annotations

import numpy as np

from zoo.instruments import REGISTRY
from zoo.instruments.layout import flow_ratio
from zoo.records.stats import RunStats
from zoo.records.verdict import windows

POINTS = ("init", "start", "end")


def layer_profile(stats: RunStats, which: str) -> np.ndarray | None:
    """Per-layer gradient norm at step 1 (``init``), or its median over the first (``start``) or
    last (``end``) window of finite steps. Raises ValueError for any other ``which``."""
    if which not in POINTS:
        raise ValueError(f"layer_profile: which must be one of {', '.join(POINTS)}, got {which!r}")
    g = stats.grad_norm[np.all(np.isfinite(stats.grad_norm), axis=1)]
    if not len(g):
        return None
    if which == "init":
        return g[0]
    return np.median(g[windows(len(g))[0 if which == "start" else -1]], axis=0)


def block_kernels(layers, block: str) -> list[int]:
    """Positions in ``layers`` (kernel names) of the kernels of ``block``: its own name, or
    names that continue it with ``_`` or ``/``."""
    return [i for i, name in enumerate(layers) if name == block or name.startswith((f"{block}_", f"{block}/"))]


def block_profile(stats: RunStats, profile: np.ndarray) -> np.ndarray | None:
    """The joint gradient norm of each declared block's kernels, from a per-kernel ``profile``
    (:func:`layer_profile`), first block first; None without two blocks that own kernels."""
    members = [block_kernels(stats.layers, str(b)) for b in stats.seq_layers]
    if len(members) < 2 or not all(members):
        return None
    return np.array([np.sqrt(np.sum(np.square(profile[m]))) for m in members])


def summarize(stats: RunStats) -> dict[str, float]:
    out: dict[str, float] = {}
    for label in POINTS:
        profile = layer_profile(stats, label)
        if profile is not None:
            out[f"summary/grad_first_{label}"] = float(profile[0])
            out[f"summary/grad_last_{label}"] = float(profile[-1])
            out[f"summary/flow_{label}"] = flow_ratio(float(profile[0]), float(profile[-1]))
            blocks = block_profile(stats, profile)
            if blocks is not None:
                out[f"summary/block_flow_{label}"] = flow_ratio(float(blocks[0]), float(blocks[-1]))
            out.update(last_block_out(stats, profile, label))
    for cls in REGISTRY:  # each instrument's own numbers (the gradient through time, forget gates)
        out.update(cls.summarize(stats))
    return out


def last_block_out(stats: RunStats, profile: np.ndarray, label: str) -> dict[str, float]:
    """``summary/grad_last_block_out_<label>``: from a per-kernel ``profile``
    (:func:`layer_profile`), the gradient norm of the last declared block's last kernel, its
    output side: a Transformer block's FFN second matrix (``blockNN_mlp_dense2``, W^(2,L) of
    Xiong et al. 2020, Theorem 1), a stacked RNN's last layer's recurrent kernel. Empty for a
    model without declared blocks."""
    if not len(stats.seq_layers):
        return {}
    members = block_kernels(stats.layers, str(stats.seq_layers[-1]))
    return {f"summary/grad_last_block_out_{label}": float(profile[members[-1]])} if members else {}


# -- the edge of stability (Cohen et al. 2021), from a run's sharpness readings ------------------
# "Near the threshold", fixed before the study's first run: within a factor 1.25 either way of
# it (symmetric on a log scale); Cohen et al. (Fig. 1) see the sharpness "hover right at, or
# just above" 2/η.
BAND = (0.8, 1.25)
# A step "raises" the loss when it grows by more than this fraction: above float32's rounding of a
# mean over a reshuffled batch (~1e-6), far below an unstable step's rise (percents)
LOSS_RISE = 1e-4


def sharpness_summary(record, stats: RunStats) -> dict[str, float]:
    """The edge-of-stability numbers of a run's sharpness readings (a
    zoo.instruments.sharpness_record.SharpnessRecord) against its optimizer's threshold, with the
    per-step training loss of ``stats``. Ratios are λ_max / threshold (the preconditioned
    sharpness for Adam and RMSprop); "reached" is the first reading at or above BAND[0]:

    - ``summary/sharpness_init_over_threshold``: the first reading's ratio;
    - ``summary/sharpness_max_over_threshold``: the largest ratio;
    - ``summary/sharpness_end_over_threshold``: the median ratio over the last window of readings
      (zoo.records.verdict.windows);
    - ``summary/sharpness_rise``: the largest reading over the first (progressive sharpening);
    - ``summary/sharpness_reached_step``: the step of the first reading that reached the band;
    - ``summary/sharpness_in_band``: the fraction of readings from that one on within BAND;
    - ``summary/eos_loss_increases``: from that step on, the fraction of steps whose training
      loss is above the step before's by more than LOSS_RISE of it (0 for a loss that falls
      monotonically);
    - ``summary/eos_loss_ratio``: from that step on, the median loss over the last window of
      steps over the median over the first (below 1: the loss keeps falling).

    Empty without a reading against a finite threshold; the last four only once the band is
    reached. Readings or losses that are not finite are left out."""
    ok = np.isfinite(record.lambda_max) & np.isfinite(record.threshold) & (record.threshold > 0)
    if not np.any(ok):
        return {}
    steps, lam, ratio = record.step[ok], record.lambda_max[ok], record.ratio()[ok]
    out = {"summary/sharpness_init_over_threshold": float(ratio[0]),
           "summary/sharpness_max_over_threshold": float(np.max(ratio)),
           "summary/sharpness_end_over_threshold": float(np.median(ratio[windows(len(ratio))[-1]]))}
    if lam[0] > 0:
        out["summary/sharpness_rise"] = float(np.max(lam) / lam[0])
    reached = np.flatnonzero(ratio >= BAND[0])
    if not len(reached):
        return out
    first = int(reached[0])
    late = ratio[first:]
    out["summary/sharpness_reached_step"] = float(steps[first])
    out["summary/sharpness_in_band"] = float(np.mean((late >= BAND[0]) & (late <= BAND[1])))
    loss = stats.loss[stats.step >= steps[first]]
    loss = loss[np.isfinite(loss)]
    if len(loss) >= 2:
        out["summary/eos_loss_increases"] = float(np.mean(loss[1:] > loss[:-1] * (1 + LOSS_RISE)))
        parts = windows(len(loss))
        out["summary/eos_loss_ratio"] = float(np.median(loss[parts[-1]]) / np.median(loss[parts[0]]))
    return out


STALLED_FRACTION = 0.95  # below 95% of the constant predictor's loss: learning
UNSTABLE_FRACTION = 1 / STALLED_FRACTION  # above ~105%: worse than predicting a constant


def progress(train_loss: float, baseline: float, ill_posed: str | None = None) -> tuple[str, float]:
    """(label, train loss / baseline), ``baseline`` the best constant predictor's training loss
    (the label entropy, or the targets' variance; zoo.records.posedness.constant_loss):

    - **ill-posed**: ``ill_posed`` gives the reason the loss cannot be read (zoo.records.posedness:
      targets outside the range the loss reads, or a loss below its floor): whatever the ratio,
      it is never learning, stalled or unstable (binary cross-entropy on labels 0..9 falls below
      0 as a sigmoid output grows, 1.43 → −34.9 in 10 epochs at chance accuracy: a negative ratio
      that would read as learning); and a finite training loss below 0 whatever the reason
      (a loss written as minus something, cosine similarity): the baseline is a loss > 0, so a
      negative ratio is no fraction of it (a ``-mean(y p)`` loss against a baseline of 0.5 read
      as "learning (−0.777×)" on all three Keras backends);
    - **learning**: ratio < STALLED_FRACTION;
    - **stalled**: within [STALLED_FRACTION, UNSTABLE_FRACTION], about what a constant scores:
      the net has learned nothing (plain-56 can be "healthy" at train accuracy 0.17);
    - **unstable**: above UNSTABLE_FRACTION, worse than a constant: training made the net worse
      than doing nothing (an LSTM under SGD at lr 20 ending at 332 against 0.16), or a loss
      that is not finite.

    The band is symmetric on a log scale around 1, and fixed a priori like the verdict's."""
    ratio = train_loss / baseline if baseline > 0 else float("nan")
    if ill_posed or np.isfinite(train_loss) and train_loss < 0 < baseline:
        return "ill-posed", float(ratio)
    if not np.isfinite(train_loss) or ratio > UNSTABLE_FRACTION:
        return "unstable", float(ratio)
    return ("learning" if ratio < STALLED_FRACTION else "stalled"), float(ratio)


def headline(verdict_label: str, progress_label: str | None, event=None) -> str:
    """The run's one-word-each headline: 'healthy · stalled', 'vanishing · learning', 'exploding ·
    ill-posed'; the verdict alone when there is no progress to tell (a diverged or stopped run);
    the first gradient event (zoo.records.events.Event) last: 'vanishing · unstable · gradient
    explosion at step 28'."""
    parts = [verdict_label, progress_label, event.short() if event is not None else None]
    return " · ".join(p for p in parts if p)


def describe_progress(label: str, ratio: float, reason: str | None = None) -> str:
    """'stalled (final train loss 1.00× the best constant predictor's)'; an ill-posed loss with
    its ``reason``: 'ill-posed (binary cross-entropy read targets outside [0, 1]: 0 … 9)', or
    without one for a negative ``ratio``: 'ill-posed (final train loss below 0, -0.777× the
    baseline: no fraction of a constant predictor's)'."""
    if label == "ill-posed":
        if not reason and ratio < 0:
            reason = f"final train loss below 0, {ratio:.3g}× the baseline: no fraction of a constant predictor's"
        return f"{label} ({reason or 'the loss cannot be read against its targets'})"
    if not np.isfinite(ratio):
        return f"{label} (final train loss not finite)"
    shown = f"{ratio:.2f}" if 0.01 <= ratio < 100 else f"{ratio:.3g}"
    return f"{label} (final train loss {shown}× the best constant predictor's)"


def description(verdict, progress_label: str | None, ratio: float | None, reason: str | None = None) -> str:
    """A run's MLflow description (markdown): the headline, the first gradient event, then the
    verdict and the progress, each with its reason (``reason``: an ill-posed loss's).
    ``verdict``: zoo.records.verdict.Verdict."""
    lines = [f"**{headline(verdict.label, progress_label, verdict.event)}**", ""]
    if verdict.event is not None:
        lines.append(f"- first event: {verdict.event.text()}")
    lines.append(f"- gradient flow: {verdict.label} — {verdict.reason}")
    if progress_label and ratio is not None:
        lines.append("- progress: " + describe_progress(progress_label, ratio, reason))
    return "\n".join(lines)
