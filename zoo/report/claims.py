"""Judge an ablation study's claim from the literature against its runs, and tabulate the study.

A sweep answers a question only if the question is written down before training. Each study
carries its claim ("sigmoid at depth 20 passes < 1e-3 of the first-layer gradient relu+he
passes", Glorot & Bengio 2010) as checks over run metrics, and this module says reproduced /
not reproduced / inconclusive with the numbers in view. A run that failed or diverged is not
silently averaged in or dropped: it is excluded from the mean and named, and a side left with
no usable run makes the check inconclusive rather than vacuously true.

Plain records in, plain text out: no TensorFlow or MLflow here, so a verdict can be recomputed
from exported runs and tested without either.
"""
from __future__ import annotations

import csv
import io
import math
import operator
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
CHECK_KEYS = ("metric", "variant", "op", "factor", "than", "value")
DIVERGED = "diverged"  # pseudo-metric, 1.0 per diverged run: lets a claim be about divergence rates


@dataclass
class RunRecord:
    run_id: str
    params: dict[str, str]      # flattened resolved config, as MLflow stores it (strings)
    metrics: dict[str, float]   # final values
    status: str                 # MLflow status: FINISHED | FAILED | KILLED | RUNNING
    outcome: str                # finished | diverged | failed
    error: str | None = None
    diverged_step: int | None = None


@dataclass
class CheckResult:
    text: str
    status: str                 # holds | fails | inconclusive
    lhs: float | None           # mean over the variant's usable runs
    rhs: float | None           # factor × (mean over `than`, or `value`): what lhs is compared with


@dataclass
class ClaimResult:
    status: str                 # reproduced | not reproduced | inconclusive
    text: str
    checks: list[CheckResult]
    failed_variants: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.status}: {self.text}", *(f"  {c.text}" for c in self.checks)]
        if self.failed_variants:
            lines.append(f"excluded runs ({len(self.failed_variants)}):")
            lines += [f"  {line}" for line in self.failed_variants]
        return "\n".join(lines)


@dataclass
class Row:
    variant: dict[str, str]
    n: int
    n_finished: int
    n_diverged: int
    n_failed: int               # everything else: failed, killed, or left RUNNING by a dead process
    stats: dict[str, tuple[float, float]]  # metric -> (mean, std) over usable runs; NaN if none


def _number(x, where: str) -> float:
    """YAML 1.1 reads `1e-3` (no dot) as a string, so numeric strings are accepted here."""
    try:
        if isinstance(x, bool):
            raise ValueError
        f = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a number, got {x!r}") from None
    if not math.isfinite(f):
        raise ValueError(f"{where} must be finite, got {x!r}")
    return f


def validate_claim(claim: Mapping) -> None:
    """Called by the study loader before any training: a typo found after the sweep costs the sweep."""
    if not isinstance(claim, Mapping):
        raise ValueError(f"claim must be a mapping with 'text' and 'checks', got {type(claim).__name__}")
    if not isinstance(claim.get("text"), str) or not claim["text"].strip():
        raise ValueError("claim needs a 'text': the sentence from the literature being tested")
    checks = claim.get("checks")
    if isinstance(checks, (str, bytes)) or not isinstance(checks, Sequence) or not checks:
        raise ValueError("claim needs a non-empty 'checks' list; a claim without checks cannot fail")
    for i, check in enumerate(checks):
        where = f"claim check {i}"
        if not isinstance(check, Mapping):
            raise ValueError(f"{where}: must be a mapping with keys {', '.join(CHECK_KEYS)}")
        unknown = sorted(set(map(str, check)) - set(CHECK_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(CHECK_KEYS)}")
        if not isinstance(check.get("metric"), str) or not check["metric"]:
            raise ValueError(f"{where}: needs 'metric', e.g. final/val_accuracy or {DIVERGED}")
        if not isinstance(check.get("variant"), Mapping):
            raise ValueError(f"{where}: needs 'variant', a mapping of params, e.g. {{model.activation: relu}}")
        if check.get("op") not in OPS:
            raise ValueError(f"{where}: unknown op {check.get('op')!r}; choose one of: {', '.join(OPS)}")
        if ("than" in check) == ("value" in check):
            raise ValueError(f"{where}: give exactly one of 'than' (another variant) or 'value' (a constant)")
        if "than" in check and not isinstance(check["than"], Mapping):
            raise ValueError(f"{where}: 'than' must be a mapping of params, e.g. {{model.activation: relu}}")
        if "value" in check:
            _number(check["value"], f"{where}: 'value'")
        if "factor" in check:
            _number(check["factor"], f"{where}: 'factor'")


def _canon(v) -> str:
    """YAML's null and the run params' "null" (zoo.run.flat_params) are the same unset value."""
    s = "null" if v is None else str(v).strip()
    low = s.lower()
    if low in ("none", "null"):
        return "null"
    return low if low in ("true", "false") else s


def _same(a, b) -> bool:
    """MLflow gives "0.001" and "20" where YAML gave 1e-3 and 20; compare what they mean."""
    a, b = _canon(a), _canon(b)
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except ValueError:
        return a == b


def _matches(params: Mapping, variant: Mapping) -> bool:
    return all(k in params and _same(params[k], v) for k, v in variant.items())


def _fmt_variant(variant: Mapping) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in variant.items()) + "}"


def _clean(r: RunRecord) -> bool:
    return r.status == "FINISHED" and r.outcome == "finished"


def _what_went_wrong(r: RunRecord) -> str:
    if r.outcome == "diverged":
        return "diverged"
    if r.outcome == "failed" or r.status == "FAILED":
        return "failed"
    return r.status.lower()


def _measured_at_init(metric: str) -> bool:
    """``summary/*_init`` numbers describe the first steps: a later divergence does not undo them."""
    return metric.startswith("summary/") and metric.endswith("_init")


def _usable(runs: list[RunRecord], metric: str) -> tuple[list[float], Counter]:
    """A diverged run has no meaningful final accuracy, but it is exactly the data for `diverged`,
    and its numbers from initialization still stand."""
    values, skipped = [], Counter()
    for r in runs:
        if metric == DIVERGED and (r.outcome == "diverged" or _clean(r)):
            values.append(float(r.outcome == "diverged"))
        elif metric != DIVERGED and (_clean(r) or (r.outcome == "diverged" and _measured_at_init(metric))):
            v = r.metrics.get(metric)
            if v is not None and math.isfinite(float(v)):
                values.append(float(v))
            else:
                skipped["metric missing" if v is None else "metric not finite"] += 1
        else:
            skipped[_what_went_wrong(r)] += 1
    return values, skipped


def _side(records, variant: Mapping, metric: str) -> tuple[float | None, float, str, str | None]:
    """Mean, std over seeds, their description (mean ± std, n, exclusions), and why unusable."""
    runs = [r for r in records if _matches(r.params, variant)]
    values, skipped = _usable(runs, metric)
    label = ",".join(str(v) for v in variant.values()) or "all runs"
    why = ", ".join(f"{n} {k}" for k, n in skipped.items())
    if not runs:
        return None, 0.0, f"{label} = no data", f"variant {_fmt_variant(variant)}: no run matches"
    if not values:
        reason = f"variant {_fmt_variant(variant)}: 0 of {len(runs)} runs usable" + (f" ({why})" if why else "")
        return None, 0.0, f"{label} = no data", reason
    mean, std = float(np.mean(values)), float(np.std(values))
    return mean, std, f"{label} = {mean:.3g} ± {std:.3g} (n={len(values)}{f'; {why} excluded' if why else ''})", None


def _check(check: Mapping, records) -> CheckResult:
    """A comparison holds when the means satisfy it *and* the mean ± std intervals over seeds do
    not overlap; means that satisfy it within the spread are inconclusive, not evidence (with one
    seed there is no spread to go by, and the means decide)."""
    metric, op = check["metric"], check["op"]
    factor = _number(check.get("factor", 1), "factor")
    lhs, lhs_std, left, why_left = _side(records, check["variant"], metric)
    if "than" in check:
        base, base_std, right, why_right = _side(records, check["than"], metric)
    else:
        base, base_std = _number(check["value"], "value"), 0.0
        right, why_right = f"{base:.3g}", None
    rhs = None if base is None else factor * base
    head = f"{metric}: {left} {op} {'' if factor == 1 else f'{factor:.3g} × '}{right}"
    reasons = [w for w in (why_left, why_right) if w]
    if reasons:
        return CheckResult(f"{head}: inconclusive ({'; '.join(reasons)})", "inconclusive", lhs, rhs)
    if not OPS[op](lhs, rhs):
        return CheckResult(f"{head}: fails", "fails", lhs, rhs)
    spread = lhs_std + abs(factor) * base_std
    if abs(lhs - rhs) <= spread and spread > 0:
        return CheckResult(f"{head}: inconclusive (the difference {abs(lhs - rhs):.3g} is within the "
                           f"spread over seeds {spread:.3g})", "inconclusive", lhs, rhs)
    return CheckResult(f"{head}: holds", "holds", lhs, rhs)


def _one_line(error: str) -> str:
    lines = [ln.strip() for ln in error.strip().splitlines() if ln.strip()] or ["(empty error)"]
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]


def _excluded_line(r: RunRecord, variant_keys: list[str]) -> str:
    where = _fmt_variant({k: r.params.get(k, "?") for k in variant_keys})
    if "seed" in r.params and "seed" not in variant_keys:
        where += f" seed={r.params['seed']}"
    if r.outcome == "diverged":
        what = "diverged" + (f" at step {r.diverged_step}" if r.diverged_step is not None else "")
    elif r.error:
        what = f"failed: {_one_line(r.error)}"
    else:
        what = f"{_what_went_wrong(r)} (status {r.status}, outcome {r.outcome}, no error recorded)"
    return f"{where} run {r.run_id}: {what}"


def check_claim(claim: Mapping, records: list[RunRecord], variant_keys: list[str]) -> ClaimResult:
    validate_claim(claim)
    checks = [_check(c, records) for c in claim["checks"]]
    statuses = {c.status for c in checks}
    status = ("not reproduced" if "fails" in statuses
              else "inconclusive" if "inconclusive" in statuses else "reproduced")
    excluded = [_excluded_line(r, variant_keys) for r in records if not _clean(r)]
    return ClaimResult(status, claim["text"], checks, excluded)


def summarize(records: list[RunRecord], variant_keys: list[str], metrics: list[str]) -> list[Row]:
    """One row per variant with seeds pooled, because a single seed says little about a gradient."""
    groups: dict[tuple[str, ...], list[RunRecord]] = {}
    for r in records:
        groups.setdefault(tuple(str(r.params.get(k, "")) for k in variant_keys), []).append(r)
    rows = []
    for key, runs in groups.items():
        stats = {}
        for m in metrics:
            values, _ = _usable(runs, m)
            stats[m] = (float(np.mean(values)), float(np.std(values))) if values else (math.nan, math.nan)
        n_finished = sum(_clean(r) for r in runs)
        n_diverged = sum(r.outcome == "diverged" for r in runs)
        rows.append(Row(dict(zip(variant_keys, key)), len(runs), n_finished, n_diverged,
                        len(runs) - n_finished - n_diverged, stats))
    return rows


def _counts(row: Row) -> list[int]:
    return [row.n, row.n_finished, row.n_diverged, row.n_failed]


def to_csv(rows: list[Row], variant_keys: list[str], metrics: list[str]) -> str:
    """Full precision, empty cell for no data: the file is for further analysis, not for reading."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([*variant_keys, "n", "finished", "diverged", "failed",
                *(f"{m}_{s}" for m in metrics for s in ("mean", "std"))])
    for row in rows:
        numbers = [repr(x) if math.isfinite(x) else "" for m in metrics for x in row.stats[m]]
        w.writerow([*(row.variant[k] for k in variant_keys), *_counts(row), *numbers])
    return out.getvalue()


def to_markdown(rows: list[Row], variant_keys: list[str], metrics: list[str]) -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|")

    def stat(mean: float, std: float) -> str:
        return f"{mean:.3g} ± {std:.3g}" if math.isfinite(mean) else "—"

    header = [*variant_keys, "n", "finished", "diverged", "failed", *metrics]
    lines = ["| " + " | ".join(map(cell, header)) + " |",
             "|" + "|".join(["---"] * len(variant_keys) + ["---:"] * (4 + len(metrics))) + "|"]
    for row in rows:
        cells = [*(row.variant[k] for k in variant_keys), *_counts(row), *(stat(*row.stats[m]) for m in metrics)]
        lines.append("| " + " | ".join(map(cell, cells)) + " |")
    return "\n".join(lines) + "\n"
