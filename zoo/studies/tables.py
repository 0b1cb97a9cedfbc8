"""A study's summary table: one row per variant, seeds pooled, as markdown (to read: a runs
table and one narrow table per metric, which MLflow's artifact viewer shows whole) and csv.

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
from zoo.studies.records import RunRecord, clean, md_escape, usable

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


def variant_label(variant: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in variant.items())


def runs_cell(row: Row) -> str:
    """``3: 1 finished, 1 diverged, 1 failed`` (kinds with no run left out)."""
    kinds = [(row.n_finished, "finished"), (row.n_diverged, "diverged"), (row.n_failed, "failed")]
    return f"{row.n}: " + ", ".join(f"{k} {what}" for k, what in kinds if k)


def value_header(metric: str) -> str:
    if metric == DIVERGED:
        return "diverged / runs counted"
    return "geometric mean ×/÷ factor" if default_scale(metric) == "log" else "mean ± std"


def _table(head: list[str], rows: list[list[str]], align: list[str], escape: bool) -> list[str]:
    def line(cells):
        return "| " + " | ".join(md_escape(c, escape).replace("\n", " ") for c in cells) + " |"

    return [line(head), "|" + "|".join(align) + "|", *map(line, rows)]


def to_markdown(rows: list[Row], variant_keys: list[str], metrics: list[str], escape: bool = True) -> str:
    """The table as narrow markdown tables MLflow's artifact viewer shows whole (its cells are
    ~110 px wide and a wider table is cut at the right): the runs of each variant, then one
    table per metric (variant | value | runs used), its full name in a heading above it.
    Every cell is markdown-escaped (``escape=False``: as is, for a terminal)."""
    labels = [variant_label(r.variant) for r in rows]
    out = ["## Runs", "", *_table(["variant", "runs: outcome"], [[lab, runs_cell(r)] for lab, r in zip(labels, rows)],
                                  ["---", "---"], escape)]
    for metric in metrics:
        out += ["", f"## `{metric}`", ""]
        out += _table(["variant", value_header(metric), "runs used"],
                      [[lab, cell(r, metric), str(r.counts[metric])] for lab, r in zip(labels, rows)],
                      ["---", "---:", "---:"], escape)
    return "\n".join(out) + "\n"
