"""``zoo.diagnose(model, data)``: what is wrong with a model's gradients, why, and what the zoo's
studies showed helps.

The model is measured at its current weights on a few batches of the user's data, changing no
variable (zoo.analysis.measure: the zoo's own instrumented step at learning rate 0, batch-norm
statistics put back). The diagnosis reports, over the batches (median and range): each
kernel's gradient norm and its ratio to the weight norm; each activation layer's saturated and
dead fractions; for recurrent layers the gradient reaching each time step; LSTM forget gates;
each input feature's and regression target's mean, std and range; the verdict
(zoo.records.verdict, the batches as steps) and progress: the loss against the best constant
predictor's, or ``ill-posed`` when the loss cannot read the targets (zoo.records.posedness).

Its findings (zoo.analysis.diagnosis.findings: every rule on its own, most severe first, each with its
numbers, the layer or time step, and the structural cause when the zoo sees one) select the
advice, which is only what a **reproduced** study showed, each with its claim and measured
numbers (zoo.analysis.diagnosis.remedies); a finding that only inconclusive or failed studies touch
names them as "not shown".

Each output is read as its loss reads it (zoo.training.step.Head): binary cross-entropy on one sigmoid
unit or several (multi-label) with thresholded accuracy, softmax with sparse or one-hot
cross-entropy with argmax accuracy, regression; a loss that cannot be read on its head (a
softmax cross-entropy over one unit) is refused in one line (zoo.training.step.LossMismatch).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo._arguments import check_diagnose
from zoo.analysis.comparison import _floor, _num, _ticks, finite_max, flow_panel, judge_progress, probed, time_panel
from zoo.analysis.diagnosis.findings import (REGRESSION, SATURATED, Finding, _pct, activation_findings, explain, facts,
                                    feature_rows, gradient_findings, input_findings, ordered, posedness_findings,
                                    structural_findings, target_findings, target_label)
from zoo.analysis.diagnosis.remedies import Evidence, claim_text, for_finding
from zoo.analysis.measure import measure
from zoo.data import Dataset
from zoo.data.batches import batches_of
from zoo.instruments.layout import flow_ratio
from zoo.records import posedness
from zoo.records.summary import headline
from zoo.training.spec import load_dataset

BATCHES, BATCH_SIZE = 4, 64
TASKS = ("classification", "regression")
FEATURE_ROWS = 12  # the data table shows at most this many features per array (the largest RMS first)


@dataclass
class Diagnosis:
    """One model's diagnosis: ``problem`` (True when any finding is a problem, not a fact about
    the model), ``findings`` (most severe first, each with its ``evidence``), ``remedies`` /
    ``not_helping`` / ``not_shown`` (zoo.analysis.diagnosis.remedies Evidence over all findings),
    ``markdown()``, ``figure``, ``save(folder)``, ``tags()`` (for MLflow)."""
    label: str
    probed: object                 # zoo.analysis.comparison.Probed: per-batch norms, verdict, progress
    stats: object                  # zoo.records.stats.RunStats, one row per batch
    loss_name: str
    batches: int
    batch_size: int
    heads: list = field(default_factory=list)      # zoo.training.step.Head per output
    inputs: list[dict] = field(default_factory=list)   # per input feature: mean, std, min, max, rms
    targets: list[dict] = field(default_factory=list)  # per regression target column, the same
    findings: list[Finding] = field(default_factory=list)
    ill_posed: str | None = None   # why the loss cannot read its targets (zoo.records.posedness)
    figure: object = None
    sharpness: object = None       # zoo.instruments.sharpness.Reading on these batches (None: not measured)

    @property
    def verdict(self):
        return self.probed.verdict

    @property
    def headline(self) -> str:
        """The verdict's label and progress, as a run's: 'exploding · ill-posed', 'vanishing ·
        stalled'; the verdict alone when no progress can be told (several outputs)."""
        return headline(self.verdict.label, self.probed.progress[0] if self.probed.progress else None)

    @property
    def problem(self) -> bool:
        return any(f.problem for f in self.findings)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.problem]

    @property
    def evidence(self) -> list[Evidence]:
        """Every study that speaks to a finding, once each, in the order of the findings."""
        seen = {}
        for f in self.problems:
            for e in f.evidence:
                seen.setdefault(e.study, e)
        return list(seen.values())

    @property
    def remedies(self) -> list[Evidence]:
        return [e for e in self.evidence if e.reproduced and e.helps]

    @property
    def not_helping(self) -> list[Evidence]:
        return [e for e in self.evidence if e.reproduced and not e.helps]

    @property
    def not_shown(self) -> list[Evidence]:
        return [e for e in self.evidence if not e.reproduced]

    def layer_rows(self) -> list[dict]:
        """Per kernel, input side first: gradient norm median [min, max] over the batches, the
        weight norm, and the median gradient / weight ratio."""
        return layer_rows(self.stats)

    def activation_rows(self) -> list[dict]:
        """Per activation layer: its kind, the median saturated and dead fractions (NaN where a
        fraction does not apply), and ``all_dead``: every unit 0 on every example of every batch."""
        return activation_rows(self.stats)

    def time_rows(self) -> list[dict]:
        """Per recurrent layer: the gradient reaching its first input step over the last's."""
        return time_rows(self.stats)

    def markdown(self) -> str:
        """The report, top-down: the headline, the findings (most severe first, each with its
        evidence and the studies that speak to it), the advice, then the tables."""
        p = self.probed
        outputs = "; ".join(f"{h.words}: {h.metric or 'no accuracy'}" for h in self.heads)
        lines = [f"# Diagnosis of {self.label}: {self.headline}", "",
                 f"Measured at the model's current weights on {self.batches} batches of up to "
                 f"{self.batch_size} examples (nothing changed); loss: {self.loss_name}"
                 + (f"; outputs: {outputs}" if outputs else "") + ".", "",
                 f"**Verdict: {p.verdict.label}** ({p.verdict.reason})."]
        if self.ill_posed:
            lines.append(f"**Progress: ill-posed** ({self.ill_posed}): the loss cannot be read against a constant "
                         "predictor's, nor as learning.")
        elif p.progress:
            lines.append(f"Loss on these batches: {_num(p.progress[1])}× the best constant predictor's "
                         "(below 1: better than predicting a constant; about 1 or above: no better).")
        metric = self.stats.metric[np.isfinite(self.stats.metric)] if self.stats.metric.size else np.empty(0)
        if metric.size and self.heads and self.heads[0].metric:
            lines.append(f"{self.heads[0].metric.replace('_', ' ').capitalize()} of {self.heads[0].name} on these "
                         f"batches: {float(np.median(metric)):.3g}.")
        lines += ["", "## Findings, most severe first", ""]
        problems = self.problems
        if not problems:
            lines.append("- none: the gradient reaches every layer")
        for i, f in enumerate(problems, 1):
            lines.append(f"{i}. **{f.title}**: {f.text}." + (f" Cause: {f.cause}." if f.cause else ""))
            for e in f.evidence:
                if e.reproduced and e.helps:
                    lines.append(f"   - advice: **{e.advice}** (study `{e.study}`, reproduced)")
                elif e.reproduced:
                    lines.append(f"   - not a remedy: {e.advice} (study `{e.study}`, reproduced)")
                else:
                    lines.append(f"   - not shown: study `{e.study}` is {e.verdict}; it supports no advice")
        about = [f.text for f in self.findings if not f.problem]
        if about:
            lines += ["", "About the model: " + "; ".join(about) + "."]
        lines += ["", "## What the zoo's reproduced studies support", ""]
        if self.remedies:
            for e in self.remedies:
                lines += [f"- **{e.advice}** — study `{e.study}` (reproduced): {claim_text(e.study)} "
                          f"Measured: {e.numbers}. For: {self._for(e)}."]
        else:
            lines.append("- no reproduced study speaks to these findings; no advice is given")
        for e in self.not_helping:
            lines.append(f"- not a remedy: {e.advice} — study `{e.study}` (reproduced): {e.numbers}.")
        for e in self.not_shown:
            lines.append(f"- not shown: study `{e.study}` is {e.verdict} ({e.numbers}); it supports no advice.")
        data = self._data_lines()
        if data:
            lines += ["", "## Inputs and targets (per feature, over all examples)", ""] + data
        lines += ["", "## Gradient norm per layer (input side first)", "",
                  "| layer | ‖∂L/∂W‖ median [min, max] | ‖W‖ | ‖∂L/∂W‖ / ‖W‖ |", "|---|---:|---:|---:|"]
        lines += [f"| {r['layer']} | {_num(r['median'])} [{_num(r['min'])}, {_num(r['max'])}] | "
                  f"{_num(r['weight'])} | {_num(r['ratio'])} |" for r in self.layer_rows()]
        acts = self.activation_rows()
        if acts:
            lines += ["", "## Activations (median over batches)", "",
                      "| layer | activation | saturated | dead units |", "|---|---|---:|---:|"]
            lines += [f"| {r['layer']} | {r['kind']} | {_pct(r['saturated'])} | {_pct(r['dead'])} |" for r in acts]
        times = self.time_rows()
        if times:
            lines += ["", "## Gradient through time", "",
                      "| recurrent layer | steps | ‖∂L/∂x_0‖ / ‖∂L/∂x_T‖ of the medians [per-batch min, max] |",
                      "|---|---:|---:|"]
            lines += [f"| {r['layer']} | {r['steps']} | {_num(r['median'])} [{_num(r['min'])}, {_num(r['max'])}] |"
                      for r in times]
        gates = self.stats.forget_gate
        if gates.size:
            lines += ["", "Forget gates (mean activation, median over batches): " + ", ".join(
                f"{name} {float(np.median(gates[:, i])):.3g}" for i, name in enumerate(self.stats.gate_layers))]
        lines += sharpness_lines(self.sharpness)
        if p.skipped:
            lines += ["", "## Not measured", ""] + [f"- {what}: {why}" for what, why in p.skipped.items()]
        return "\n".join(lines) + "\n"

    def _for(self, e: Evidence) -> str:
        return ", ".join(dict.fromkeys(f.title for f in self.problems if e in f.evidence))

    def _data_lines(self) -> list[str]:
        rows = []
        for group in (self.inputs, self.targets):
            arrays: dict[str, list] = {}
            for r in group:
                arrays.setdefault(r["array"], []).append(r)
            for name, features in arrays.items():
                shown = sorted(features, key=lambda r: -r["rms"])[:FEATURE_ROWS]
                rows += [f"| {name} | {r['feature']} | {_num(r['mean'])} | {_num(r['std'])} | {_num(r['min'])} | "
                         f"{_num(r['max'])} |" for r in sorted(shown, key=lambda r: r["feature"])]
                if len(features) > len(shown):
                    rest = max(r["rms"] for r in features if r not in shown)
                    rows.append(f"| {name} | … {len(features) - len(shown)} more | | RMS ≤ {_num(rest)} | | |")
        if not rows:
            return []
        return ["| array | feature | mean | std | min | max |", "|---|---:|---:|---:|---:|---:|"] + rows

    def tags(self) -> dict[str, str]:
        """Every finding as MLflow tags: ``zoo.findings`` (the kinds, most severe first) and
        ``zoo.finding.<kind>`` (its text, same-kind findings joined by " | "), with the headline,
        the verdict and progress."""
        tags = {"zoo.verdict": self.verdict.label, "zoo.verdict_reason": self.verdict.reason,
                "zoo.headline": self.headline,
                "zoo.findings": ", ".join(dict.fromkeys(f.kind for f in self.problems)) or "none"}
        if self.probed.progress:
            tags["zoo.progress"] = self.probed.progress[0]
        if self.ill_posed:
            tags["zoo.ill_posed"] = self.ill_posed
        for f in self.problems:
            key = f"zoo.finding.{f.kind}"
            text = f.text + (f" Cause: {f.cause}." if f.cause else "")
            tags[key] = f"{tags[key]} | {text}" if key in tags else text
        return {k: v[:5000] for k, v in tags.items()}

    def save(self, folder) -> dict[str, Path]:
        """``report.md``, ``gradient_flow.png`` and ``stats.npz`` (the raw statistics) in ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"report": folder / "report.md", "figure": folder / "gradient_flow.png",
                 "stats": folder / "stats.npz"}
        paths["report"].write_text(self.markdown())
        self.figure.savefig(paths["figure"], dpi=110)
        self.stats.save(paths["stats"])
        return paths

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="png", dpi=90)
        return buffer.getvalue()

    def __repr__(self) -> str:
        return self.markdown()


def layer_rows(stats) -> list[dict]:
    g, w = stats.grad_norm, stats.weight_norm
    ratio = g / np.maximum(w, 1e-300)
    return [{"layer": str(name), "median": float(np.median(g[:, i])), "min": float(g[:, i].min()),
             "max": float(g[:, i].max()), "weight": float(w[0, i]), "ratio": float(np.median(ratio[:, i]))}
            for i, name in enumerate(stats.layers)]


def activation_rows(stats) -> list[dict]:
    s = stats.act_stats
    return [{"layer": str(name), "kind": str(kind), "saturated": float(np.median(s[:, i, 2])),
             "dead": float(np.median(s[:, i, 3])), "all_dead": bool(s.shape[0] and np.all(s[:, i, 3] == 1.0))}
            for i, (name, kind) in enumerate(zip(stats.act_layers, stats.act_kinds))]


def time_rows(stats) -> list[dict]:
    t = stats.time_grad
    rows = []
    for i, name in enumerate(stats.seq_layers):
        ratios = np.array([_ratio(b[i, 0], b[i, -1]) for b in t])  # per batch, for the range
        typical = _ratio(np.median(t[:, i, 0]), np.median(t[:, i, -1]))  # the verdict's rule
        rows.append({"layer": str(name), "steps": int(t.shape[2]), "median": typical,
                     "min": float(ratios.min()), "max": float(ratios.max())})
    return rows


def _ratio(first: float, last: float) -> float:
    return flow_ratio(float(first), float(last))


def _flat(tree) -> list:
    """The arrays of a structure in tf.nest's order (a dict's keys sorted), as the heads are."""
    if isinstance(tree, dict):
        return [tree[k] for k in sorted(tree)]
    if isinstance(tree, (list, tuple)):
        return list(tree)
    return [tree]


def _constant(xs: list) -> bool:
    """Every input array's every feature has std 0 over all the batches."""
    import tensorflow as tf

    flat = [tf.nest.flatten(x) for x in xs]
    return all(np.all(np.std(np.concatenate([np.asarray(b[i], np.float64) for b in flat]), axis=0) == 0)
               for i in range(len(flat[0])))


def _dataset(data):
    """(x, y, task) from what ``diagnose`` accepts."""
    if isinstance(data, (str, Path)) and str(data).endswith(".npz"):
        from zoo.analysis.diagnosis.arrays import read_arrays

        data = read_arrays(data)
    if isinstance(data, str):
        data = load_dataset(data)
    if isinstance(data, Dataset):
        return data.x_train, data.y_train, data.task
    if isinstance(data, dict):
        return data["x"], data["y"], data.get("task") or infer_task(data["y"])
    if len(data) == 3:
        return data
    x, y = data
    return x, y, infer_task(y)


def infer_task(y) -> str:
    """Integer targets: classification; anything else: regression (for several outputs, the
    first output's)."""
    first = y[0] if isinstance(y, (list, tuple)) else next(iter(y.values())) if isinstance(y, dict) else y
    return "classification" if np.issubdtype(np.asarray(first).dtype, np.integer) else "regression"


def diagnose(model, data, loss=None, batches: int = BATCHES, batch_size: int = BATCH_SIZE,
             seed: int = 0, label: str | None = None) -> Diagnosis:
    """Diagnose ``model`` (any Keras model, see zoo.analysis.comparison.compare) on ``data``: ``(x, y)``,
    ``(x, y, task)``, ``{"x": ..., "y": ...}``, a ``.npz`` path (``x``/``y`` or
    ``x_train``/``y_train``), a zoo dataset name or ``zoo.data.Dataset``; ``x`` and ``y`` arrays
    or lists / dicts of arrays. ``loss``: a Keras loss name or object; default the model's
    compiled loss, else the task's (zoo.training.step: classification reads a sigmoid or one-unit output
    with binary cross-entropy, any other with sparse categorical cross-entropy, from logits unless
    the model ends in the activation; regression mean squared error). ``batches`` of
    ``batch_size`` examples are drawn with ``seed``. Raises zoo.analysis.diagnosis.arrays.InputError (a
    ValueError), in one line, for an unknown task or loss name, inputs that do not fit the
    model's input, a loss that does not fit the model's output (zoo.training.step.LossMismatch), or
    targets the loss cannot even compute on (labels outside a sparse cross-entropy's classes).
    Targets that the loss computes on but cannot read (binary cross-entropy on 0..9) are the
    finding ``ill_posed``. Arguments that cannot work (zoo._arguments) raise InputError first."""
    check_diagnose(model, data, loss, batches, batch_size, seed, label)
    from zoo.training.step import LossMismatch, heads_for

    import tensorflow as tf

    from zoo.analysis.diagnosis.arrays import InputError, check_fits, model_input_shape

    x, y, task = _dataset(data)
    if task not in TASKS:
        raise InputError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if not isinstance(x, (list, tuple, dict)):
        check_fits("data", model_input_shape(model), np.asarray(x))
    try:
        heads = heads_for(model, task, loss)
    except LossMismatch as err:
        raise InputError(str(err)) from None
    except ValueError as err:
        if str(err).startswith("unknown loss"):
            raise InputError(f"loss {loss!r}: not a Keras loss") from None
        raise
    targets = _flat(y)
    reasons = [posedness.target_reason(h.loss, t, h.units if h.loss == "sparse_categorical_crossentropy" else None)
               for h, t in zip(heads, targets)]  # said when the loss cannot even be computed
    for h, t, reason in zip(heads, targets, reasons):
        if reason and h.loss == "sparse_categorical_crossentropy" and _no_class(np.asarray(t), h.units):
            raise InputError(f"y does not fit the model's output and its loss: {reason}")
    xs, ys = batches_of(x, y, batches, batch_size, seed)
    label = label or model.name
    try:
        measured = measure(model, xs, ys, task, loss)
    except (ValueError, tf.errors.InvalidArgumentError) as err:
        text = " ".join((getattr(err, "message", None) or str(err)).strip().split("\n")[0].split())[:300]
        why = next((r for r in reasons if r), None) or text
        raise InputError(f"y does not fit the model's output and its loss: {why}") from None
    p = probed(measured, label)
    d = Diagnosis(label, p, measured.stats, measured.loss_name, len(xs), batch_size, heads)
    d.sharpness = sharpness_on(measured.step, xs, ys)
    judge_progress(p, targets[0] if len(heads) == 1 else y)  # progress and ill-posed, one output
    posed = [p.ill_posed] if len(heads) == 1 else [  # several: the loss is their weighted sum, so targets only
        posedness.target_reason(h.loss, t, h.units if h.loss == "sparse_categorical_crossentropy" else None)
        for h, t in zip(heads, targets)]
    found = posedness_findings(heads, posed, p.loss)
    d.ill_posed = "; ".join(r for r in posed if r) or None
    median = float(np.median(p.loss))
    rows, acts, times = d.layer_rows(), d.activation_rows(), d.time_rows()
    gates = {str(n): float(np.median(measured.stats.forget_gate[:, i])) for i, n in enumerate(measured.stats.gate_layers)}
    found += structural_findings(model, heads, rows, acts, gates, median)
    found += gradient_findings(rows, times, p.verdict)
    d.inputs = [r for i, a in enumerate(_flat(x)) for r in feature_rows("x" if not isinstance(x, (list, tuple, dict))
                                                                         else f"x[{_input_name(x, i)}]", a)]
    regression = [h.loss in REGRESSION for h in heads]
    d.targets = [r for h, t, reg in zip(heads, targets, regression) if reg
                 for r in feature_rows(target_label(h, heads), t)]
    outputs = _outputs(model, xs) if any(regression) else [None] * len(heads)
    found += target_findings(heads, targets, outputs, rows, median, p.progress[1] if p.progress else None)
    if _constant(xs):  # the data's fault, not the model's: no study's advice applies
        found.insert(0, Finding("constant_inputs", "the inputs do not vary over these batches (every feature's std is "
                                                   "0): nothing the model does can learn from them; check the data"))
    else:
        found += input_findings(model, d.inputs, rows, acts)
    found += activation_findings(acts)
    found += facts(model, d.stats.act_kinds)
    explain(found, acts[0]["layer"] if acts else None)
    d.findings = ordered(found)
    kinds = {f.kind for f in d.findings}
    if "constant_inputs" not in kinds:
        for f in d.problems:
            f.evidence = for_finding(f.kind, kinds)
    d.figure = figure(d)
    return d


def _no_class(labels: np.ndarray, units: int | None) -> bool:
    """Labels a sparse cross-entropy has no class for (negative, or >= its head's units): Keras
    cannot compute the loss on them, so there is nothing to measure."""
    return bool(labels.size) and (labels.min() < 0 or (units is not None and labels.max() >= units))


def _input_name(x, i: int) -> str:
    return sorted(x)[i] if isinstance(x, dict) else str(i)


def _outputs(model, xs: list) -> list:
    """The model's outputs on the batches in inference mode (nothing changes: no statistics
    move, no dropout), one array per head."""
    import tensorflow as tf

    per_batch = [[np.asarray(o) for o in tf.nest.flatten(model(xb, training=False))] for xb in xs]
    return [np.concatenate([b[i] for b in per_batch]) for i in range(len(per_batch[0]))]


def sharpness_on(step, xs: list, ys: list):
    """λ_max of the loss Hessian at the model's weights over the diagnosis batches
    (zoo.instruments.sharpness), in inference mode; changes no variable."""
    from zoo.instruments.sharpness import SharpnessMeter, objective_of

    meter = SharpnessMeter(objective_of(step), step.variables, iterations=SHARPNESS_ITERATIONS, tolerance=1e-4)
    return meter.read(list(zip(xs, ys)))


SHARPNESS_ITERATIONS = 100  # block iterations (3 products each) at most: a cold start, read once to 1e-4


def sharpness_lines(reading) -> list[str]:
    """The report's sharpness section: λ_max and the largest learning rate plain gradient descent
    is stable at, 2/λ_max (on a quadratic of that curvature it diverges beyond: Cohen et al. 2021)."""
    if reading is None:
        return []
    lam = reading.lambda_max
    if not math.isfinite(lam):
        return ["", "## Sharpness", "", "λ_max of the loss's Hessian over these batches: not finite (the "
                "loss or its Hessian-vector products overflow at these weights)."]
    stable = f"{_num(2 / lam)}" if lam > 0 else "any (no positive curvature)"
    return ["", "## Sharpness", "",
            f"λ_max of the loss's Hessian over these batches (inference mode): {_num(lam)} "
            f"({reading.iterations} Hessian-vector products, residual {reading.residual:.1e}). "
            f"Plain gradient descent is stable on a quadratic of this curvature at learning rates "
            f"below 2/λ_max = {stable}; SGD with momentum β below (2 + 2β)/λ_max."]


def figure(d: Diagnosis):
    """Gradient norm per layer (median, band over batches) on a log scale; the gradient through
    time for recurrent models; saturated and dead fractions for activation layers."""
    from matplotlib.figure import Figure


    p = d.probed
    acts, recurrent = d.activation_rows(), p.time_grad is not None
    panels = 1 + bool(acts) + recurrent
    fig = Figure(figsize=(5.6 * panels + 1.5, 5.6))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    ax = axes[0]
    floor = _floor(p.grad_norm)
    flow_panel(ax, p, "#1f5fa8", floor, "o")
    ax.set_yscale("log")
    ax.set_ylim(floor / 1.6, max(finite_max(p.grad_norm), floor * 10) * 6)
    ax.set_ylabel("‖∂L/∂W‖ of each layer (log scale)")
    ax.set_xlim(-0.04, 1.04)
    _ticks(ax, p, top=False, color="black")
    ax.set_xlabel("normalized depth (0 = input layer, 1 = output layer)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best", title="line: median over batches · band: min–max", title_fontsize=7.5)
    k = 1
    if recurrent:
        time_panel(axes[k], [p], ("#1f5fa8",))
        k += 1
    if acts:
        a = axes[k]
        y = np.arange(len(acts))
        sat = [0 if math.isnan(r["saturated"]) else r["saturated"] for r in acts]
        dead = [0 if math.isnan(r["dead"]) else r["dead"] for r in acts]
        a.barh(y - 0.2, sat, height=0.4, color="#c0392b", label="saturated (sigmoid / tanh tails)")
        a.barh(y + 0.2, dead, height=0.4, color="0.35", label="dead units (ReLU)")
        for i, r in enumerate(acts):  # the numbers, also where a bar is too short to see
            text = " · ".join(t for t in (f"sat {_pct(r['saturated'])}" if not math.isnan(r["saturated"]) else "",
                                          f"dead {_pct(r['dead'])}" if not math.isnan(r["dead"]) else "") if t)
            a.text(max(sat[i], dead[i]) + 0.01, i, text, va="center", fontsize=6.5, color="0.25")
        a.axvline(SATURATED, color="black", lw=0.8, ls=":")
        a.set_yticks(y)
        a.set_yticklabels([f"{r['layer']} ({r['kind']})" for r in acts], fontsize=7)
        a.invert_yaxis()
        a.set_xlim(0, 1)
        a.set_xlabel("fraction (median over batches); dotted: the finding's threshold")
        a.legend(fontsize=8, loc="lower right")
        a.set_title("activations", fontsize=10)
    fig.suptitle(f"{d.label}: {d.headline} — {p.verdict.reason}", fontsize=10.5)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return fig
