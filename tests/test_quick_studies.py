"""Each kind of study end to end at its quick scale, through zoo-ablate: the parent run, its
children, the verdict, the summary and plots. A file of its own so that the two test workers
(``--dist loadfile``) share the longest tests."""
import pytest

from conftest import runs_of
from test_ablations import run_cli
from zoo.studies.jobs import job_count
from zoo.studies.load import load_study
from zoo.studies.records import md_escape

# ln_position's quick run (two depth-12 Transformers, 92 s, the suite's slowest test) is left to
# test_transformer (the model trained end to end) and test_ablations (its quick scale composed
# and validated): the suite must stay under 25 minutes on 2 cores
QUICK_E2E = ["input_scaling", "pretraining", "gated_cells", "residual_scale", "edge_of_stability"]


@pytest.mark.slow
@pytest.mark.parametrize("name", QUICK_E2E)
def test_quick_study_runs_end_to_end(name, tmp_path):
    out = run_cli(["zoo.cli.ablate", name, "--scale", "quick"], tmp_path)
    client, parents, children = runs_of(tmp_path)
    assert len(parents) == 1
    parent = parents[0]
    tags = parent.data.tags
    assert parent.info.status == "FINISHED" and tags["zoo.study"] == name and tags["zoo.scale"] == "quick"
    assert tags["zoo.claim_verdict"] == "inconclusive"  # quick runs one seed, and one seed never decides
    assert parent.info.run_name == f"inconclusive · {name}"  # what the runs table shows first
    description = tags["mlflow.note.content"]  # what its page shows first: verdict, checks, claim, table
    assert description.startswith(f"**claim inconclusive** · {name} (quick): ")
    assert all(f"- {md_escape(line)}" in description for line in tags["zoo.claim_numbers"].splitlines())
    assert len(children) == job_count(name, load_study(name).overrides("quick"))
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        if child.data.tags["zoo.outcome"] == "diverged":  # residual_scale's unnormalized He-init net, at step 2
            assert name == "residual_scale" and child.data.params["model.norm"] == "none"
            assert "summary/grad_first_init" in child.data.metrics  # step 1 is still recorded
        else:
            assert child.data.tags["zoo.outcome"] == "finished" and "final/val_loss" in child.data.metrics
        assert "study.name" not in child.data.params  # the study lives on the parent
    artifacts = {a.path for d in ("summary", "plots") for a in client.list_artifacts(parent.info.run_id, d)}
    plot = "plots/gradient_through_time_variants.png" if name == "gated_cells" else "plots/gradient_flow_variants.png"
    assert {"summary/summary.md", "summary/summary.csv", "plots/final_metrics.png", plot} <= artifacts
    study = load_study(name)
    assert f"# {name} (quick)" in out.stdout
    assert "## Claim: inconclusive" in out.stdout  # the verdict
    assert f"> {study.claim['text'].split()[0]}" in out.stdout
    assert "one seed never decides" in out.stdout or "not run at this scale" in out.stdout
    assert f"- {tags['zoo.claim_numbers'].splitlines()[0]}" in out.stdout  # each check a list item
    for metric in study.metrics:
        assert f"## `{metric}`" in out.stdout  # a table per metric
    for child in children:  # a row per variant in the runs table (1 run, finished or diverged)
        variant = ", ".join(f"{k}={child.data.params.get(k, '')}" for k in study.variant_keys)
        assert f"| {variant} | 1: 1 {child.data.tags['zoo.outcome']} |" in out.stdout, variant
