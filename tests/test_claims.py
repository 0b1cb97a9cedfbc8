"""Claims judged on synthetic run records (no training, no TensorFlow, no MLflow): log-scale and
paired comparisons, the three-way decision, equivalence, tables."""
import csv
import io
import math

import pytest

from zoo.studies.claims import check_claim, validate_claim
from zoo.studies.records import RunRecord
from zoo.studies.tables import summary_rows as summarize, to_csv, to_markdown

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
    # gradient norms: geometric means, compared in log10 and paired by seed
    assert grad.scale == "log" and grad.pairs == 2
    assert grad.lhs == pytest.approx(math.sqrt(3e-9 * 5e-9)) and grad.rhs == pytest.approx(1e-3 * math.sqrt(0.010 * 0.014))
    per_seed = [math.log10(3e-9 / 0.010) + 3, math.log10(5e-9 / 0.014) + 3]
    assert grad.difference == pytest.approx(sum(per_seed) / 2)
    assert grad.spread == pytest.approx(abs(per_seed[0] - per_seed[1]) / math.sqrt(2))  # sample std, ddof=1
    assert ("summary/grad_first_init [log10]: sigmoid,20 = 3.87e-09 ×/÷ 1.44 (n=2) < 0.001 × "
            "relu,20 = 0.0118 ×/÷ 1.27 (n=2): holds (log10 difference -3.49, beyond the spread 0.0535; "
            "paired by seed over 2 seeds)") == grad.text
    assert acc.scale == "linear" and acc.lhs == pytest.approx(0.92) and acc.rhs == 0.5
    assert "relu = 0.92 ± 0.0283 (n=2) > 0.5: holds" in acc.text  # sample std of 0.90, 0.94
    assert result.failed_variants == []
    assert result.summary().splitlines()[0] == "reproduced: sigmoid vanishes at depth 20"


def test_claim_that_fails_is_not_reproduced_with_the_numbers():
    wrong = dict(ACC_CHECK, variant={"model.activation": "sigmoid"})  # sigmoid at 0.12 is not > 0.5
    result = check_claim(claim(GRAD_CHECK, wrong), study(), KEYS)
    assert result.status == "not reproduced"
    assert result.checks[1].status == "fails"
    assert "sigmoid = 0.12 ± 0.0141 (n=2) > 0.5: fails (difference -0.38 goes against '>'" in result.checks[1].text
    assert "not reproduced" in result.summary() and "0.12 ± 0.0141" in result.summary()


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
    assert "diverged: null = 2/3 (1 failed excluded) > 1 = 0/2: holds" in result.checks[0].text
    assert result.failed_variants == ["{optimizer.clipnorm: null} seed=0 run cnull-0: diverged at step 3",
                                      "{optimizer.clipnorm: null} seed=1 run cnull-1: diverged at step 5",
                                      "{optimizer.clipnorm: null} seed=3 run cnull-3: failed: boom"]


@pytest.mark.parametrize("given, stored, same", [
    ("1e-3", "0.001", True), (0.001, "1e-3", True), (20, "20", True), ("20", "20.0", True),
    (True, "true", True), ("True", "TRUE", True), ("he_normal", "he_normal", True),
    (20, "21", False), ("1e-3", "0.01", False), (True, "false", False), ("relu", "Relu", False),
])
def test_param_values_match_by_meaning(given, stored, same):
    records = [RunRecord(f"r{seed}", {"optimizer.lr": stored, "seed": str(seed)}, {"final/val_accuracy": acc},
                         "FINISHED", "finished") for seed, acc in ((0, 0.9), (1, 0.92))]
    check = {"metric": "final/val_accuracy", "variant": {"optimizer.lr": given}, "op": ">", "value": 0.5}
    result = check_claim(claim(check), records, ["optimizer.lr"])
    assert result.status == ("reproduced" if same else "inconclusive")
    assert ("no run matches" in result.checks[0].text) != same


def test_numeric_strings_from_yaml_are_accepted_as_numbers():
    check = dict(GRAD_CHECK, factor="1e-3")  # YAML 1.1 reads 1e-3 without a dot as a string
    assert check_claim(claim(check), study(), KEYS).checks[0].rhs == pytest.approx(1e-3 * math.sqrt(0.010 * 0.014))


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
    assert deep.stats["final/val_accuracy"][0] == 0.5 and math.isnan(deep.stats["final/val_accuracy"][1])  # one run: no std
    assert deep.stats["diverged"] == pytest.approx((0.5, math.sqrt(0.5)))  # 1 of 2 counted runs, sample std
    assert rows[1].stats["final/val_accuracy"] == pytest.approx((0.92, 0.02 * math.sqrt(2)))
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
    assert float(relu20["final/val_accuracy_std"]) == pytest.approx(0.02 * math.sqrt(2))
    assert (deep["finished"], deep["diverged"], deep["failed"]) == ("1", "1", "1")
    assert deep["final/val_accuracy_std"] == ""  # one run has no sample std
    assert float(deep["diverged_mean"]) == 0.5
    assert tanh["final/val_accuracy_mean"] == tanh["final/val_accuracy_std"] == ""


def test_markdown_is_narrow_tables_with_three_significant_digits():
    """MLflow's artifact viewer gives a table's cells ~110 px and cuts what does not fit at the
    right: a runs table and one table per metric, at most three columns each."""
    rows = summarize(mixed_study() + [run("tanh", 5, 0, outcome="failed", status="FAILED")], KEYS, METRICS)
    text = to_markdown(rows, KEYS, METRICS)
    sections = text.split("\n\n")
    assert sections[0] == "## Runs"
    assert sections[1].splitlines() == [
        "| variant | runs: outcome |", "|---|---|",
        "| model.activation=sigmoid, model.depth=20 | 2: 2 finished |",
        "| model.activation=relu, model.depth=20 | 2: 2 finished |",
        "| model.activation=relu, model.depth=50 | 3: 1 finished, 1 diverged, 1 failed |",
        "| model.activation=tanh, model.depth=5 | 1: 1 failed |"]
    assert sections[2] == "## `final/val_accuracy`"
    assert sections[3].splitlines()[0] == "| variant | mean ± std | runs used |"
    assert sections[3].splitlines()[2:] == [
        "| model.activation=sigmoid, model.depth=20 | 0.12 ± 0.0141 | 2 |",
        "| model.activation=relu, model.depth=20 | 0.92 ± 0.0283 | 2 |",
        "| model.activation=relu, model.depth=50 | 0.5 | 1 |",
        "| model.activation=tanh, model.depth=5 | — | 0 |"]
    assert sections[4] == "## `diverged`"
    assert sections[5].splitlines()[0] == "| variant | diverged / runs counted | runs used |"
    assert sections[5].splitlines()[4] == "| model.activation=relu, model.depth=50 | 1/2 | 2 |"
    assert max(line.count(" | ") for line in text.splitlines() if line.startswith("|")) == 2


def test_markdown_escapes_what_would_be_formatting_and_the_claim_lists_each_check():
    rows = summarize([run("a|b", 20, 0, final__val_accuracy=0.5), run("_x_", 20, 0, final__val_accuracy=0.4)],
                     KEYS, ["final/val_accuracy"])
    text = to_markdown(rows, KEYS, ["final/val_accuracy"])
    assert "| model.activation=a\\|b, model.depth=20 |" in text and "model.activation=\\_x\\_" in text
    result = check_claim(claim(GRAD_CHECK, ACC_CHECK), study(), KEYS)
    lines = result.markdown().splitlines()
    assert lines[:3] == ["## Claim: reproduced", "", "> sigmoid vanishes at depth 20"]
    items = [line for line in lines if line.startswith("- ")]
    assert len(items) == 2 and items[0].startswith("- summary/grad\\_first\\_init \\[log10\\]: ")
    assert " \\< " in items[0]  # '<' escaped: never read as the start of an HTML tag
    assert result.markdown(escape=False).splitlines()[4].startswith("- summary/grad_first_init [log10]: ")


def test_a_difference_within_the_spread_over_seeds_is_not_evidence():
    """Both nets at chance (0.101 ± 0.0014 vs 0.1 ± 0): the means satisfy '>' but say nothing."""
    chance = [run("adam", 10, 0, final__val_accuracy=0.1), run("adam", 10, 1, final__val_accuracy=0.1028),
              run("sgd", 10, 0, final__val_accuracy=0.1), run("sgd", 10, 1, final__val_accuracy=0.1)]
    check = {"metric": "final/val_accuracy", "variant": {"model.activation": "adam"}, "op": ">",
             "than": {"model.activation": "sgd"}}
    result = check_claim(claim(check), chance, KEYS)
    assert result.status == "inconclusive"
    # paired by seed: differences 0 and 0.0028, mean 0.0014, sample std 0.00198
    assert ("inconclusive (the difference 0.0014 is within the spread over seeds 0.00198; "
            "paired by seed over 2 seeds)") in result.checks[0].text
    apart = chance[:2] + [run("sgd", 10, 0, final__val_accuracy=0.05), run("sgd", 10, 1, final__val_accuracy=0.06)]
    assert check_claim(claim(check), apart, KEYS).status == "reproduced"
    single = [chance[1], chance[2]]  # one seed a side never decides
    assert check_claim(claim(check), single, KEYS).status == "inconclusive"


def test_numbers_from_initialization_of_a_run_that_diverged_later_still_count():
    records = [run("relu", 150, 0, outcome="diverged", diverged_step=1183, summary__time_grad_ratio_init=0.74,
                   final__val_loss=float("nan")),
               run("tanh", 150, 0, summary__time_grad_ratio_init=4.6e-4, final__val_loss=0.177)]
    records += [run("relu", 150, 1, outcome="diverged", diverged_step=900, summary__time_grad_ratio_init=0.84,
                    final__val_loss=float("nan"))]
    at_init = {"metric": "summary/time_grad_ratio_init", "variant": {"model.activation": "relu"}, "op": ">", "value": 0.1}
    final = {"metric": "final/val_loss", "variant": {"model.activation": "relu"}, "op": "<", "value": 0.1}
    assert check_claim(claim(at_init), records, KEYS).status == "reproduced"
    result = check_claim(claim(final), records, KEYS)
    assert result.status == "inconclusive"
    assert "0 of 2 runs usable (2 diverged)" in result.checks[0].text


# -- the honest checker: log scale, pairing, three-way decisions, equivalence ---------------------
def grads(act, values, seeds=None, metric="summary/grad_first_init"):
    seeds = seeds if seeds is not None else range(len(values))
    return [run(act, 20, s, **{metric.replace("/", "__"): v}) for s, v in zip(seeds, values)]


def test_gradient_norms_are_compared_in_log10_not_by_their_arithmetic_mean():
    """One seed at 2e-3 and three at 1e-9: the arithmetic mean (5e-4) is that one seed; in log10
    the variant sits at ~1e-7.4, clearly below 1e-4."""
    records = grads("sigmoid", [2e-3, 1e-9, 1e-9, 1e-9])
    check = {"metric": "summary/grad_first_init", "variant": {"model.activation": "sigmoid"}, "op": "<", "value": 1e-4}
    logged = check_claim(claim(check), records, KEYS).checks[0]
    assert logged.scale == "log" and logged.status == "holds"
    logs = [math.log10(2e-3), -9, -9, -9]
    assert logged.difference == pytest.approx(sum(logs) / 4 + 4)
    assert logged.lhs == pytest.approx(10 ** (sum(logs) / 4))  # geometric mean
    linear = check_claim(claim(dict(check, scale="linear")), records, KEYS).checks[0]
    assert linear.scale == "linear" and linear.status == "inconclusive"
    assert linear.lhs == pytest.approx((2e-3 + 3e-9) / 4)


def test_exact_zeros_count_as_1e_45_and_a_factor_is_a_log_shift():
    records = grads("random_normal", [0.0, 0.0]) + grads("he_normal", [0.17, 0.18])
    check = {"metric": "summary/grad_first_init", "variant": {"model.activation": "random_normal"}, "op": "<",
             "factor": 1e-6, "than": {"model.activation": "he_normal"}}
    result = check_claim(claim(check), records, KEYS).checks[0]
    assert result.status == "holds" and result.lhs == pytest.approx(1e-45)
    expected = [-45 - math.log10(0.17) + 6, -45 - math.log10(0.18) + 6]
    assert result.difference == pytest.approx(sum(expected) / 2)


def test_sides_that_share_seeds_are_compared_paired_by_seed():
    """Seed-to-seed variation (0.5 … 0.9) swamps a steady 0.02 advantage unless the seeds pair."""
    a = [run("adam", 10, s, final__val_accuracy=v) for s, v in enumerate((0.50, 0.70, 0.90))]
    b = [run("sgd", 10, s, final__val_accuracy=v - 0.02) for s, v in enumerate((0.50, 0.70, 0.90))]
    check = {"metric": "final/val_accuracy", "variant": {"model.activation": "adam"}, "op": ">",
             "than": {"model.activation": "sgd"}}
    paired = check_claim(claim(check), a + b, KEYS).checks[0]
    assert paired.status == "holds" and paired.pairs == 3
    assert paired.difference == pytest.approx(0.02) and paired.spread == pytest.approx(0.0, abs=1e-12)
    assert "paired by seed over 3 seeds" in paired.text
    other_seeds = [run("sgd", 10, s + 3, final__val_accuracy=r.metrics["final/val_accuracy"]) for s, r in enumerate(b)]
    unpaired = check_claim(claim(check), a + other_seeds, KEYS).checks[0]
    assert unpaired.pairs == 0 and unpaired.status == "inconclusive"
    assert unpaired.spread == pytest.approx(0.2 + 0.2)  # std_lhs + std_rhs, ddof=1
    assert "within the spread over seeds 0.4; unpaired" in unpaired.text


def test_a_difference_within_the_spread_is_inconclusive_in_both_directions():
    check = {"metric": "final/val_accuracy", "variant": {"model.activation": "a"}, "op": ">",
             "than": {"model.activation": "b"}}
    below_within = [run("a", 1, 0, final__val_accuracy=0.1), run("a", 1, 1, final__val_accuracy=0.3),
                    run("b", 1, 0, final__val_accuracy=0.25), run("b", 1, 1, final__val_accuracy=0.25)]
    result = check_claim(claim(check), below_within, KEYS)  # means violate '>' but within the spread
    assert result.status == "inconclusive" and result.checks[0].status == "inconclusive"
    below_beyond = [run("a", 1, 0, final__val_accuracy=0.1), run("a", 1, 1, final__val_accuracy=0.12),
                    run("b", 1, 0, final__val_accuracy=0.5), run("b", 1, 1, final__val_accuracy=0.52)]
    result = check_claim(claim(check), below_beyond, KEYS)
    assert result.status == "not reproduced" and result.checks[0].status == "fails"
    assert "difference -0.4 goes against '>' beyond the spread 0" in result.checks[0].text


def test_one_seed_never_decides():
    records = [run("a", 1, 0, final__val_accuracy=0.9), run("b", 1, 0, final__val_accuracy=0.1),
               run("b", 1, 1, final__val_accuracy=0.1)]
    check = {"metric": "final/val_accuracy", "variant": {"model.activation": "a"}, "op": ">",
             "than": {"model.activation": "b"}}
    result = check_claim(claim(check), records, KEYS)
    assert result.status == "inconclusive"
    assert "inconclusive (one seed never decides: a has 1 usable run, need at least 2)" in result.checks[0].text
    constant = check_claim(claim(dict(ACC_CHECK, variant={"model.activation": "a"})), records, KEYS).checks[0]
    assert constant.status == "inconclusive" and "one seed never decides" in constant.text


@pytest.mark.parametrize("b_values, tolerance, status", [
    ((0.91, 0.91), 0.05, "holds"),          # |0| + 0.0141 <= 0.05
    ((0.50, 0.50), 0.05, "fails"),          # 0.41 - 0.0141 > 0.05
    ((0.91, 0.91), 0.01, "inconclusive"),   # 0 ± 0.0141 straddles 0.01
])
def test_equivalence_holds_fails_or_is_inconclusive(b_values, tolerance, status):
    records = [run("a", 1, 0, final__val_accuracy=0.90), run("a", 1, 1, final__val_accuracy=0.92),
               *(run("b", 1, s, final__val_accuracy=v) for s, v in enumerate(b_values))]
    check = {"metric": "final/val_accuracy", "variant": {"model.activation": "a"}, "op": "≈",
             "tolerance": tolerance, "than": {"model.activation": "b"}}
    result = check_claim(claim(check), records, KEYS)
    assert result.checks[0].status == status
    assert result.status == {"holds": "reproduced", "fails": "not reproduced"}.get(status, "inconclusive")
    assert f"≈ (within {tolerance:g})" in result.checks[0].text


def test_equivalence_tolerance_is_in_log10_units_for_gradient_norms():
    records = grads("a", [1e-3, 1e-3]) + grads("b", [2e-3, 2e-3])  # a factor 2 apart: 0.301 in log10
    check = {"metric": "summary/grad_first_init", "variant": {"model.activation": "a"}, "op": "≈",
             "than": {"model.activation": "b"}}
    assert check_claim(claim(dict(check, tolerance=0.5)), records, KEYS).checks[0].status == "holds"
    assert check_claim(claim(dict(check, tolerance=0.2)), records, KEYS).checks[0].status == "fails"


def test_divergence_checks_state_counts():
    records = ([clip_run("null", s, outcome="diverged", diverged_step=2) for s in range(3)]
               + [clip_run("1.0", s) for s in range(3)])
    check = {"metric": "diverged", "variant": {"optimizer.clipnorm": "null"}, "op": ">",
             "than": {"optimizer.clipnorm": 1.0}}
    result = check_claim(claim(check), records, ["optimizer.clipnorm"])
    assert result.status == "reproduced"
    assert result.checks[0].text.startswith("diverged: null = 3/3 > 1.0 = 0/3: holds")


def test_at_quick_scale_a_variant_the_sweep_did_not_run_is_not_run_at_this_scale():
    missing = dict(ACC_CHECK, variant={"model.activation": "tanh"})
    quick = check_claim(claim(missing), study(), KEYS, scale="quick").checks[0]
    assert quick.status == "inconclusive" and "inconclusive (not run at this scale: variant" in quick.text
    full = check_claim(claim(missing), study(), KEYS, scale="full").checks[0]
    assert "not run at this scale" not in full.text and "no run matches" in full.text


@pytest.mark.parametrize("bad, message", [
    (claim(dict(ACC_CHECK, metric="final/val_acc")), "claim check 0: unknown metric 'final/val_acc'; did you mean final/val_accuracy"),
    (claim(dict(ACC_CHECK, metric="saturated/block01_act")), "claim check 0: unknown metric 'saturated/block01_act'"),
    (claim(dict(ACC_CHECK, op="≈")), "claim check 0: op '≈' needs 'tolerance'"),
    (claim(dict(ACC_CHECK, tolerance=0.1)), "claim check 0: 'tolerance' applies to op '≈' only"),
    (claim(dict(ACC_CHECK, op="≈", tolerance=0)), "claim check 0: 'tolerance' must be > 0"),
    (claim(dict(GRAD_CHECK, factor=-1)), "claim check 0: 'factor' must be > 0 on log scale"),
    (claim(dict(ACC_CHECK, scale="ln")), "claim check 0: unknown scale 'ln'"),
])
def test_checks_are_validated_before_training(bad, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_claim(bad)
    validate_claim(claim(dict(GRAD_CHECK, factor=-1, scale="linear")))  # a negative factor is fine in linear


def test_log_scale_metrics_show_geometric_means_and_say_so():
    rows = summarize(study(), KEYS, ["summary/grad_first_init", "final/val_accuracy"])
    lines = to_markdown(rows, KEYS, ["summary/grad_first_init", "final/val_accuracy"]).splitlines()
    head = lines.index("## `summary/grad_first_init`")
    assert lines[head + 2] == "| variant | geometric mean ×/÷ factor | runs used |"
    assert lines[head + 4] == "| model.activation=sigmoid, model.depth=20 | 3.87e-09 ×/÷ 1.44 | 2 |"
    table = list(csv.DictReader(io.StringIO(to_csv(rows, KEYS, ["summary/grad_first_init"]))))
    assert float(table[0]["summary/grad_first_init_log10_mean"]) == pytest.approx(math.log10(math.sqrt(15e-18)))
