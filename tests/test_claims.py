"""Claims judged on synthetic run records (no training, no TensorFlow, no MLflow)."""
import csv
import io
import math

import pytest

from zoo.report.claims import (
    RunRecord, check_claim, summarize, to_csv, to_markdown, validate_claim,
)

KEYS = ["model.activation", "model.depth"]
_ids = iter(range(10_000))


def run(act, depth, seed, outcome="finished", status="FINISHED", error=None, diverged_step=None, **metrics):
    metrics = {k.replace("__", "/"): v for k, v in metrics.items()}
    return RunRecord(f"r{next(_ids)}", {"model.activation": act, "model.depth": str(depth), "seed": str(seed)},
                     metrics, status, outcome, error, diverged_step)


def study():
    """sigmoid starves the first layer; relu passes its gradient; two seeds each."""
    return [
        run("sigmoid", 20, 0, summary__grad_first_init=3e-9, final__val_accuracy=0.11),
        run("sigmoid", 20, 1, summary__grad_first_init=5e-9, final__val_accuracy=0.13),
        run("relu", 20, 0, summary__grad_first_init=0.010, final__val_accuracy=0.90),
        run("relu", 20, 1, summary__grad_first_init=0.014, final__val_accuracy=0.94),
    ]


GRAD_CHECK = {"metric": "summary/grad_first_init", "variant": {"model.activation": "sigmoid", "model.depth": 20},
              "op": "<", "factor": 1e-3, "than": {"model.activation": "relu", "model.depth": 20}}
ACC_CHECK = {"metric": "final/val_accuracy", "variant": {"model.activation": "relu"}, "op": ">", "value": 0.5}


def claim(*checks):
    return {"text": "sigmoid vanishes at depth 20", "checks": list(checks)}


def test_claim_that_holds_is_reproduced_with_mean_and_std_over_seeds():
    result = check_claim(claim(GRAD_CHECK, ACC_CHECK), study(), KEYS)
    assert result.status == "reproduced"
    grad, acc = result.checks
    assert grad.status == acc.status == "holds"
    assert grad.lhs == pytest.approx(4e-9) and grad.rhs == pytest.approx(1e-3 * 0.012)
    assert "sigmoid,20 = 4e-09 ± 1e-09 (n=2) < 0.001 × relu,20 = 0.012 ± 0.002 (n=2): holds" in grad.text
    assert acc.lhs == pytest.approx(0.92) and acc.rhs == 0.5
    assert "relu = 0.92 ± 0.02 (n=2) > 0.5: holds" in acc.text
    assert result.failed_variants == []
    assert result.summary().splitlines()[0] == "reproduced: sigmoid vanishes at depth 20"


def test_claim_that_fails_is_not_reproduced_with_the_numbers():
    wrong = dict(ACC_CHECK, variant={"model.activation": "sigmoid"})  # sigmoid at 0.12 is not > 0.5
    result = check_claim(claim(GRAD_CHECK, wrong), study(), KEYS)
    assert result.status == "not reproduced"
    assert result.checks[1].status == "fails"
    assert "sigmoid = 0.12 ± 0.01 (n=2) > 0.5: fails" in result.checks[1].text
    assert "not reproduced" in result.summary() and "0.12 ± 0.01" in result.summary()


def test_a_failing_check_outweighs_an_inconclusive_one():
    wrong = dict(ACC_CHECK, variant={"model.activation": "sigmoid"})
    missing = dict(ACC_CHECK, variant={"model.activation": "tanh"})
    assert check_claim(claim(missing, wrong), study(), KEYS).status == "not reproduced"


def test_missing_variant_is_inconclusive_and_says_so():
    missing = dict(ACC_CHECK, variant={"model.activation": "tanh"})
    result = check_claim(claim(GRAD_CHECK, missing), study(), KEYS)
    assert result.status == "inconclusive"
    check = result.checks[1]
    assert check.status == "inconclusive" and check.lhs is None
    assert "variant {model.activation: tanh}: no run matches" in check.text


def test_all_diverged_variant_is_inconclusive_with_counts_and_listed():
    records = study() + [run("relu", 50, s, outcome="diverged", diverged_step=40 + s) for s in (0, 1)]
    deep = dict(ACC_CHECK, variant={"model.activation": "relu", "model.depth": "50"})
    result = check_claim(claim(deep), records, KEYS)
    assert result.status == "inconclusive"
    reason = "variant {model.activation: relu, model.depth: 50}: 0 of 2 runs usable (2 diverged)"
    assert reason in result.checks[0].text
    assert result.failed_variants == [
        f"{{model.activation: relu, model.depth: 50}} seed=0 run {records[4].run_id}: diverged at step 40",
        f"{{model.activation: relu, model.depth: 50}} seed=1 run {records[5].run_id}: diverged at step 41",
    ]
    assert "diverged at step 41" in result.summary()


def test_failed_runs_are_excluded_from_the_mean_and_listed():
    records = study() + [run("relu", 20, 2, outcome="failed", status="FAILED",
                             error="Traceback (most recent call last):\n  ...\nResourceExhaustedError: OOM")]
    result = check_claim(claim(ACC_CHECK), records, KEYS)
    assert result.status == "reproduced"
    assert result.checks[0].lhs == pytest.approx(0.92)
    assert "(n=2; 1 failed excluded)" in result.checks[0].text
    assert result.failed_variants == [f"{{model.activation: relu, model.depth: 20}} seed=2 "
                                      f"run {records[4].run_id}: failed: ResourceExhaustedError: OOM"]


def test_missing_or_nonfinite_metric_is_not_usable():
    records = [run("relu", 20, 0), run("relu", 20, 1, final__val_accuracy=math.nan)]
    result = check_claim(claim(ACC_CHECK), records, KEYS)
    assert result.status == "inconclusive"
    assert "0 of 2 runs usable (1 metric missing, 1 metric not finite)" in result.checks[0].text


def clip_run(clipnorm, seed, outcome="finished", status="FINISHED", **kw):
    return RunRecord(f"c{clipnorm}-{seed}", {"optimizer.clipnorm": clipnorm, "seed": str(seed)},
                     {"final/val_accuracy": 0.8}, status, outcome, **kw)


def test_diverged_metric_counts_diverged_runs_as_data():
    records = [clip_run("null", 0, outcome="diverged", diverged_step=3),
               clip_run("null", 1, outcome="diverged", diverged_step=5),
               clip_run("null", 2),
               clip_run("null", 3, outcome="failed", status="FAILED", error="boom"),
               clip_run("1.0", 0), clip_run("1.0", 1)]
    check = {"metric": "diverged", "variant": {"optimizer.clipnorm": "null"}, "op": ">",
             "than": {"optimizer.clipnorm": 1}}
    result = check_claim(claim(check), records, ["optimizer.clipnorm"])
    assert result.status == "reproduced"
    assert result.checks[0].lhs == pytest.approx(2 / 3) and result.checks[0].rhs == 0.0
    assert "(n=3; 1 failed excluded)" in result.checks[0].text
    assert result.failed_variants == ["{optimizer.clipnorm: null} seed=0 run cnull-0: diverged at step 3",
                                      "{optimizer.clipnorm: null} seed=1 run cnull-1: diverged at step 5",
                                      "{optimizer.clipnorm: null} seed=3 run cnull-3: failed: boom"]


@pytest.mark.parametrize("given, stored, same", [
    ("1e-3", "0.001", True), (0.001, "1e-3", True), (20, "20", True), ("20", "20.0", True),
    (True, "true", True), ("True", "TRUE", True), ("he_normal", "he_normal", True),
    (20, "21", False), ("1e-3", "0.01", False), (True, "false", False), ("relu", "Relu", False),
])
def test_param_values_match_by_meaning(given, stored, same):
    records = [RunRecord("r", {"optimizer.lr": stored}, {"final/val_accuracy": 0.9}, "FINISHED", "finished")]
    check = {"metric": "final/val_accuracy", "variant": {"optimizer.lr": given}, "op": ">", "value": 0.5}
    assert check_claim(claim(check), records, ["optimizer.lr"]).status == ("reproduced" if same else "inconclusive")


def test_numeric_strings_from_yaml_are_accepted_as_numbers():
    check = dict(GRAD_CHECK, factor="1e-3")  # YAML 1.1 reads 1e-3 without a dot as a string
    assert check_claim(claim(check), study(), KEYS).checks[0].rhs == pytest.approx(1.2e-5)


@pytest.mark.parametrize("bad, message", [
    ({"text": "x", "checks": []}, "non-empty 'checks'"),
    ({"checks": [ACC_CHECK]}, "needs a 'text'"),
    (claim(ACC_CHECK, dict(ACC_CHECK, op="<<")), "claim check 1: unknown op '<<'"),
    (claim(dict(ACC_CHECK, than={"model.activation": "relu"})), "claim check 0: give exactly one of"),
    (claim({k: v for k, v in ACC_CHECK.items() if k != "value"}), "claim check 0: give exactly one of"),
    (claim({k: v for k, v in ACC_CHECK.items() if k != "metric"}), "claim check 0: needs 'metric'"),
    (claim({k: v for k, v in ACC_CHECK.items() if k != "variant"}), "claim check 0: needs 'variant'"),
    (claim(dict(ACC_CHECK, value="high")), "claim check 0: 'value' must be a number"),
    (claim(dict(ACC_CHECK, factr=2)), "claim check 0: unknown key(s) factr"),
])
def test_malformed_claims_raise_naming_the_check(bad, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_claim(bad)
    with pytest.raises(ValueError):
        check_claim(bad, study(), KEYS)


def mixed_study():
    return study() + [run("relu", 50, 0, outcome="diverged", diverged_step=7),
                      run("relu", 50, 1, final__val_accuracy=0.5, summary__grad_first_init=1.0),
                      run("relu", 50, 2, outcome="failed", status="FAILED", error="boom")]


METRICS = ["final/val_accuracy", "diverged"]


def test_summarize_pools_seeds_in_first_appearance_order():
    rows = summarize(mixed_study(), KEYS, METRICS)
    assert [r.variant for r in rows] == [{"model.activation": a, "model.depth": d}
                                         for a, d in (("sigmoid", "20"), ("relu", "20"), ("relu", "50"))]
    deep = rows[2]
    assert (deep.n, deep.n_finished, deep.n_diverged, deep.n_failed) == (3, 1, 1, 1)
    assert deep.stats["final/val_accuracy"] == (0.5, 0.0)
    assert deep.stats["diverged"] == (0.5, 0.5)
    assert rows[1].stats["final/val_accuracy"] == pytest.approx((0.92, 0.02))
    empty = summarize([run("tanh", 5, 0, outcome="failed", status="FAILED")], KEYS, METRICS)[0]
    assert all(math.isnan(x) for x in empty.stats["final/val_accuracy"])


def test_csv_parses_back_to_the_numbers():
    rows = summarize(mixed_study() + [run("tanh", 5, 0, outcome="failed", status="FAILED")], KEYS, METRICS)
    table = list(csv.DictReader(io.StringIO(to_csv(rows, KEYS, METRICS))))
    assert list(table[0]) == [*KEYS, "n", "finished", "diverged", "failed", "final/val_accuracy_mean",
                              "final/val_accuracy_std", "diverged_mean", "diverged_std"]
    relu20, deep, tanh = table[1], table[2], table[3]
    assert (relu20["model.activation"], relu20["model.depth"], relu20["n"]) == ("relu", "20", "2")
    assert float(relu20["final/val_accuracy_mean"]) == pytest.approx(0.92)
    assert float(relu20["final/val_accuracy_std"]) == pytest.approx(0.02)
    assert (deep["finished"], deep["diverged"], deep["failed"]) == ("1", "1", "1")
    assert float(deep["diverged_mean"]) == 0.5
    assert tanh["final/val_accuracy_mean"] == tanh["final/val_accuracy_std"] == ""


def test_markdown_is_a_table_with_three_significant_digits():
    rows = summarize(mixed_study() + [run("tanh", 5, 0, outcome="failed", status="FAILED")], KEYS, METRICS)
    lines = to_markdown(rows, KEYS, METRICS).splitlines()
    assert lines[0] == ("| model.activation | model.depth | n | finished | diverged | failed "
                        "| final/val_accuracy | diverged |")
    assert lines[1] == "|---|---|---:|---:|---:|---:|---:|---:|"
    assert lines[2] == "| sigmoid | 20 | 2 | 2 | 0 | 0 | 0.12 ± 0.01 | 0 ± 0 |"
    assert lines[4] == "| relu | 50 | 3 | 1 | 1 | 1 | 0.5 ± 0 | 0.5 ± 0.5 |"
    assert lines[5] == "| tanh | 5 | 1 | 0 | 0 | 1 | — | — |"
    assert len(lines) == 6


def test_a_difference_within_the_spread_over_seeds_is_not_evidence():
    """Both nets at chance (0.101 ± 0.0014 vs 0.1 ± 0): the means satisfy '>' but say nothing."""
    chance = [run("adam", 10, 0, final__val_accuracy=0.1), run("adam", 10, 1, final__val_accuracy=0.1028),
              run("sgd", 10, 0, final__val_accuracy=0.1), run("sgd", 10, 1, final__val_accuracy=0.1)]
    check = {"metric": "final/val_accuracy", "variant": {"model.activation": "adam"}, "op": ">",
             "than": {"model.activation": "sgd"}}
    result = check_claim(claim(check), chance, KEYS)
    assert result.status == "inconclusive"
    assert "inconclusive (the difference 0.0014 is within the spread over seeds 0.0014)" in result.checks[0].text
    apart = chance[:2] + [run("sgd", 10, 0, final__val_accuracy=0.05), run("sgd", 10, 1, final__val_accuracy=0.06)]
    assert check_claim(claim(check), apart, KEYS).status == "reproduced"
    single = [chance[1], chance[2]]  # one seed a side: no spread to go by, the means decide
    assert check_claim(claim(check), single, KEYS).status == "reproduced"


def test_numbers_from_initialization_of_a_run_that_diverged_later_still_count():
    records = [run("relu", 150, 0, outcome="diverged", diverged_step=1183, summary__time_grad_ratio_init=0.74,
                   final__val_loss=float("nan")),
               run("tanh", 150, 0, summary__time_grad_ratio_init=4.6e-4, final__val_loss=0.177)]
    at_init = {"metric": "summary/time_grad_ratio_init", "variant": {"model.activation": "relu"}, "op": ">", "value": 0.1}
    final = {"metric": "final/val_loss", "variant": {"model.activation": "relu"}, "op": "<", "value": 0.1}
    assert check_claim(claim(at_init), records, KEYS).status == "reproduced"
    assert check_claim(claim(final), records, KEYS).status == "inconclusive"
