"""A study's summary table: one row per variant, seeds pooled, as markdown (to read) and csv.

Log-scale metrics (zoo.studies.metrics.LOG_SCALE: gradient norms and ratios) are pooled as
log10 values: the markdown shows their geometric mean ×/÷ the geometric std factor
(10^mean, 10^std of the log10 values) and says so in the column header; the csv gives the
log10 mean and std themselves (columns ``<metric>_log10_mean``, ``<metric>_log10_std``).
Other metrics show mean ± sample std. ``diverged`` shows the count, e.g. ``2/3``.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass

import numpy as np

from zoo.studies.metrics import DIVERGED, default_scale, to_scale
from zoo.studies.records import RunRecord, clean, usable

LOG_HEADER = "(geo. mean ×/÷ factor)"


@dataclass
class Row:
    variant: dict[str, str]
    n: int
    n_finished: int
    n_diverged: int
    n_failed: int               # everything else: failed, killed, or left RUNNING by a dead process
    stats: dict[str, tuple[float, float]]  # metric -> (mean, sample std) over usable runs, on the
    #                                        metric's scale (log10 values for log metrics); NaN if none
    counts: dict[str, int]      # metric -> number of usable runs


def summary_rows(records: list[RunRecord], variant_keys: list[str], metrics: list[str]) -> list[Row]:
    """One row per variant with seeds pooled, because a single seed says little about a gradient."""
    groups: dict[tuple[str, ...], list[RunRecord]] = {}
    for r in records:
        groups.setdefault(tuple(str(r.params.get(k, "")) for k in variant_keys), []).append(r)
    rows = []
    for key, runs in groups.items():
        stats, counts = {}, {}
        for m in metrics:
            found, _ = usable(runs, m)
            xs = [x for x in (to_scale(v, default_scale(m)) for _, v in found) if math.isfinite(x)]
            std = float(np.std(xs, ddof=1)) if len(xs) > 1 else math.nan
            stats[m], counts[m] = ((float(np.mean(xs)), std) if xs else (math.nan, math.nan)), len(xs)
        n_finished = sum(clean(r) for r in runs)
        n_diverged = sum(r.outcome == "diverged" for r in runs)
        rows.append(Row(dict(zip(variant_keys, key)), len(runs), n_finished, n_diverged,
                        len(runs) - n_finished - n_diverged, stats, counts))
    return rows


def _counts(row: Row) -> list[int]:
    return [row.n, row.n_finished, row.n_diverged, row.n_failed]


def _columns(metric: str) -> tuple[str, str]:
    prefix = f"{metric}_log10" if default_scale(metric) == "log" else metric
    return f"{prefix}_mean", f"{prefix}_std"


def to_csv(rows: list[Row], variant_keys: list[str], metrics: list[str]) -> str:
    """Full precision, empty cell for no data: the file is for further analysis, not for reading."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([*variant_keys, "n", "finished", "diverged", "failed", *(c for m in metrics for c in _columns(m))])
    for row in rows:
        numbers = [repr(x) if math.isfinite(x) else "" for m in metrics for x in row.stats[m]]
        w.writerow([*(row.variant[k] for k in variant_keys), *_counts(row), *numbers])
    return out.getvalue()


def cell(row: Row, metric: str) -> str:
    """How one number reads in the table (see the module docstring)."""
    mean, std = row.stats[metric]
    if not math.isfinite(mean):
        return "—"
    if metric == DIVERGED:
        return f"{round(mean * row.counts[metric])}/{row.counts[metric]}"
    if default_scale(metric) == "log":
        return f"{10 ** mean:.3g}" + (f" ×/÷ {10 ** std:.3g}" if math.isfinite(std) else "")
    return f"{mean:.3g}" + (f" ± {std:.3g}" if math.isfinite(std) else "")


def header(metric: str) -> str:
    return f"{metric} {LOG_HEADER}" if default_scale(metric) == "log" else metric


def to_markdown(rows: list[Row], variant_keys: list[str], metrics: list[str]) -> str:
    def esc(v) -> str:
        return str(v).replace("|", "\\|")

    head = [*variant_keys, "n", "finished", "diverged", "failed", *map(header, metrics)]
    lines = ["| " + " | ".join(map(esc, head)) + " |",
             "|" + "|".join(["---"] * len(variant_keys) + ["---:"] * (4 + len(metrics))) + "|"]
    for row in rows:
        cells = [*(row.variant[k] for k in variant_keys), *_counts(row), *(cell(row, m) for m in metrics)]
        lines.append("| " + " | ".join(map(esc, cells)) + " |")
    return "\n".join(lines) + "\n"
