"""A run's first gradient event: the step where a layer's gradient norm jumped, or where the
gradient stopped reaching a layer, that the verdict's window medians can smooth away.

A verdict judges windows of steps by their medians (zoo.records.verdict), so a two-step
explosion inside a window of 20 leaves no trace in it. The event is read step by step:

- **explosion** at step t: some kernel's gradient norm is more than EVENT_FACTOR times its
  median over the EVENT_WINDOW applied steps before t;
- **collapse** at step t: some kernel's share of the gradient, its norm over the last kernel's
  (the verdict's flow, for that layer), is less than 1/EVENT_FACTOR of that share's median over
  the steps before t. The share, not the norm: a gradient that shrinks everywhere because the
  loss fell is learning, one that stops reaching a layer (dead units, saturation) is not.

The first step where either holds is the event; its layer is the kernel with the largest jump
(or fall) there. What followed is read from the same records: the loss at the step before, at
the event and after it, the first non-finite step, and at the first probe step from the event
on the most dead and the most saturated activation layer.

Thresholds, fixed before the cases of issue 29 were run: in ten healthy or merely vanishing zoo
runs (the default MLP, sigmoid and tanh+batch-norm MLPs, SGD at lr 0.1, ResNet-20, LSTM and
GRU on adding, a Pre-LN Transformer, Inception, a deep linear net; 46-471 steps each) the
largest jump of a kernel's norm over its window median was 33x (SGD at lr 0.1 late in
training, where some batches' loss is near 0; 10x or less in the nine others), and the largest
fall of a kernel's share 6.5x (0.154). EVENT_FACTOR = 1e3, the verdict's three decades
(FLOW_LIMIT), clears both by 30x and 150x. EVENT_WINDOW = 10 steps; one step of history is
enough (a jump of three decades in one step is an event at any point of a run).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zoo.instruments.activations import ACT_STATS
from zoo.records.stats import RunStats

EVENT_FACTOR = 1e3
EVENT_WINDOW = 10
DEAD_OR_SATURATED = 0.5  # a layer this dead or saturated after the event is named (zoo.analysis.diagnosis' threshold)


@dataclass
class Event:
    kind: str              # "explosion" | "collapse"
    step: int              # 1-based optimizer step
    layer: str             # the kernel with the largest jump (fall) at that step
    factor: float          # its norm (share) over its window median: > EVENT_FACTOR, or < 1 / EVENT_FACTOR
    loss: tuple            # the loss at the step before, at the event, at the step after (NaN: not recorded)
    then: tuple[str, ...]  # what followed, in words

    def short(self) -> str:
        """'explosion at step 28', for a headline."""
        return f"gradient {self.kind} at step {self.step}"

    def text(self) -> str:
        """The event in one sentence, with what followed."""
        what = "norm" if self.kind == "explosion" else "share of the gradient (its norm over the last layer's)"
        line = (f"gradient {self.kind} at step {self.step}: {self.layer}'s {what} was {_num(self.factor)}× "
                f"its median over the steps before")
        if not all(np.isnan(self.loss)):
            line += "; the loss went " + " → ".join(_num(v) for v in self.loss) + \
                    f" (steps {self.step - 1}–{self.step + 1})"
        return line + "".join(f"; {t}" for t in self.then)


def first_event(stats: RunStats) -> Event | None:
    """The run's first explosion or collapse (module rule), among the steps the optimizer
    applied; None when there is none (or fewer than two steps)."""
    applied = ~stats.skipped.astype(bool) if len(stats.skipped) else np.ones(len(stats.step), bool)
    g, steps, loss = stats.grad_norm[applied], stats.step[applied], stats.loss[applied]
    if len(g) < 2 or g.shape[1] == 0:
        return None
    finite = np.all(np.isfinite(g), axis=1)
    last = np.maximum(g[:, -1:], 1e-300)
    with np.errstate(invalid="ignore", over="ignore"):  # a non-finite step ends the scan below
        share = g / last
    for t in range(1, len(g)):
        if not finite[t]:
            break  # divergence: the verdict says so; an event is what came before it
        before = slice(max(0, t - EVENT_WINDOW), t)
        usable = finite[before]
        if not np.any(usable):
            continue
        norm_median = np.median(g[before][usable], axis=0)
        up = g[t] / np.maximum(norm_median, 1e-300)
        share_median = np.median(share[before][usable], axis=0)
        down = np.where(share_median > 0, share[t] / np.maximum(share_median, 1e-300), 1.0)[:-1]
        kind = None
        if np.max(up) > EVENT_FACTOR:
            kind, at, factor = "explosion", int(np.argmax(up)), float(np.max(up))
        elif len(down) and np.min(down) < 1 / EVENT_FACTOR:
            kind, at, factor = "collapse", int(np.argmin(down)), float(np.min(down))
        if kind:
            return Event(kind, int(steps[t]), str(stats.layers[at]), factor,
                         tuple(float(loss[i]) if 0 <= i < len(loss) else np.nan for i in (t - 1, t, t + 1)),
                         _what_followed(stats, int(steps[t]), steps[~finite]))
    return None


def _what_followed(stats: RunStats, step: int, nonfinite_steps: np.ndarray) -> tuple[str, ...]:
    out = []
    later = nonfinite_steps[nonfinite_steps > step]
    if len(later):
        out.append(f"the loss or gradient was not finite from step {int(later[0])}")
    end = int(later[0]) if len(later) else np.inf  # readings of a diverged net say nothing
    probes = np.nonzero((stats.hist_step >= step) & (stats.hist_step < end))[0]
    if len(probes) and stats.act_stats.size:
        h = int(probes[0])
        for column, words in ((ACT_STATS.index("dead_fraction"), "dead"),
                              (ACT_STATS.index("saturated_fraction"), "saturated")):
            values = stats.act_stats[h, :, column]
            if np.any(np.isfinite(values)) and np.nanmax(values) >= DEAD_OR_SATURATED:
                worst = int(np.nanargmax(values))
                out.append(f"at step {int(stats.hist_step[h])}, {values[worst]:.0%} of {stats.act_layers[worst]}'s "
                           f"units were {words}")
    return tuple(out)


def _num(v: float) -> str:
    if not np.isfinite(v):
        return str(v)
    return f"{v:.3g}" if 1e-2 <= abs(v) < 1e4 or v == 0 else f"{v:.2e}"
