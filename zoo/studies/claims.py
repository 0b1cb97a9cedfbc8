"""Judge a study's claim from the literature against its runs: reproduced / not reproduced /
inconclusive, with the numbers in view.

A sweep answers a question only if the question is written down before training. Each study
carries its claim as checks over run metrics::

    - metric: summary/grad_first_init        # a name runs log (zoo.studies.metrics), or `diverged`
      variant: {model.activation: sigmoid}   # the runs this side pools (seeds, other swept keys)
      op: "<"                                # < <= > >= or ≈ (equivalence, needs `tolerance`)
      factor: 1.0e-3                         # optional: compare with factor × the other side
      than: {model.activation: relu}         # or `value: <a constant>`
      scale: log                             # optional: linear | log (default: by metric name)
      tolerance: 0.5                         # ≈ only: |difference| allowed, in the comparison scale

How a comparison is decided (``difference`` = lhs − factor·rhs; on log scale, log10 lhs −
log10 rhs − log10 factor, so gradient norms spanning 1e-18 … 1e3 are compared as ratios):

* Both sides share seeds (the ``seed`` param, two or more in common): per-seed differences,
  their mean and sample std (ddof=1) — the seed's data order and init are common to both
  sides, so pairing removes that noise. Otherwise the mean difference, and as spread
  std_lhs + |factor|·std_rhs (sample stds; on log scale the factor is a shift: std_lhs + std_rhs).
* One seed never decides: a side with fewer than 2 usable runs is inconclusive, saying so.
* ``< <= > >=``: **holds** when the difference satisfies the op and exceeds the spread;
  **fails** when it violates the op and exceeds the spread; a difference within the spread is
  **inconclusive** either way.
* ``≈``: holds when |difference| + spread <= tolerance; fails when |difference| − spread >
  tolerance; inconclusive otherwise.

The claim is reproduced when every check holds, not reproduced when one fails, inconclusive
otherwise. A run that failed or diverged is not silently averaged in or dropped: it is left out
and named, and a side left with no usable run makes its check inconclusive rather than
vacuously true (``diverged`` counts diverged runs as data; ``summary/*_init`` numbers of a run
that diverged later still count).
"""
from __future__ import annotations

import difflib
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from zoo.studies.metrics import DIVERGED, SCALES, default_scale, is_logged, logged, to_scale
from zoo.studies.records import RunRecord, clean, fmt_variant, matches, md_escape, usable, what_went_wrong

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "≈": None}
CHECK_KEYS = ("metric", "variant", "op", "factor", "than", "value", "tolerance", "scale")
MIN_RUNS = 2  # one seed never decides


@dataclass
class CheckResult:
    text: str
    status: str                   # holds | fails | inconclusive
    lhs: float | None             # the variant's center: mean, or geometric mean on log scale
    rhs: float | None             # factor × (the `than` side's center, or `value`)
    difference: float | None = None   # in the comparison scale (log10 units on log scale)
    spread: float | None = None
    scale: str = "linear"
    pairs: int = 0                # > 0: compared paired by seed over this many seeds


@dataclass
class ClaimResult:
    status: str                   # reproduced | not reproduced | inconclusive
    text: str
    checks: list[CheckResult]
    failed_variants: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.status}: {self.text}", *(f"  {c.text}" for c in self.checks)]
        if self.failed_variants:
            lines.append(f"excluded runs ({len(self.failed_variants)}):")
            lines += [f"  {line}" for line in self.failed_variants]
        return "\n".join(lines)

    def markdown(self, escape: bool = True) -> str:
        """The verdict as a heading, the claim as a quote, each check and each excluded run as
        a list item of its own (markdown joins plain lines into one paragraph)."""
        lines = [f"## Claim: {self.status}", "", *(f"> {line}" for line in self.text.splitlines() or [""]), ""]
        lines += [f"- {md_escape(c.text, escape)}" for c in self.checks]
        if self.failed_variants:
            lines += ["", f"Excluded runs ({len(self.failed_variants)}):", ""]
            lines += [f"- {md_escape(line, escape)}" for line in self.failed_variants]
        return "\n".join(lines) + "\n"


# -- validation (before any training) ------------------------------------------------------------
def number(x, where: str) -> float:
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


def check_scale(check: Mapping) -> str:
    return str(check.get("scale") or default_scale(str(check["metric"])))


def validate_metric(name, where: str) -> None:
    if not isinstance(name, str) or not is_logged(name):
        close = difflib.get_close_matches(str(name), logged(), n=3, cutoff=0.75)
        hint = f"did you mean {' or '.join(close)}?" if close else f"runs log: {', '.join(logged())}"
        raise ValueError(f"{where}: unknown metric {name!r}; {hint} (zoo.studies.metrics.logged)")


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
        _validate_check(check, f"claim check {i}")


def _validate_check(check, where: str) -> None:
    if not isinstance(check, Mapping):
        raise ValueError(f"{where}: must be a mapping with keys {', '.join(CHECK_KEYS)}")
    unknown = sorted(set(map(str, check)) - set(CHECK_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(CHECK_KEYS)}")
    if not isinstance(check.get("metric"), str) or not check["metric"]:
        raise ValueError(f"{where}: needs 'metric', e.g. final/val_accuracy or {DIVERGED}")
    validate_metric(check["metric"], where)
    if not isinstance(check.get("variant"), Mapping):
        raise ValueError(f"{where}: needs 'variant', a mapping of params, e.g. {{model.activation: relu}}")
    op = check.get("op")
    if op not in OPS:
        raise ValueError(f"{where}: unknown op {op!r}; choose one of: {', '.join(OPS)}")
    if ("than" in check) == ("value" in check):
        raise ValueError(f"{where}: give exactly one of 'than' (another variant) or 'value' (a constant)")
    if "than" in check and not isinstance(check["than"], Mapping):
        raise ValueError(f"{where}: 'than' must be a mapping of params, e.g. {{model.activation: relu}}")
    if check.get("scale") is not None and check["scale"] not in SCALES:
        raise ValueError(f"{where}: unknown scale {check['scale']!r}; choose one of: {', '.join(SCALES)}")
    log = check_scale(check) == "log"
    for key in ("value", "factor"):
        if key in check:
            x = number(check[key], f"{where}: '{key}'")
            if log and x <= 0:
                raise ValueError(f"{where}: '{key}' must be > 0 on log scale ({check['metric']} is "
                                 f"compared as log10), got {x:g}; or set scale: linear")
    if op == "≈":
        if "tolerance" not in check:
            raise ValueError(f"{where}: op '≈' needs 'tolerance', the |difference| allowed "
                             f"({'log10 units' if log else 'metric units'})")
        if number(check["tolerance"], f"{where}: 'tolerance'") <= 0:
            raise ValueError(f"{where}: 'tolerance' must be > 0, got {check['tolerance']!r}")
    elif "tolerance" in check:
        raise ValueError(f"{where}: 'tolerance' applies to op '≈' only, not {op!r}")


# -- one side of a comparison --------------------------------------------------------------------
@dataclass
class _Side:
    label: str
    points: list[tuple[str | None, float]]  # (seed, value on the comparison scale)
    center: float | None                    # natural units: mean, geometric mean, or a fraction
    text: str
    why: str | None = None                  # why there is no data
    no_run: bool = False                    # no run matches the variant at all


def _std(xs) -> float:
    return float(np.std(xs, ddof=1)) if len(xs) > 1 else math.nan


def _describe(label: str, metric: str, scale: str, values: list[float], excluded: str) -> tuple[float, str]:
    xs = [to_scale(v, scale) for v in values]
    tail = f"; {excluded} excluded" if excluded else ""
    if metric == DIVERGED:
        k = int(sum(values))
        return k / len(values), f"{label} = {k}/{len(values)}" + (f" ({excluded} excluded)" if excluded else "")
    if scale == "log":
        center = 10 ** float(np.mean(xs))
        spread = f" ×/÷ {10 ** _std(xs):.3g}" if len(xs) > 1 else ""
    else:
        center = float(np.mean(xs))
        spread = f" ± {_std(xs):.3g}" if len(xs) > 1 else ""
    return center, f"{label} = {center:.3g}{spread} (n={len(xs)}{tail})"


def _side(records, variant: Mapping, metric: str, scale: str) -> _Side:
    runs = [r for r in records if matches(r.params, variant)]
    found, skipped = usable(runs, metric)
    if scale == "log":  # a negative number has no log10: not data for a log comparison
        negative = [(r, v) for r, v in found if v < 0]
        found = [(r, v) for r, v in found if v >= 0]
        if negative:
            skipped["metric negative (log scale)"] += len(negative)
    label = ",".join(str(v) for v in variant.values()) or "all runs"
    why = ", ".join(f"{n} {k}" for k, n in skipped.items())
    if not runs:
        return _Side(label, [], None, f"{label} = no data", f"variant {fmt_variant(variant)}: no run matches", True)
    if not found:
        reason = f"variant {fmt_variant(variant)}: 0 of {len(runs)} runs usable" + (f" ({why})" if why else "")
        return _Side(label, [], None, f"{label} = no data", reason)
    center, text = _describe(label, metric, scale, [v for _, v in found], why)
    return _Side(label, [(r.seed, to_scale(v, scale)) for r, v in found], center, text)


def _pairs(left: _Side, right: _Side) -> list[tuple[float, float]]:
    """Values of the seeds both sides ran, if each side has one run per seed and they share two."""
    lseeds, rseeds = [s for s, _ in left.points], [s for s, _ in right.points]
    if None in lseeds or None in rseeds or len(set(lseeds)) < len(lseeds) or len(set(rseeds)) < len(rseeds):
        return []
    rvals = dict(right.points)
    pairs = [(x, rvals[s]) for s, x in left.points if s in rvals]
    return pairs if len(pairs) >= MIN_RUNS else []


# -- a check -------------------------------------------------------------------------------------
def _check(check: Mapping, records, study_scale: str) -> CheckResult:
    metric, op, scale = check["metric"], check["op"], check_scale(check)
    log = scale == "log"
    factor = number(check.get("factor", 1), "factor")
    mult, shift = (1.0, math.log10(factor)) if log else (factor, 0.0)
    left = _side(records, check["variant"], metric, scale)
    if "than" in check:
        right = _side(records, check["than"], metric, scale)
    else:
        value = number(check["value"], "value")
        right = _Side(f"{value:.3g}", [(None, to_scale(value, scale))], value, f"{value:.3g}")
    rhs = None if right.center is None else factor * right.center
    shown_op = f"≈ (within {number(check['tolerance'], 'tolerance'):.3g})" if op == "≈" else op
    head = (f"{metric}{' [log10]' if log else ''}: {left.text} {shown_op} "
            f"{'' if factor == 1 else f'{factor:.3g} × '}{right.text}")

    def result(status: str, detail: str = "", difference=None, spread=None, pairs=0) -> CheckResult:
        text = f"{head}: {status}" + (f" ({detail})" if detail else "")
        return CheckResult(text, status, left.center, rhs, difference, spread, scale, pairs)

    sides = [left] + ([right] if "than" in check else [])
    missing = [s for s in sides if s.why]
    if missing:
        if study_scale == "quick" and all(s.no_run for s in missing):
            return result("inconclusive", "not run at this scale: " + "; ".join(s.why for s in missing))
        return result("inconclusive", "; ".join(s.why for s in missing))
    pairs = _pairs(left, right) if "than" in check else []
    if pairs:
        diffs = [x - (mult * y + shift) for x, y in pairs]
        difference, spread = float(np.mean(diffs)), _std(diffs)
        how = f"paired by seed over {len(pairs)} seeds"
    else:
        few = [s for s in sides if len(s.points) < MIN_RUNS]
        if few:
            return result("inconclusive", "one seed never decides: " + "; ".join(
                f"{s.label} has {len(s.points)} usable run{'s' if len(s.points) != 1 else ''}" for s in few)
                + f", need at least {MIN_RUNS}")
        xs, ys = [x for _, x in left.points], [y for _, y in right.points]
        difference = float(np.mean(xs)) - (mult * float(np.mean(ys)) + shift)
        spread = _std(xs) + (abs(mult) * _std(ys) if len(ys) > 1 else 0.0)
        how = "unpaired"
    units = "log10 " if log else ""
    numbers = dict(difference=difference, spread=spread, pairs=len(pairs))
    if op == "≈":
        tol = number(check["tolerance"], "tolerance")
        if abs(difference) + spread <= tol:
            return result("holds", f"|{units}difference| {abs(difference):.3g} + spread {spread:.3g} <= "
                                   f"tolerance {tol:.3g}; {how}", **numbers)
        if abs(difference) - spread > tol:
            return result("fails", f"|{units}difference| {abs(difference):.3g} - spread {spread:.3g} > "
                                   f"tolerance {tol:.3g}; {how}", **numbers)
        return result("inconclusive", f"|{units}difference| {abs(difference):.3g} ± spread {spread:.3g} "
                                      f"straddles the tolerance {tol:.3g}; {how}", **numbers)
    if abs(difference) <= spread:
        return result("inconclusive", f"the {units}difference {abs(difference):.3g} is within the spread "
                                      f"over seeds {spread:.3g}; {how}", **numbers)
    if OPS[op](difference, 0.0):
        return result("holds", f"{units}difference {difference:.3g}, beyond the spread {spread:.3g}; {how}",
                      **numbers)
    return result("fails", f"{units}difference {difference:.3g} goes against '{op}' beyond the spread "
                           f"{spread:.3g}; {how}", **numbers)


# -- a claim -------------------------------------------------------------------------------------
def _one_line(error: str) -> str:
    lines = [ln.strip() for ln in error.strip().splitlines() if ln.strip()] or ["(empty error)"]
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]


def _excluded_line(r: RunRecord, variant_keys: list[str]) -> str:
    where = fmt_variant({k: r.params.get(k, "?") for k in variant_keys})
    if "seed" in r.params and "seed" not in variant_keys:
        where += f" seed={r.params['seed']}"
    if r.outcome == "diverged":
        what = "diverged" + (f" at step {r.diverged_step}" if r.diverged_step is not None else "")
    elif r.error:
        what = f"failed: {_one_line(r.error)}"
    else:
        what = f"{what_went_wrong(r)} (status {r.status}, outcome {r.outcome}, no error recorded)"
    return f"{where} run {r.run_id}: {what}"


def check_claim(claim: Mapping, records: list[RunRecord], variant_keys: list[str],
                scale: str = "full") -> ClaimResult:
    """``scale``: the study's scale; at ``quick`` a variant the sweep did not run is "not run at
    this scale" rather than missing."""
    validate_claim(claim)
    checks = [_check(c, records, scale) for c in claim["checks"]]
    statuses = {c.status for c in checks}
    status = ("not reproduced" if "fails" in statuses
              else "inconclusive" if "inconclusive" in statuses else "reproduced")
    excluded = [_excluded_line(r, variant_keys) for r in records if not clean(r)]
    return ClaimResult(status, claim["text"], checks, excluded)
