"""A finished run as the claim checker sees it, which runs count as data, and fetching them.

Plain records: the checker and the tables need no TensorFlow or MLflow, so a verdict can be
recomputed from exported runs and tested without either. Only :func:`fetch` talks to MLflow.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from zoo.studies.metrics import DIVERGED
from zoo.tracking.runs import client


@dataclass
class RunRecord:
    run_id: str
    params: dict[str, str]      # flattened resolved config, as MLflow stores it (strings)
    metrics: dict[str, float]   # final values
    status: str                 # MLflow status: FINISHED | FAILED | KILLED | RUNNING
    outcome: str                # finished | diverged | failed
    error: str | None = None
    diverged_step: int | None = None

    @property
    def seed(self) -> str | None:
        return self.params.get("seed")


def clean(r: RunRecord) -> bool:
    return r.status == "FINISHED" and r.outcome == "finished"


def what_went_wrong(r: RunRecord) -> str:
    if r.outcome == "diverged":
        return "diverged"
    if r.outcome == "failed" or r.status == "FAILED":
        return "failed"
    return r.status.lower()


def measured_at_init(metric: str) -> bool:
    """``summary/*_init`` numbers describe step 1: a later divergence does not undo them."""
    return metric.startswith("summary/") and metric.endswith("_init")


def usable(runs: list[RunRecord], metric: str) -> tuple[list[tuple[RunRecord, float]], Counter]:
    """The runs that are data for ``metric`` with their values, and why the others are not.

    A diverged run has no meaningful final accuracy, but it is exactly the data for
    ``diverged``, and its numbers from initialization still stand."""
    values, skipped = [], Counter()
    for r in runs:
        if metric == DIVERGED and (r.outcome == "diverged" or clean(r)):
            values.append((r, float(r.outcome == "diverged")))
        elif metric != DIVERGED and (clean(r) or (r.outcome == "diverged" and measured_at_init(metric))):
            v = r.metrics.get(metric)
            if v is not None and math.isfinite(float(v)):
                values.append((r, float(v)))
            else:
                skipped["metric missing" if v is None else "metric not finite"] += 1
        else:
            skipped[what_went_wrong(r)] += 1
    return values, skipped


def _canon(v) -> str:
    """YAML's null and the run params' "null" (flat_params) are the same unset value."""
    s = "null" if v is None else str(v).strip()
    low = s.lower()
    if low in ("none", "null"):
        return "null"
    return low if low in ("true", "false") else s


def same(a, b) -> bool:
    """MLflow gives "0.001" and "20" where YAML gave 1e-3 and 20; compare what they mean."""
    a, b = _canon(a), _canon(b)
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except ValueError:
        return a == b


def matches(params: Mapping, variant: Mapping) -> bool:
    return all(k in params and same(params[k], v) for k, v in variant.items())


MARKDOWN_SPECIAL = "\\`*_[]<>|~"


def md_escape(text, escape: bool = True) -> str:
    """``text`` as literal markdown (GitHub's, which MLflow's artifact viewer renders): every
    character that could start emphasis, a link, an HTML tag or a strike-through, or end a
    table cell, is backslash-escaped (``escape=False``: as is, for a terminal)."""
    if not escape:
        return str(text)
    return "".join("\\" + ch if ch in MARKDOWN_SPECIAL else ch for ch in str(text))


def fmt_variant(variant: Mapping) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in variant.items()) + "}"


def fetch(uri: str, run_ids: list[str]) -> list[RunRecord]:
    """Records of these MLflow runs: params, final metric values, status and outcome."""
    c, out = client(uri), []
    for run_id in run_ids:
        run = c.get_run(run_id)
        tags = run.data.tags
        outcome = tags.get("zoo.outcome") or ("failed" if run.info.status != "FINISHED" else "finished")
        step = tags.get("zoo.diverged_step")
        metrics = {k: v for k, v in run.data.metrics.items() if not math.isnan(v)}
        out.append(RunRecord(run_id=run_id, params=dict(run.data.params), metrics=metrics,
                             status=run.info.status, outcome=outcome, error=tags.get("zoo.error"),
                             diverged_step=int(step) if step else None))
    return out
