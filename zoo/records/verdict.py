"""The run's health verdict: healthy | vanishing | exploding | diverged, by a documented rule.

Two numbers per window of steps, each the median over the window's steps:

- **flow** = grad_norm(first kernel) / grad_norm(last kernel): how much of the gradient the
  output layer receives reaches the input layer. Scale-free, so it does not shrink as the loss
  falls. Glorot & Bengio (2010) read vanishing off exactly this ratio.
- **scale** = max over layers of grad_norm / weight_norm: the gradient's size relative to the
  weights it updates, for the best-served layer. This catches what flow cannot: in a deep linear
  chain W_l = a*I every layer's gradient is a^(L-2) times its weight, so flow stays 1 while all
  layers starve (a < 1) or blow up (a > 1).

- **time flow** (recurrent models) = ||dL/dx_0|| / ||dL/dx_(T-1)|| into the first recurrent
  layer: how much of the gradient that reaches the last time step of the sequence reaches its
  first (Bengio et al. 1994; Pascanu et al. 2013, Sec. 2). It is measured on histogram steps
  only, so its windows are blocks of the histogram steps, by the same rule.

The gradient is the data objective's (zoo.training.step): a weight penalty's own gradient is not flow.

Steps a loss scaler skipped (mixed precision: the float16 gradient overflowed, no update was
applied; ``skipped``) are not judged: the rule reads the applied steps only. A run whose every
step was skipped is **diverged**, and says so.

Rule (first match wins):
1. **diverged**: an applied step had a non-finite loss or gradient norm (training stopped there).
2. **exploding**: in any window, flow > FLOW_LIMIT: the input side gets three decades more than
   the output side.
3. **vanishing**: in any window, flow < 1/FLOW_LIMIT.
4. **exploding through time**: in any window, time flow > TIME_FLOW_LIMIT.
5. **vanishing through time**: in the first window, time flow < 1/TIME_FLOW_LIMIT: a tanh RNN
   on adding at T = 150 passes ~1e-5 of the last step's gradient to step 0 and learns nothing,
   while every layer's weight gradient looks well fed (flow ~1), so depth alone says healthy.
   The first window only, as for scale: near initialization the gradient must be able to reach
   the start of the sequence; later a net may rightly learn to ignore steps its target does not
   depend on (an LSTM whose target is the mean of the last 10 of 40 steps ends at 6e-4).
6. **vanishing**: in the first window, scale < SCALE_LOW. The scale test looks at the first
   window only, because near convergence every gradient legitimately becomes small relative
   to its weights.
7. **exploding**: in any window, scale > SCALE_HIGH.
8. **healthy** otherwise.

Vanishing is checked before the scale test of exploding because one layer can starve while
another's gradient is large *relative to its weights*: a deep sigmoid net whose first layer
gets 1e-12 of the head's gradient may still have a head whose small weights see a large ratio;
the net's problem is the starved layer, and the label says so.

Windows are consecutive blocks of WINDOW_FRACTION of the run's steps, at least MIN_WINDOW steps
each: a short remainder at the end joins the window before it.
FLOW_LIMIT = 1e3: three decades lost or gained between the last and the first layer.
TIME_FLOW_LIMIT = 1e3: the same three decades, between the last and the first time step.
SCALE_LOW = 1e-5: a relative gradient at which plain SGD at lr 1e-2 moves weights by 1e-7 of
themselves per step, i.e. no learning in any realistic budget. SCALE_HIGH = 1e2: one SGD step at
lr 1e-2 would change the weights by their own size. These are the instrument's definitions,
fixed a priori, and their behaviour on reference cases is tested (tests/test_verdict.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from zoo.records.events import Event, first_event
from zoo.instruments.layout import flow_ratio
from zoo.instruments.sharpness_record import SharpnessRecord, beyond_stability
from zoo.records.stats import RunStats

FLOW_LIMIT = 1e3
TIME_FLOW_LIMIT = 1e3
SCALE_LOW = 1e-5
SCALE_HIGH = 1e2
WINDOW_FRACTION = 0.1
MIN_WINDOW = 5

LABELS = ("healthy", "vanishing", "exploding", "diverged")


@dataclass
class Verdict:
    label: str
    reason: str
    numbers: dict[str, float] = field(default_factory=dict)
    event: Event | None = None  # the run's first gradient explosion or collapse (zoo.records.events)


def windows(n_steps: int) -> list[slice]:
    size = max(MIN_WINDOW, int(np.ceil(WINDOW_FRACTION * n_steps)))
    starts = list(range(0, n_steps, size))
    if len(starts) > 1 and n_steps - starts[-1] < MIN_WINDOW:
        starts.pop()  # the short remainder joins the window before it
    return [slice(s, e) for s, e in zip(starts, starts[1:] + [n_steps])]


def _carried(weight_norm: np.ndarray) -> np.ndarray:
    """Weight norms with the steps that did not measure them (NaN: zoo.GradientMonitor's
    ordinary steps; its probe steps, the first among them, do) given the last measured value:
    weights move by a small fraction of themselves a step, their gradient by much more."""
    w = np.asarray(weight_norm, dtype=np.float64)
    if not len(w) or not np.isnan(w).any():
        return w
    rows = np.where(np.isnan(w).all(axis=1), 0, np.arange(len(w)))
    np.maximum.accumulate(rows, out=rows)
    carried = w[rows]
    return np.where(np.isnan(carried), 1.0, carried)  # none measured before: the ratio is the norm itself


def _window_flows(norms: np.ndarray) -> list[float]:
    """Per window of rows of ``norms`` [steps, positions]: the median first position over the
    median last position."""
    flows = []
    for w in windows(norms.shape[0]):
        g = np.median(norms[w], axis=0)
        flows.append(flow_ratio(float(g[0]), float(g[-1])))
    return flows


def judge(grad_norm: np.ndarray, weight_norm: np.ndarray, finite: np.ndarray,
          time_grad: np.ndarray | None = None, skipped: np.ndarray | None = None,
          steps: np.ndarray | None = None) -> Verdict:
    """Apply the rule to per-step, per-layer arrays [T, L] (first layer = input side) and, for a
    recurrent model, the gradient reaching each time step of the first recurrent layer's input
    at the histogram steps, ``time_grad`` [H, time steps] (None or H = 0: not recurrent).
    ``skipped`` [T]: steps the optimizer did not apply (not judged); ``steps`` [T]: their
    1-based numbers (default 1 ... T)."""
    steps = np.arange(1, len(finite) + 1) if steps is None else np.asarray(steps)
    if skipped is not None and len(skipped) and np.any(skipped):
        applied = ~np.asarray(skipped, bool)
        if not np.any(applied):
            return Verdict("diverged", f"no step was applied: the loss scaler skipped all {len(skipped)} "
                                       "(the float16 gradient was not finite at any loss scale)",
                           {"skipped_steps": float(len(skipped))})
        verdict = judge(grad_norm[applied], weight_norm[applied], finite[applied], time_grad, None, steps[applied])
        verdict.numbers["skipped_steps"] = float(np.sum(~applied))
        return verdict
    if len(finite) and not np.all(finite):
        step = int(steps[int(np.argmin(finite))])
        return Verdict("diverged", f"non-finite loss or gradient at step {step}",
                       {"diverged_step": float(step)})
    if grad_norm.shape[0] == 0:
        return Verdict("healthy", "no steps recorded", {})
    flows = _window_flows(grad_norm)
    weight_norm = _carried(weight_norm)
    scales = [float(np.max(np.median(grad_norm[w] / np.maximum(weight_norm[w], 1e-300), axis=0)))
              for w in windows(grad_norm.shape[0])]
    numbers = {"flow_min": float(np.min(flows)), "flow_max": float(np.max(flows)),
               "flow_first_window": float(flows[0]), "scale_first_window": scales[0],
               "scale_max": float(np.max(scales))}
    timed = time_grad is not None and time_grad.ndim == 2 and time_grad.shape[0] and time_grad.shape[1] > 1
    time_flows = _window_flows(time_grad) if timed else []
    if time_flows:
        numbers.update({"time_flow_min": float(np.min(time_flows)), "time_flow_max": float(np.max(time_flows)),
                        "time_flow_first_window": float(time_flows[0])})
    if numbers["flow_max"] > FLOW_LIMIT:
        return Verdict("exploding", f"first/last layer gradient ratio reached "
                                    f"{numbers['flow_max']:.3g} > {FLOW_LIMIT:g}", numbers)
    if numbers["flow_min"] < 1 / FLOW_LIMIT:
        return Verdict("vanishing", f"first/last layer gradient ratio fell to "
                                    f"{numbers['flow_min']:.3g} < {1 / FLOW_LIMIT:g}", numbers)
    if time_flows and numbers["time_flow_max"] > TIME_FLOW_LIMIT:
        return Verdict("exploding", f"through time: first/last time step gradient ratio reached "
                                    f"{numbers['time_flow_max']:.3g} > {TIME_FLOW_LIMIT:g}", numbers)
    if time_flows and time_flows[0] < 1 / TIME_FLOW_LIMIT:
        return Verdict("vanishing", f"through time: first/last time step gradient ratio at the start is "
                                    f"{time_flows[0]:.3g} < {1 / TIME_FLOW_LIMIT:g}", numbers)
    if scales[0] < SCALE_LOW:
        return Verdict("vanishing", f"largest gradient/weight norm ratio at the start is "
                                    f"{scales[0]:.3g} < {SCALE_LOW:g}", numbers)
    if numbers["scale_max"] > SCALE_HIGH:
        return Verdict("exploding", f"gradient/weight norm ratio reached "
                                    f"{numbers['scale_max']:.3g} > {SCALE_HIGH:g}", numbers)
    through_time = (f", through time [{numbers['time_flow_min']:.3g}, {numbers['time_flow_max']:.3g}]"
                    if time_flows else "")
    return Verdict("healthy", f"first/last ratio within [{numbers['flow_min']:.3g}, "
                              f"{numbers['flow_max']:.3g}]{through_time}, start gradient/weight ratio "
                              f"{scales[0]:.3g}", numbers)


def judge_run(stats: RunStats, sharpness: SharpnessRecord | None = None) -> Verdict:
    """The rule on a run's raw statistics (the first recurrent layer's gradient through time),
    with the run's first gradient event (zoo.records.events) beside it; a diverged run's reason
    adds the sharpness reading that had crossed the optimizer's stability threshold before, if
    any (zoo.instruments.sharpness_record.beyond_stability)."""
    time_grad = stats.time_grad[:, 0, :] if stats.time_grad.ndim == 3 and stats.time_grad.shape[1] else None
    verdict = judge(stats.grad_norm, stats.weight_norm, stats.finite, time_grad, stats.skipped, stats.step)
    diverged_at = verdict.numbers.get("diverged_step")  # none when the loss scaler skipped every step
    note = beyond_stability(sharpness, int(diverged_at)) if diverged_at is not None else None
    if note:
        verdict.reason += f"; {note}"
    verdict.event = first_event(stats)
    if verdict.event is not None:
        verdict.numbers["event_step"] = float(verdict.event.step)
        verdict.numbers["event_factor"] = verdict.event.factor
    return verdict
