"""``zoo.diagnose(model, data)``: what is wrong with a model's gradients, and what the zoo's
studies showed helps.

The model is measured at its current weights on a few batches of the user's data, changing no
variable (zoo.measure: the zoo's own instrumented step at learning rate 0, batch-norm
statistics put back). The diagnosis reports, over the batches (median and range): each
kernel's gradient norm and its ratio to the weight norm; each activation layer's saturated and
dead fractions; for recurrent layers the gradient reaching each time step; LSTM forget gates;
the verdict (zoo.monitor.verdict, the batches as steps) and the loss against the best constant
predictor's. Its findings (zoo.diagnosis.remedies names them) select the advice, which is only
what a **reproduced** study showed, each with its claim and measured numbers.

Thresholds, fixed before any model was diagnosed: a sigmoid or tanh layer is *saturated* when
more than half of its outputs are in the flat tails (|tanh| > 0.995, sigmoid outside [0.0025,
0.9975]: zoo.monitor.graph_stats), a ReLU layer *dead* when more than half of its units are 0 on
every example of the batch (SATURATED, DEAD).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zoo.arguments import check_diagnose
from zoo.diagnosis.remedies import Evidence, applicable, claim_text

SATURATED = 0.5   # more than half of a sigmoid / tanh layer's outputs in the flat tails
DEAD = 0.5        # more than half of a ReLU layer's units 0 on every example of a batch
BATCHES, BATCH_SIZE = 4, 64
TASKS = ("classification", "regression")


@dataclass
class Finding:
    kind: str     # a finding kind of zoo.diagnosis.remedies
    text: str     # what was measured, in words


@dataclass
class Diagnosis:
    """One model's diagnosis: ``problem`` (True unless healthy and nothing saturated or dead),
    ``findings``, ``remedies`` / ``not_helping`` / ``not_shown`` (zoo.diagnosis.remedies
    Evidence), ``markdown()``, ``figure``, ``save(folder)``."""
    label: str
    probed: object                 # zoo.comparison.Probed: per-batch norms, verdict, progress
    stats: object                  # zoo.monitor.stats.RunStats, one row per batch
    loss_name: str
    batches: int
    batch_size: int
    findings: list[Finding] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    figure: object = None

    @property
    def verdict(self):
        return self.probed.verdict

    @property
    def headline(self) -> str:
        """The verdict's label (a diagnosis judges the gradient, not training progress)."""
        return self.probed.verdict.label

    @property
    def problem(self) -> bool:
        return any(f.kind not in FACTS for f in self.findings)

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
        g, w = self.stats.grad_norm, self.stats.weight_norm
        ratio = g / np.maximum(w, 1e-300)
        return [{"layer": name, "median": float(np.median(g[:, i])), "min": float(g[:, i].min()),
                 "max": float(g[:, i].max()), "weight": float(w[0, i]), "ratio": float(np.median(ratio[:, i]))}
                for i, name in enumerate(self.stats.layers)]

    def activation_rows(self) -> list[dict]:
        """Per activation layer: its kind and the median saturated and dead fractions (NaN where
        a fraction does not apply)."""
        s = self.stats.act_stats
        return [{"layer": name, "kind": kind, "saturated": float(np.median(s[:, i, 2])),
                 "dead": float(np.median(s[:, i, 3]))}
                for i, (name, kind) in enumerate(zip(self.stats.act_layers, self.stats.act_kinds))]

    def time_rows(self) -> list[dict]:
        """Per recurrent layer: the gradient reaching its first input step over the last's."""
        t = self.stats.time_grad
        rows = []
        for i, name in enumerate(self.stats.seq_layers):
            ratios = np.array([_ratio(b[i, 0], b[i, -1]) for b in t])  # per batch, for the range
            typical = _ratio(np.median(t[:, i, 0]), np.median(t[:, i, -1]))  # the verdict's rule
            rows.append({"layer": name, "steps": int(t.shape[2]), "median": typical,
                         "min": float(ratios.min()), "max": float(ratios.max())})
        return rows

    def markdown(self) -> str:
        p = self.probed
        lines = [f"# Diagnosis of {self.label}: {self.headline}", "",
                 f"Measured at the model's current weights on {self.batches} batches of up to "
                 f"{self.batch_size} examples (nothing changed); loss: {self.loss_name}.", "",
                 f"**Verdict: {p.verdict.label}** ({p.verdict.reason})."]
        if p.progress:
            lines.append(f"Loss on these batches: {_num(p.progress[1])}× the best constant predictor's "
                         "(below 1: better than predicting a constant; about 1 or above: no better).")
        lines += ["", "## Findings", ""]
        lines += [f"- {f.text}" for f in self.findings if f.kind not in FACTS] or ["- none: the gradient reaches every layer"]
        lines += ["", "## What the zoo's reproduced studies support", ""]
        if self.remedies:
            for e in self.remedies:
                lines += [f"- **{e.advice}** — study `{e.study}` (reproduced): {claim_text(e.study)} "
                          f"Measured: {e.numbers}."]
        else:
            lines.append("- no reproduced study speaks to these findings; no advice is given")
        for e in self.not_helping:
            lines.append(f"- not a remedy: {e.advice} — study `{e.study}` (reproduced): {e.numbers}.")
        for e in self.not_shown:
            lines.append(f"- not shown: study `{e.study}` is {e.verdict} ({e.numbers}); it supports no advice.")
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
        if p.skipped:
            lines += ["", "## Not measured", ""] + [f"- {what}: {why}" for what, why in p.skipped.items()]
        return "\n".join(lines) + "\n"

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


# about the model, not problems: they select advice (zoo.diagnosis.remedies)
FACTS = ("saturating_activations", "batch_norm", "recurrent", "adaptive_optimizer", "fan_in_init")
ADAPTIVE = ("Adam", "AdamW", "Adamax", "Nadam", "Lion")  # keras.optimizers with per-parameter steps
FAN_IN = ("HeNormal", "HeUniform", "GlorotNormal", "GlorotUniform", "LecunNormal", "LecunUniform",
          "Orthogonal", "VarianceScaling")


def _ratio(first: float, last: float) -> float:
    from zoo.monitor.verdict import flow_ratio

    return flow_ratio(float(first), float(last))


def _num(x: float) -> str:
    from zoo.comparison import _num as num

    return num(x)


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.1f}%"


def verdict_kind(verdict) -> str:
    """The verdict as a finding kind: which rule of zoo.monitor.verdict fired."""
    from zoo.monitor.verdict import FLOW_LIMIT, TIME_FLOW_LIMIT

    n = verdict.numbers
    if verdict.label == "exploding":
        if n["flow_max"] > FLOW_LIMIT:
            return "exploding_depth"
        return "exploding_time" if n.get("time_flow_max", 0.0) > TIME_FLOW_LIMIT else "exploding_scale"
    if verdict.label == "vanishing":
        if n["flow_min"] < 1 / FLOW_LIMIT:
            return "vanishing_depth"
        return "vanishing_time" if n.get("time_flow_first_window", 1.0) < 1 / TIME_FLOW_LIMIT else "vanishing_scale"
    return verdict.label  # healthy | diverged


def _all_layers(model) -> list:
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        out += _all_layers(layer) if hasattr(layer, "layers") else []
    return out


def findings_of(d: Diagnosis, model) -> list[Finding]:
    """The verdict's finding, each saturated or dead activation layer, and the facts about the
    model that select advice."""
    import keras

    v = d.probed.verdict
    kind = verdict_kind(v)
    found = [] if kind == "healthy" else [Finding(kind, f"{v.label}: {v.reason}")]
    for r in d.activation_rows():
        if r["saturated"] > SATURATED:
            found.append(Finding("saturated", f"{r['layer']} ({r['kind']}) is saturated: "
                                              f"{_pct(r['saturated'])} of its outputs in the flat tails"))
        if r["dead"] > DEAD:
            found.append(Finding("dead", f"{r['layer']} ({r['kind']}): {_pct(r['dead'])} of its units "
                                         "are 0 on every example of a batch"))
    if any(k in ("sigmoid", "tanh") for k in d.stats.act_kinds):
        found.append(Finding("saturating_activations", "it has sigmoid or tanh layers"))
    layers = _all_layers(model)
    optimizer = type(getattr(model, "optimizer", None)).__name__
    if optimizer in ADAPTIVE:
        found.append(Finding("adaptive_optimizer", f"it was compiled with {optimizer}"))
    inits = [type(l.kernel_initializer).__name__ for l in layers if hasattr(l, "kernel_initializer")]
    if inits and all(name in FAN_IN for name in inits):
        found.append(Finding("fan_in_init", "every kernel is initialized by a fan-in rule"))
    if any(isinstance(l, keras.layers.BatchNormalization) for l in layers):
        found.append(Finding("batch_norm", "it has batch normalization"))
    if any(isinstance(l, (keras.layers.RNN, keras.layers.Bidirectional)) for l in layers):
        found.append(Finding("recurrent", "it has recurrent layers"))
    return found


def _constant(xs: list) -> bool:
    """Every input array's every feature has std 0 over all the batches."""
    import tensorflow as tf

    flat = [tf.nest.flatten(x) for x in xs]
    return all(np.all(np.std(np.concatenate([np.asarray(b[i], np.float64) for b in flat]), axis=0) == 0)
               for i in range(len(flat[0])))


def _dataset(data):
    """(x, y, task) from what ``diagnose`` accepts."""
    from zoo.data import Dataset

    if isinstance(data, (str, Path)) and str(data).endswith(".npz"):
        from zoo.diagnosis.arrays import read_arrays

        data = read_arrays(data)
    if isinstance(data, str):
        from zoo.spec import load_dataset

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
    """Diagnose ``model`` (any Keras model, see zoo.comparison.compare) on ``data``: ``(x, y)``,
    ``(x, y, task)``, ``{"x": ..., "y": ...}``, a ``.npz`` path (``x``/``y`` or
    ``x_train``/``y_train``), a zoo dataset name or ``zoo.data.Dataset``; ``x`` and ``y`` arrays
    or lists / dicts of arrays. ``loss``: a Keras loss name or object; default the model's
    compiled loss, else the task's (integer ``y``: sparse categorical cross-entropy, from logits
    unless the model ends in a softmax; else mean squared error). ``batches`` of ``batch_size``
    examples are drawn with ``seed``. Raises zoo.diagnosis.arrays.InputError (a ValueError), in
    one line, for an unknown task or loss name, inputs that do not fit the model's input, or
    targets that do not fit its output and loss."""
    check_diagnose(model, data, loss, batches, batch_size, seed, label)
    from zoo.comparison import probed
    from zoo.data import Dataset, constant_baseline
    from zoo.measure import batches_of, measure
    from zoo.monitor.summary import progress

    import tensorflow as tf

    from zoo.diagnosis.arrays import InputError, check_fits, model_input_shape

    x, y, task = _dataset(data)
    if task not in TASKS:
        raise InputError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    if not isinstance(x, (list, tuple, dict)):
        check_fits("data", model_input_shape(model), np.asarray(x))
    xs, ys = batches_of(x, y, batches, batch_size, seed)
    label = label or model.name
    try:
        measured = measure(model, xs, ys, task, loss)
    except (ValueError, tf.errors.InvalidArgumentError) as err:
        text = " ".join((getattr(err, "message", None) or str(err)).strip().split("\n")[0].split())[:300]
        if str(err).startswith("unknown loss"):
            raise InputError(f"loss {loss!r}: not a Keras loss") from None
        raise InputError(f"y does not fit the model's output and its loss: {text}") from None
    p = probed(measured, label)
    if not isinstance(y, (list, tuple, dict)):
        y_arr = np.asarray(y)
        outputs = int(y_arr.max()) + 1 if task == "classification" else int(np.prod(y_arr.shape[1:]) or 1)
        baseline = constant_baseline(Dataset(label, np.empty((len(y_arr), 0)), y_arr, None, None, task, outputs))
        if baseline > 0:
            p.progress = progress(float(np.median(p.loss)), baseline)
    d = Diagnosis(label, p, measured.stats, measured.loss_name, len(xs), batch_size)
    d.findings = findings_of(d, model)
    if _constant(xs):  # the data's fault, not the model's: no study's advice applies
        d.findings.insert(0, Finding("constant_inputs", "the inputs do not vary over these batches (every "
                                                        "feature's std is 0): nothing the model does can "
                                                        "learn from them; check the data"))
        d.evidence = []
    else:
        d.evidence = applicable({f.kind for f in d.findings})
    d.figure = figure(d)
    return d


def figure(d: Diagnosis):
    """Gradient norm per layer (median, band over batches) on a log scale; the gradient through
    time for recurrent models; saturated and dead fractions for activation layers."""
    from matplotlib.figure import Figure

    from zoo.comparison import _floor, _ticks, flow_panel, time_panel

    p = d.probed
    acts, recurrent = d.activation_rows(), p.time_grad is not None
    panels = 1 + bool(acts) + recurrent
    fig = Figure(figsize=(5.6 * panels + 1.5, 5.6))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    ax = axes[0]
    floor = _floor(p.grad_norm)
    flow_panel(ax, p, "#1f5fa8", floor, "o")
    ax.set_yscale("log")
    ax.set_ylim(floor / 1.6, max(float(np.nanmax(p.grad_norm)), floor * 10) * 6)
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
