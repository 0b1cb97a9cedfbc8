"""Judging a finished study: the claim's verdict, the summary table and the comparison plots,
logged on the sweep's parent run and printed to the terminal."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from zoo.monitor.stats import RunStats
from zoo.report import claims, study_plots
from zoo.study import from_section

log = logging.getLogger("zoo")


def _stats(c, run_id: str, folder: Path) -> RunStats | None:
    try:
        local = c.download_artifacts(run_id, "stats/gradient_stats.npz", str(folder))
        return RunStats.load(local)
    except Exception:  # a run that failed before training has no statistics
        return None


def judge_study(c, uri: str, parent: str, section, run_ids: list[str], sweep_dir: Path) -> claims.ClaimResult:
    from zoo.tracking.runs import records as fetch_records

    study = from_section(section)
    records = fetch_records(uri, run_ids)
    result = claims.check_claim(study.claim, records, study.variant_keys)
    rows = claims.summarize(records, study.variant_keys, study.metrics)
    table = claims.to_markdown(rows, study.variant_keys, study.metrics)
    report = (f"# {study.name} ({study.scale})\n\n{study.description}\n\n{table}\n\n"
              f"{result.summary()}\n")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "summary.md").write_text(report)
        (tmp / "summary.csv").write_text(claims.to_csv(rows, study.variant_keys, study.metrics))
        groups: dict[str, list[RunStats]] = {}
        for record in records:
            stats = _stats(c, record.run_id, tmp / record.run_id)
            if stats is not None:
                label = ", ".join(f"{k.split('.')[-1]}={record.params[k]}" for k in study.variant_keys
                                  if k in record.params)  # keys a variant lacks (an LSTM knob on a GRU) say nothing
                groups.setdefault(label, []).append(stats)
        title = f"{study.name}: {study.description}"
        draw = (study_plots.gradient_through_time_variants if study.plot == "time"
                else study_plots.gradient_flow_variants)
        plot_name = "gradient_through_time_variants.png" if study.plot == "time" else "gradient_flow_variants.png"
        if groups:
            draw(groups, tmp / plot_name, title)
        study_plots.final_metrics(rows, study.metrics, tmp / "final_metrics.png", title)
        for name in ("summary.md", "summary.csv"):
            c.log_artifact(parent, str(tmp / name), "summary")
        for name in (plot_name, "final_metrics.png"):
            if (tmp / name).exists():
                c.log_artifact(parent, str(tmp / name), "plots")
    (sweep_dir / "study_report.md").write_text(report)
    c.set_tag(parent, "zoo.claim_verdict", result.status)
    c.set_tag(parent, "zoo.claim", study.claim.get("text", "")[:5000])
    c.set_tag(parent, "zoo.claim_numbers", "\n".join(ch.text for ch in result.checks)[:5000])
    if result.failed_variants:
        c.set_tag(parent, "zoo.failed_variants", "\n".join(result.failed_variants)[:5000])
    print(f"\n{report}", flush=True)
    return result
