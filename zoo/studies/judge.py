"""Judging a finished study: fetch its runs' records, check the claim, tabulate, draw, and log
it all on the sweep's parent run (tags ``zoo.claim_verdict``, ``zoo.claim``,
``zoo.claim_numbers``, ``zoo.failed_variants``); the report is printed to the terminal too, and is
the parent's description (what its page shows first), and the claim's verdict goes in front of
the parent's name (what the runs table shows: zoo.tracking.names)."""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from zoo.records.stats import RunStats
from zoo.studies import claims, plots, records, tables
from zoo.studies.load import from_section
from zoo.tracking.names import judged

log = logging.getLogger("zoo")
MAX_DESCRIPTION = 8000  # MLflow's longest tag value (MAX_TAG_VAL_LENGTH): the description is a tag


def _stats(c, run_id: str, folder: Path) -> RunStats | None:
    try:
        local = c.download_artifacts(run_id, "stats/gradient_stats.npz", str(folder))
        return RunStats.load(local)
    except Exception:  # a run that failed before training has no statistics
        return None


def _report(study, rows, result: claims.ClaimResult, escape: bool = True) -> str:
    """summary.md: the study, the claim's verdict with one list item per check, then the tables."""
    table = tables.to_markdown(rows, study.variant_keys, study.metrics, escape)
    return (f"# {study.name} ({study.scale})\n\n{records.md_escape(study.description, escape)}\n\n"
            f"{result.markdown(escape)}\n{table}")


def description(study, result: claims.ClaimResult, table: str) -> str:
    """The parent's description (markdown): the claim's verdict and the study, each check on a
    line of its own (what the run's page shows before "Show more"), then the claim, the runs left
    out and the table."""
    esc = records.md_escape  # a check's "< False = ..." would open an HTML tag the UI drops
    lines = [f"**claim {result.status}** · {study.name} ({study.scale}): {esc(study.description)}", "",
             *(f"- {esc(check.text)}" for check in result.checks), "", f"> {esc(result.text)}"]
    if result.failed_variants:
        lines += ["", f"excluded runs ({len(result.failed_variants)}):", *(f"- {esc(v)}" for v in result.failed_variants)]
    return "\n".join([*lines, "", table])[:MAX_DESCRIPTION]


def judge_study(c, uri: str, parent: str, section, run_ids: list[str], sweep_dir: Path) -> claims.ClaimResult:
    study = from_section(section)
    found = records.fetch(uri, run_ids)
    result = claims.check_claim(study.claim, found, study.variant_keys, study.scale)
    rows = tables.summary_rows(found, study.variant_keys, study.metrics)
    report = _report(study, rows, result)
    draw, plot_name = plots.PLOTS[study.plot]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "summary.md").write_text(report)
        (tmp / "summary.csv").write_text(tables.to_csv(rows, study.variant_keys, study.metrics))
        groups: dict[str, list[RunStats]] = {}
        for record in found:
            stats = _stats(c, record.run_id, tmp / record.run_id)
            if stats is not None:
                label = ", ".join(f"{k.split('.')[-1]}={record.params[k]}" for k in study.variant_keys
                                  if k in record.params)  # keys a variant lacks (an LSTM knob on a GRU) say nothing
                groups.setdefault(label, []).append(stats)
        title = f"{study.name}: {study.description}"
        if groups:
            draw(groups, tmp / plot_name, title)
        plots.final_metrics(rows, study.metrics, tmp / "final_metrics.png", title)
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
    table = tables.to_markdown(rows, study.variant_keys, study.metrics)
    c.set_tag(parent, "mlflow.note.content", description(study, result, table))
    c.set_tag(parent, "mlflow.runName", judged(c.get_run(parent).info.run_name, result.status))
    print(f"\n{_report(study, rows, result, escape=False)}", flush=True)
    return result
