"""What a diagnosis finds, each finding with its evidence (the numbers, the layer or time step)
and, where the zoo can see it, the structural cause that explains the numbers.

Every rule is evaluated on its own: a model that explodes across layers and through time gets
both findings (the verdict, zoo.records.verdict, names only the first rule that fires). The
kinds, most severe first (:data:`SEVERITY`):

- ``ill_posed``: a head's targets are outside what its loss reads, or a loss value is below the
  loss's floor (zoo.records.posedness); nothing the gradient says about learning can be read.
- ``double_activation``: an output layer applies a softmax or sigmoid and its loss applies it
  again (``from_logits=True``): the loss cannot fall below a floor of its own (a softmax over
  probabilities in [0, 1] puts at most e / (e + K − 1) on a class).
- ``diverged``: a batch gave a non-finite loss or gradient at the current weights.
- ``constant_inputs``: the inputs do not vary (a fact about the data, not the model).
- ``norm_size1``: a LayerNormalization over an axis of size 1: x minus its mean is exactly 0,
  so the layer outputs its offset β whatever its input, and kernels that read it get exactly 0
  while β is 0 (its initial value).
- ``dead_layer``: a ReLU-family layer with every unit 0 on every example of every batch: no
  gradient passes below it.
- ``forget_closed``: an LSTM whose mean forget gate is below FORGET_CLOSED (0.1): its cell keeps
  less than 1e-3 of itself over 3 steps (0.1³, the verdict's through-time limit), so no memory
  and no gradient through the cell state.
- ``exploding_depth`` / ``vanishing_depth`` (first/last layer gradient ratio beyond FLOW_LIMIT),
  ``exploding_time`` / ``vanishing_time`` (a recurrent layer's first/last time step ratio beyond
  TIME_FLOW_LIMIT), ``exploding_scale`` (a gradient above SCALE_HIGH × its weight),
  ``vanishing_scale`` (every gradient below SCALE_LOW × its weight): zoo.records.verdict's rules
  and limits, each on its own, over the batches.
- ``target_scale``: a regression head's targets have a root mean square above SCALE_RMS (10);
  ``input_scale``: an input feature's does, and the model does not normalize its input itself.
  10 is an order of magnitude above the unit scale that fan-in initializations assume for a
  layer's inputs (LeCun et al. 1998, "Efficient BackProp", Sec. 4.3 and 4.6; He et al. 2015,
  Sec. 2.2) and that a freshly initialized net outputs.
- ``saturated`` (a sigmoid or tanh layer with more than half its outputs in the flat tails) and
  ``dead`` (a ReLU layer with more than half its units 0 on every example of a batch).

Thresholds are fixed from those definitions before any model was diagnosed; the verdict's
limits are imported, not restated.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from zoo.analysis.comparison import _num
from zoo.instruments.layout import flow_ratio
from zoo.records.verdict import FLOW_LIMIT, SCALE_HIGH, SCALE_LOW, TIME_FLOW_LIMIT

SATURATED = 0.5      # more than half of a sigmoid / tanh layer's outputs in the flat tails
DEAD = 0.5           # more than half of a ReLU layer's units 0 on every example of a batch
FORGET_CLOSED = 0.1  # mean forget gate: the cell keeps < 1e-3 of itself over 3 steps
SCALE_RMS = 10.0     # root mean square of an input feature or a regression target

SEVERITY = ("ill_posed", "double_activation", "diverged", "constant_inputs", "norm_size1", "dead_layer",
            "forget_closed", "exploding_depth", "exploding_time", "exploding_scale", "vanishing_depth",
            "vanishing_time", "vanishing_scale", "target_scale", "input_scale", "saturated", "dead")
TITLES = {
    "ill_posed": "ill-posed loss", "double_activation": "probabilities fed to a from-logits loss",
    "diverged": "diverged", "constant_inputs": "constant inputs", "norm_size1": "normalization over one value",
    "dead_layer": "a layer dead on every example", "forget_closed": "LSTM forget gates closed",
    "exploding_depth": "exploding across layers", "exploding_time": "exploding through time",
    "exploding_scale": "gradient large next to its weights", "vanishing_depth": "vanishing across layers",
    "vanishing_time": "vanishing through time", "vanishing_scale": "every gradient tiny next to its weights",
    "target_scale": "unscaled targets", "input_scale": "unscaled inputs", "saturated": "saturated activations",
    "dead": "dead units",
}
# about the model, not problems: they select advice (zoo.analysis.diagnosis.remedies)
FACTS = ("saturating_activations", "batch_norm", "recurrent", "adaptive_optimizer", "fan_in_init")
ADAPTIVE = ("Adam", "AdamW", "Adamax", "Nadam", "Lion")  # keras.optimizers with per-parameter steps
FAN_IN = ("HeNormal", "HeUniform", "GlorotNormal", "GlorotUniform", "LecunNormal", "LecunUniform",
          "Orthogonal", "VarianceScaling")
REGRESSION = ("mean_squared_error", "mean_absolute_error", "huber", "log_cosh")
# a first layer that rescales what it reads (the model scales its own input), or reads indices, not magnitudes
SCALE_FREE = ("Normalization", "BatchNormalization", "LayerNormalization", "RMSNormalization", "UnitNormalization",
              "Rescaling", "Embedding", "IntegerLookup", "StringLookup", "CategoryEncoding", "Hashing")


@dataclass
class Finding:
    """One finding: its ``kind`` (:data:`SEVERITY`, or a fact of :data:`FACTS`), ``text`` (what was
    measured, with its numbers and the layer or time step), ``cause`` (the finding that explains
    it, in words, when the zoo sees one), ``explains`` (kernels whose numbers it explains),
    ``evidence`` (zoo.analysis.diagnosis.remedies.Evidence of the studies that speak to it)."""
    kind: str
    text: str
    cause: str = ""
    explains: frozenset = frozenset()
    evidence: list = field(default_factory=list)
    layer: str = ""   # the layer it is about, when one

    @property
    def title(self) -> str:
        return TITLES.get(self.kind, self.kind)

    @property
    def problem(self) -> bool:
        return self.kind not in FACTS


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.1f}%"


def _layer_of(kernel: str) -> str:
    """The top-level layer a kernel name belongs to ("lstm/recurrent" -> "lstm")."""
    return kernel.split("/")[0].split("#")[0]


def all_layers(model) -> list:
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        out += all_layers(layer) if hasattr(layer, "layers") else []
    return out


def positions(model) -> dict[str, int]:
    """Each top-level layer's place in the model (a functional or Sequential model's layers are in
    the order they are called)."""
    return {layer.name: i for i, layer in enumerate(getattr(model, "layers", []))}


# --- the gradient, by every rule of the verdict ---------------------------------------------------
def gradient_findings(rows: list[dict], times: list[dict], verdict) -> list[Finding]:
    """One finding per verdict rule that holds over the batches (not only the first); a batch
    with a non-finite loss or gradient is ``diverged`` alone (no ratio of it means anything)."""
    if verdict.label == "diverged":
        broken = [r["layer"] for r in rows if not math.isfinite(r["weight"])]
        where = (f"; the weights of {len(broken)} kernel{'s' * (len(broken) > 1)} are not finite: {_names(broken)} "
                 "(a training run that diverged saved them)" if broken else
                 "; every weight is finite, so the data or a layer's arithmetic overflows")
        return [Finding("diverged", f"batch {int(verdict.numbers['diverged_step'])} gave a non-finite loss or gradient "
                                    f"at the model's current weights{where}", layer=broken[0] if broken else "")]
    if not rows:
        return []
    found = []
    n = verdict.numbers
    first, last = rows[0], rows[-1]
    medians = np.array([r["median"] for r in rows])
    ends = (f"{first['layer']} {_num(first['median'])} against {last['layer']} {_num(last['median'])}")
    zeros = [r["layer"] for r in rows if r["max"] == 0]
    if n.get("flow_max", 0) > FLOW_LIMIT:
        found.append(Finding("exploding_depth", f"first/last layer gradient ratio {_num(n['flow_max'])} > "
                                                f"{FLOW_LIMIT:g} ({ends}){_step(rows, medians, 'jump')}",
                             layer=first["layer"]))
    if n.get("flow_min", 1) < 1 / FLOW_LIMIT:
        exact = f"; exactly 0 in {len(zeros)} kernel{'s' * (len(zeros) > 1)}: {_names(zeros)}" if zeros else ""
        found.append(Finding("vanishing_depth", f"first/last layer gradient ratio {_num(n['flow_min'])} < "
                                                f"{1 / FLOW_LIMIT:g} ({ends}){_step(rows, medians, 'fall')}{exact}",
                             explains=frozenset(zeros), layer=first["layer"]))
    high = [t for t in times if t["median"] > TIME_FLOW_LIMIT]
    if high:
        found.append(Finding("exploding_time", "through time: " + "; ".join(
            f"{t['layer']}: ‖∂L/∂x_0‖ / ‖∂L/∂x_{t['steps'] - 1}‖ = {_num(t['median'])} > {TIME_FLOW_LIMIT:g} "
            f"(per batch {_num(t['min'])} … {_num(t['max'])})" for t in high), layer=high[0]["layer"]))
    low = [t for t in times if t["median"] < 1 / TIME_FLOW_LIMIT]
    if low:
        found.append(Finding("vanishing_time", "through time: " + "; ".join(
            f"{t['layer']}: ‖∂L/∂x_0‖ / ‖∂L/∂x_{t['steps'] - 1}‖ = {_num(t['median'])} < {1 / TIME_FLOW_LIMIT:g} "
            f"(per batch {_num(t['min'])} … {_num(t['max'])})" for t in low), layer=low[0]["layer"]))
    ratios = np.array([r["ratio"] for r in rows])
    top = int(np.argmax(ratios))
    if n.get("scale_max", 0) > SCALE_HIGH:
        r = rows[top]
        found.append(Finding("exploding_scale", f"{r['layer']}'s gradient is {_num(r['ratio'])}× its weight norm "
                                                f"(‖∂L/∂W‖ {_num(r['median'])}, ‖W‖ {_num(r['weight'])}) > "
                                                f"{SCALE_HIGH:g}: one SGD step at lr 0.01 would move it by "
                                                f"{_num(0.01 * r['ratio'])}× its size", layer=r["layer"]))
    if n.get("scale_first_window", 1) < SCALE_LOW:
        r = rows[top]
        found.append(Finding("vanishing_scale", f"every layer's gradient is below {SCALE_LOW:g}× its weight norm; "
                                                f"the largest, {r['layer']}'s, is {_num(r['ratio'])}×",
                             explains=frozenset(zeros), layer=r["layer"]))
    return found


def _step(rows, medians, which: str) -> str:
    """The largest jump (or fall) of the median gradient norm between consecutive kernels."""
    if len(rows) < 2:
        return ""
    ratios = [flow_ratio(float(medians[i]), float(medians[i + 1])) for i in range(len(rows) - 1)]
    ratios = np.array([r if np.isfinite(r) else (1e300 if which == "jump" else 0.0) for r in ratios])
    i = int(np.argmax(ratios) if which == "jump" else np.argmin(ratios))
    if (which == "jump" and ratios[i] <= 1) or (which == "fall" and ratios[i] >= 1):
        return ""
    word = "grows most" if which == "jump" else "shrinks most"
    return (f"; toward the input it {word} between {rows[i + 1]['layer']} and {rows[i]['layer']} "
            f"(×{_num(ratios[i])})")


def _names(names, at_most: int = 6) -> str:
    names = list(names)
    return ", ".join(names[:at_most]) + (f" and {len(names) - at_most} more" if len(names) > at_most else "")


def activation_findings(acts: list[dict]) -> list[Finding]:
    found = []
    for r in acts:
        if r["saturated"] > SATURATED:
            found.append(Finding("saturated", f"{r['layer']} ({r['kind']}) is saturated: {_pct(r['saturated'])} of "
                                              "its outputs in the flat tails", layer=r["layer"]))
        if r["dead"] > DEAD and not r.get("all_dead"):
            found.append(Finding("dead", f"{r['layer']} ({r['kind']}): {_pct(r['dead'])} of its units are 0 on every "
                                         "example of a batch", layer=r["layer"]))
    return found


# --- structural causes ---------------------------------------------------------------------------
def structural_findings(model, heads, rows: list[dict], acts: list[dict], gates: dict[str, float],
                        loss_median: float) -> list[Finding]:
    """Causes the model's structure shows: a normalization over one value, probabilities fed to a
    from-logits loss, a ReLU layer dead on every example, an LSTM whose forget gates are closed."""
    found = []
    where = positions(model)
    zeros = [r["layer"] for r in rows if r["max"] == 0]
    norms = [layer for layer in getattr(model, "layers", []) if _normalized_size(layer) == 1]
    if norms:
        after = [k for k in zeros if where.get(_layer_of(k), -1) > where[norms[0].name]]
        measured = (f"; exactly 0 in the {len(after)} kernel{'s' * (len(after) > 1)} after {norms[0].name}: "
                    f"{_names(after)}" if after else "")
        found.append(Finding("norm_size1", f"{_names([l.name for l in norms])} (LayerNormalization) "
                                           f"normalize{'s' * (len(norms) == 1)} over 1 value (axis {_axis(norms[0])} "
                                           "of the input has size 1): x minus its mean is exactly 0, so the output "
                                           f"is the layer's offset β whatever its input{measured}",
                                 explains=frozenset(after), layer=norms[0].name))
    for head in heads:
        if head.activation and head.from_logits:
            found.append(_double_activation(head, loss_median))
    for r in acts:
        if r.get("all_dead"):
            at = where.get(r["layer"], -1)
            below = [k for k in zeros if where.get(_layer_of(k), -1) <= at]
            measured = (f"; exactly 0 in the {len(below)} kernel{'s' * (len(below) > 1)} up to it: {_names(below)}"
                        if below else "")
            before = [l.name for l in norms if where[l.name] < at]
            found.append(Finding("dead_layer", f"{r['layer']} ({r['kind']}): every unit is 0 on every example of every "
                                               f"batch, so no gradient passes below it{measured}",
                                 cause=f"{before[-1]} before it outputs a constant ({TITLES['norm_size1']})" if before else "",
                                 explains=frozenset(below), layer=r["layer"]))
    for name, gate in gates.items():
        if gate < FORGET_CLOSED:
            found.append(Finding("forget_closed", f"{name}: mean forget gate {gate:.3g} < {FORGET_CLOSED:g}: the cell "
                                                  f"keeps {gate ** 3:.2g} of itself over 3 steps, so neither memory "
                                                  "nor gradient passes through the cell state", layer=name))
    return found


def _normalized_size(layer) -> int | None:
    """How many values a layer normalization normalizes over (None: not one, or unknown)."""
    if type(layer).__name__ != "LayerNormalization":
        return None
    try:
        shape = tuple(layer.input.shape)
    except (AttributeError, ValueError):
        return None
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    sizes = [shape[a] for a in axes]
    return None if any(s is None for s in sizes) else int(np.prod(sizes))


def _axis(layer) -> str:
    return ", ".join(str(a) for a in (layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]))


def _double_activation(head, loss_median: float) -> Finding:
    """A softmax (sigmoid) output read as logits: the loss applies softmax (sigmoid) to values in
    [0, 1], so the largest probability it can see for a class is e / (e + K − 1) (sigmoid(1) =
    0.731 and at least sigmoid(0) = 0.5 for a sigmoid), and the loss has a floor above 0."""
    k = head.units or 2
    if head.activation == "softmax":
        floor = math.log(1 + (k - 1) / math.e)
        what = (f"the loss's softmax sees values in [0, 1], so no class gets more than e / (e + {k - 1}) = "
                f"{math.e / (math.e + k - 1):.3g}: the loss cannot fall below {floor:.3g}")
    else:
        floor = -math.log(1 / (1 + math.exp(-1)))
        what = ("the loss's sigmoid sees values in [0, 1], so it predicts between 0.5 and 0.731: the loss "
                f"cannot fall below {floor:.3g} on a positive target nor below {math.log(2):.3g} on a negative one")
    return Finding("double_activation", f"output {head.name} ends in a {head.activation} and its loss "
                                        f"({head.loss} from logits) applies one again: {what} (median loss here "
                                        f"{_num(loss_median)}); give the loss from_logits=False, or drop the activation",
                   layer=head.name)


# --- data: inputs and targets against what the model and loss expect ------------------------------
def feature_rows(name: str, a) -> list[dict]:
    """Per feature (the last axis) of one array: mean, std, min, max and root mean square."""
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.floating) or a.ndim == 0:
        return []
    flat = a.reshape(-1, a.shape[-1] if a.ndim > 1 else 1).astype(np.float64)
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    return [{"array": name, "feature": i, "mean": float(mean[i]), "std": float(std[i]), "min": float(flat[:, i].min()),
             "max": float(flat[:, i].max()), "rms": float(math.hypot(mean[i], std[i]))} for i in range(flat.shape[1])]


def _worst(rows: list[dict], at_most: int = 3) -> str:
    worst = sorted(rows, key=lambda r: -r["rms"])[:at_most]
    more = f"; {len(rows) - at_most} more above {SCALE_RMS:g}" if len(rows) > at_most else ""
    return "; ".join(f"{r['array']}[..., {r['feature']}]: mean {_num(r['mean'])}, std {_num(r['std'])}, range "
                     f"{_num(r['min'])} … {_num(r['max'])} (RMS {_num(r['rms'])})" for r in worst) + more


def scale_free_input(model) -> bool:
    """Does the model's first layer (after its inputs) normalize or rescale what it reads, or
    read it as indices (an embedding, a lookup)? Then the inputs' magnitude is not the first
    layer's business."""
    for layer in getattr(model, "layers", []):
        if type(layer).__name__ == "InputLayer":
            continue
        return type(layer).__name__ in SCALE_FREE
    return False


def input_findings(model, inputs: list[dict], rows: list[dict], acts: list[dict]) -> list[Finding]:
    """``input_scale`` when an input feature's RMS exceeds SCALE_RMS and the model does not
    normalize its input itself; with the measured effect on the first layer."""
    big = [r for r in inputs if r["rms"] > SCALE_RMS]
    if not big or scale_free_input(model):
        return []
    effect = []
    if rows:
        effect.append(f"the first kernel, {rows[0]['layer']}, gets a gradient {_num(rows[0]['ratio'])}× its weight norm")
    if acts:
        a = acts[0]
        if not math.isnan(a["saturated"]):
            effect.append(f"the first activation layer, {a['layer']} ({a['kind']}), has {_pct(a['saturated'])} of its "
                          "outputs in the flat tails")
        elif not math.isnan(a["dead"]):
            effect.append(f"the first activation layer, {a['layer']} ({a['kind']}), has {_pct(a['dead'])} dead units")
    shift = any(abs(r["mean"]) > r["std"] for r in big)
    return [Finding("input_scale", f"{len(big)} input feature{'s' * (len(big) > 1)} with RMS above {SCALE_RMS:g}, "
                                   f"where fan-in initializations assume about 1: {_worst(big)}"
                                   + ("; mean farther from 0 than one std" if shift else "")
                                   + (f". Measured: {'; '.join(effect)}" if effect else ""), layer="inputs")]


def target_label(head, heads) -> str:
    """How the data table and the findings name a head's targets: ``y``, or ``y[name]``."""
    return "y" if len(heads) == 1 else f"y[{head.name}]"


def target_findings(heads, targets: list, outputs: list, rows: list[dict], loss_median: float,
                    ratio: float | None) -> list[Finding]:
    """``target_scale`` for a regression head whose targets' RMS exceeds SCALE_RMS: with the
    model's own output RMS on the batches (what it would have to grow to), the loss and the
    last kernel's gradient against its weights."""
    found = []
    for head, y, out in zip(heads, targets, outputs):
        if head.loss not in REGRESSION or y is None:
            continue
        cols = feature_rows(target_label(head, heads), np.asarray(y, dtype=np.float32))
        big = [r for r in cols if r["rms"] > SCALE_RMS]
        if not big:
            continue
        out_rms = float(np.sqrt(np.mean(np.square(np.asarray(out, np.float64))))) if out is not None else math.nan
        effect = [f"the model outputs RMS {_num(out_rms)} against the targets' {_num(max(r['rms'] for r in big))}",
                  f"loss {_num(loss_median)}" + (f" ({_num(ratio)}× the best constant predictor's)" if ratio else "")]
        if rows:
            effect.append(f"the last kernel, {rows[-1]['layer']}, gets a gradient {_num(rows[-1]['ratio'])}× its weight "
                          "norm (under a squared loss every gradient is proportional to the residual)")
        found.append(Finding("target_scale", f"targets of {head.name} ({head.loss}) with RMS above {SCALE_RMS:g}: "
                                             f"{_worst(big)}. Measured: {'; '.join(effect)}", layer=head.name))
    return found


def posedness_findings(heads, reasons: list, loss_values) -> list[Finding]:
    """``ill_posed`` for each head whose loss cannot read its targets (``reasons``, one per head:
    zoo.records.posedness.ill_posed), with the loss measured on the batches."""
    low, high = float(np.min(loss_values)), float(np.max(loss_values))
    return [Finding("ill_posed", f"output {head.name}: {reason}; the loss on these batches is {_num(low)} … {_num(high)}",
                    layer=head.name) for head, reason in zip(heads, reasons) if reason]


def facts(model, act_kinds) -> list[Finding]:
    """What the model is, for the advice: saturating activations, its optimizer, its inits, batch
    norm, recurrent layers."""
    import keras

    found = []
    if any(k in ("sigmoid", "tanh") for k in act_kinds):
        found.append(Finding("saturating_activations", "it has sigmoid or tanh layers"))
    layers = all_layers(model)
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


# --- causes, and the order ----------------------------------------------------------------------
def explain(found: list[Finding], first_activation: str | None = None) -> None:
    """Name the cause of a finding when another explains its numbers: exactly-0 kernels by the
    normalization or dead layer upstream of them that has no cause of its own (a dead layer fed
    by a constant normalization is named by structural_findings); vanishing through time by
    closed forget gates; exploding gradients by unscaled targets; a saturated or dead first
    activation layer by unscaled inputs."""
    by_kind: dict[str, list[Finding]] = {}
    for f in found:
        by_kind.setdefault(f.kind, []).append(f)
    roots = [f for f in by_kind.get("norm_size1", []) + by_kind.get("dead_layer", []) if not f.cause]
    for f in by_kind.get("vanishing_depth", []) + by_kind.get("vanishing_scale", []):
        causes = [s for s in roots if s.explains & f.explains]
        if causes:
            f.cause = "; ".join(f"{s.layer}: {s.title}" for s in causes)
    gates = {f.layer for f in by_kind.get("forget_closed", [])}
    for f in by_kind.get("vanishing_time", []):
        if gates:
            f.cause = "; ".join(f"{g}: {TITLES['forget_closed']}" for g in sorted(gates))
    for f in by_kind.get("exploding_scale", []) + by_kind.get("exploding_depth", []):
        if "target_scale" in by_kind:
            f.cause = f"{TITLES['target_scale']}: the gradient is proportional to the residual, and so to the targets"
    for f in by_kind.get("saturated", []) + by_kind.get("dead", []):
        if "input_scale" in by_kind and f.layer == first_activation:
            f.cause = f"{TITLES['input_scale']}: this is the first layer that reads them"


def ordered(found: list[Finding]) -> list[Finding]:
    """Problems by :data:`SEVERITY` (then as found), then the facts."""
    rank = {k: i for i, k in enumerate(SEVERITY)}
    return sorted(found, key=lambda f: rank.get(f.kind, len(SEVERITY)))
