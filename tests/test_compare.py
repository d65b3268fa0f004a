"""Paired comparison of runs: DeLong's and McNemar's tests against reference values, pairing."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from core.analysis import compare, reports

# R pROC's aSAH data (113 patients with subarachnoid haemorrhage, 41 with a poor outcome),
# rebuilt from the DeLong placements pROC's own tests store for it
# (tests/testthat/helper-deLongPlacementsCpp-expected.R in github.com/xrobin/pROC): each
# case's placement among the controls times 144 (twice the 72 controls), each control's
# midrank among the controls likewise. DeLong's test only sees ranks and ties, and these
# integers keep both exactly as in the data; patients stay in the data set's order.
ASAH_CASES = {
    "wfns": [117, 94, 128, 140, 140, 140, 140, 94, 140, 94, 37, 94, 140, 128, 128, 94, 140, 140,
             140, 94, 140, 94, 140, 94, 128, 140, 128, 128, 37, 128, 128, 94, 94, 140, 140, 94,
             94, 140, 140, 140, 140],
    "s100b": [81, 63, 103, 78, 130, 144, 140, 26, 123, 50, 26, 128, 126, 139, 144, 118, 144,
              144, 144, 26, 144, 120, 0, 50, 116, 144, 118, 144, 38, 118, 81, 63, 74, 116, 144,
              88, 144, 121, 144, 144, 130],
    "ndka": [116, 90, 98, 110, 6, 40, 74, 134, 140, 134, 134, 58, 104, 124, 24, 36, 102, 2, 144,
             124, 62, 74, 80, 102, 128, 93, 124, 36, 142, 109, 6, 49, 124, 6, 48, 134, 76, 104,
             138, 74, 110],
}  # fmt: skip
ASAH_CONTROLS = {
    "wfns": [37, 37, 37, 37, 140, 37, 94, 94, 37, 94, 94, 37, 37, 37, 94, 37, 94, 37, 37, 117,
             128, 37, 128, 37, 140, 140, 37, 37, 94, 128, 37, 37, 94, 94, 37, 94, 37, 94, 94, 37,
             37, 37, 37, 94, 37, 94, 37, 37, 117, 94, 128, 94, 37, 128, 37, 37, 140, 128, 94, 94,
             37, 37, 37, 117, 37, 94, 94, 128, 128, 37, 37, 37],
    "s100b": [81, 88, 63, 10, 134, 111, 63, 63, 10, 38, 10, 50, 74, 26, 111, 26, 74, 81, 111, 10,
              103, 88, 125, 50, 142, 134, 103, 26, 129, 134, 74, 38, 50, 38, 10, 81, 63, 88, 96,
              10, 10, 50, 10, 50, 38, 103, 50, 38, 123, 74, 119, 26, 63, 121, 26, 10, 117, 127,
              63, 96, 38, 88, 63, 26, 10, 111, 96, 134, 111, 96, 142, 139],
    "ndka": [1, 38, 30, 68, 15, 109, 15, 120, 100, 120, 113, 139, 44, 15, 85, 15, 15, 143, 91, 54,
             54, 120, 4, 30, 15, 49, 96, 30, 106, 136, 30, 15, 85, 44, 30, 96, 131, 126, 60, 78,
             141, 15, 113, 54, 68, 68, 106, 4, 113, 85, 44, 68, 120, 68, 78, 30, 54, 68, 131, 38,
             85, 93, 136, 75, 85, 44, 131, 60, 103, 126, 15, 100],
}  # fmt: skip
ASAH_LABELS = np.array([1] * 41 + [0] * 72)
# AUCs from the same helper file (theta); Z and p from pROC's tests/testthat/test-roc.test.R,
# roc.test(r.first, r.second) with its defaults: DeLong, paired, two-sided.
ASAH_AUC = {"wfns": 0.823678861788618, "s100b": 0.731368563685637, "ndka": 0.611957994579946}
PROC_ROC_TEST = [
    ("wfns", "s100b", 2.20898359144091, 0.0271757822291882),
    ("wfns", "ndka", 2.79777591868904, 0.00514557970691098),
    ("ndka", "s100b", -1.39077002573558, 0.164295175223054),
]


def asah_scores(marker: str) -> np.ndarray:
    return np.array(ASAH_CASES[marker] + ASAH_CONTROLS[marker]) / 144


@pytest.mark.parametrize(("first", "second", "z", "p_value"), PROC_ROC_TEST)
def test_delong_matches_proc_roc_test_on_asah(first, second, z, p_value):
    result = compare.delong_test(ASAH_LABELS, asah_scores(first), asah_scores(second))
    assert result.auc_a == pytest.approx(ASAH_AUC[first], abs=1e-12)
    assert result.auc_b == pytest.approx(ASAH_AUC[second], abs=1e-12)
    assert result.difference == pytest.approx(ASAH_AUC[first] - ASAH_AUC[second], abs=1e-12)
    assert result.z == pytest.approx(z, rel=1e-9)
    assert result.p_value == pytest.approx(p_value, rel=1e-9)
    # pROC's interval is the difference +- 1.96 standard errors, the standard error being
    # the difference over Z.
    half_width = stats.norm.ppf(0.975) * result.difference / z
    assert result.interval == pytest.approx(
        (result.difference - half_width, result.difference + half_width)
    )


def test_delong_of_identical_scores_is_no_difference():
    scores = asah_scores("s100b")
    result = compare.delong_test(ASAH_LABELS, scores, scores.copy())
    assert (result.difference, result.z, result.p_value) == (0.0, 0.0, 1.0)
    assert result.interval == (0.0, 0.0)


def test_swapping_the_runs_flips_the_sign_and_keeps_the_p_value():
    forward = compare.delong_test(ASAH_LABELS, asah_scores("wfns"), asah_scores("ndka"))
    backward = compare.delong_test(ASAH_LABELS, asah_scores("ndka"), asah_scores("wfns"))
    assert backward.difference == pytest.approx(-forward.difference)
    assert backward.z == pytest.approx(-forward.z)
    assert backward.p_value == pytest.approx(forward.p_value)
    assert backward.interval == pytest.approx((-forward.interval[1], -forward.interval[0]))


def test_delong_needs_both_classes_and_matching_lengths():
    with pytest.raises(ValueError, match="both benign and malignant"):
        compare.delong_test([1, 1, 1], [0.2, 0.5, 0.9], [0.1, 0.4, 0.8])
    with pytest.raises(ValueError, match="differ in length"):
        compare.delong_test([0, 1, 1], [0.2, 0.5, 0.9], [0.1, 0.4])


def paired_outcomes(both: int, only_a: int, only_b: int, neither: int):
    """Per-image "run A right" and "run B right" flags for a 2x2 table of counts."""
    first = [True] * both + [True] * only_a + [False] * only_b + [False] * neither
    second = [True] * both + [False] * only_a + [True] * only_b + [False] * neither
    return first, second


def test_mcnemar_chi_square_on_agrestis_approval_ratings():
    # Agresti, Categorical Data Analysis (2nd ed., 2002), section 10.1 and Table 10.1: 1600
    # people rated a leader's performance twice, a month apart: 794 approved both times, 150
    # only the first time, 86 only the second, 570 neither. Agresti gives the difference in
    # approval, 0.590 - 0.550 = 0.040, with the 95% interval (0.021, 0.059).
    result = compare.mcnemar_test(*paired_outcomes(794, 150, 86, 570))
    assert (result.n, result.only_a, result.only_b) == (1600, 150, 86)
    assert (result.correct_a, result.correct_b) == pytest.approx((0.59, 0.55))
    assert result.difference == pytest.approx(0.04)
    assert result.interval == pytest.approx((0.021, 0.059), abs=5e-4)
    assert result.method == compare.CHI_SQUARE
    # By hand: (|150 - 86| - 1)^2 / (150 + 86) = 3969 / 236 on one degree of freedom.
    assert result.p_value == pytest.approx(stats.chi2.sf(3969 / 236, 1))
    assert result.p_value == pytest.approx(4.11e-5, rel=0.01)


def test_mcnemar_is_exact_for_few_discordant_images():
    # One image only run A got right, seven only run B: two-sided exact binomial p is
    # 2 * (C(8, 0) + C(8, 1)) / 2^8 = 18 / 256.
    result = compare.mcnemar_test(*paired_outcomes(12, 1, 7, 1))
    assert result.method == compare.EXACT
    assert result.p_value == pytest.approx(18 / 256)
    assert result.difference == pytest.approx(-6 / 21)


def test_mcnemar_without_discordant_images_finds_no_difference():
    result = compare.mcnemar_test(*paired_outcomes(5, 0, 0, 3))
    assert (result.difference, result.p_value, result.interval) == (0.0, 1.0, (0.0, 0.0))
    with pytest.raises(ValueError, match="equally long"):
        compare.mcnemar_test([True, False], [True])


def split_predictions(names, labels, probabilities) -> pd.DataFrame:
    return pd.DataFrame({"image_name": names, "label": labels, "probability": probabilities})


def test_test_splits_pair_on_shared_image_names_and_warn_with_both_sizes():
    first = split_predictions(["a", "b", "c", "d"], [0, 1, 0, 1], [0.1, 0.9, 0.2, 0.7])
    # "b" is malignant for the first run and benign here: compared against no single truth.
    second = split_predictions(["d", "c", "b"], [1, 0, 0], [0.6, 0.3, 0.4])
    splits = {"run-1": first, "run-2": second}
    paired = compare.pair_test_splits(splits)
    assert paired.basis == compare.TEST_SPLIT
    assert paired.keys == ("c", "d")
    assert paired.labels.tolist() == [0, 1]
    assert paired.probabilities["run-2"].tolist() == [0.3, 0.6]
    assert "2 images" in paired.description
    warning = compare.test_split_warning(splits)
    assert "run-1: 4 images" in warning and "run-2: 3 images" in warning
    assert compare.test_split_warning({"run-1": first, "run-2": first.iloc[::-1]}) is None
    with pytest.raises(ValueError, match="two or more runs"):
        compare.pair_test_splits({"run-1": first})


def evaluation_predictions(hashes, names, labels, probabilities) -> pd.DataFrame:
    return pd.DataFrame(
        {"image_name": names, "sha256": hashes, "label": labels, "probability": probabilities}
    )


def test_evaluations_pair_by_content_hash_and_else_by_name():
    first = evaluation_predictions(
        ["h1", "h2", "h3"], ["x.jpg", "y.jpg", "z.jpg"], [0, 1, 1], [0.1, 0.8, 0.6]
    )
    # Two of the same images under other names, which their hashes still match, and another.
    renamed = evaluation_predictions(
        ["h3", "h2", "h4"], ["z2.jpg", "y2.jpg", "x.jpg"], [1, 1, 0], [0.4, 0.7, 0.3]
    )
    paired = compare.pair_evaluations({"a": first, "b": renamed}, "clinic-2026")
    assert paired.basis == compare.EVALUATION
    assert paired.n_images == 2 and paired.keys == ("h2", "h3")
    assert paired.probabilities["b"].tolist() == [0.7, 0.4]
    assert "clinic-2026" in paired.description and "SHA-256" in paired.description
    unhashed = first.assign(sha256=None)
    by_name = compare.pair_evaluations({"a": unhashed, "b": first}, "clinic-2026")
    assert by_name.keys == ("x.jpg", "y.jpg", "z.jpg")
    assert "image name" in by_name.description


def test_shared_evaluations_are_the_datasets_every_run_was_scored_on():
    evaluations = pd.DataFrame(
        {
            "evaluation_id": ["e1", "e2", "e3", "e4", "e5"],
            "run_id": ["a", "b", "a", "a", "c"],
            "created_at": pd.to_datetime(
                ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]
            ),
            "dataset": ["clinic", "clinic", "clinic", "other", "other"],
            "dataset_key": ["k1", "k1", "k1", "k2", "k2"],
        }
    )
    shared = compare.shared_evaluations(evaluations, ["a", "b"])
    # Run a's newer evaluation of the same images is the one used.
    assert shared == {"k1": {"dataset": "clinic", "evaluations": {"a": "e3", "b": "e2"}}}
    assert compare.shared_evaluations(evaluations, ["a", "b", "c"]) == {}


def asah_paired_set() -> compare.PairedSet:
    return compare.PairedSet(
        basis=compare.TEST_SPLIT,
        description="aSAH",
        keys=tuple(str(index) for index in range(len(ASAH_LABELS))),
        labels=ASAH_LABELS,
        probabilities={"wfns": asah_scores("wfns"), "s100b": asah_scores("s100b")},
    )


def test_paired_table_shows_each_run_against_the_reference_as_text():
    thresholds = {"wfns": 0.5, "s100b": 0.6}
    table = compare.paired_table(asah_paired_set(), thresholds)
    assert table.columns.tolist() == ["s100b vs wfns"]
    column = table["s100b vs wfns"]
    assert column["Images (malignant)"] == "113 (41)"
    assert column["Thresholds, reference / compared"] == "0.500 / 0.600"
    # The compared run minus the reference: the sign of pROC's wfns - s100b turns.
    assert column["ROC AUC, reference / compared"] == "0.824 / 0.731"
    assert column["ROC AUC difference, compared − reference (95% CI)"].startswith("-0.092 (")
    assert column["ROC AUC, DeLong p"] == "0.027"
    comparison = compare.compare_runs(asah_paired_set(), "wfns", "s100b", thresholds)
    malignant = ASAH_LABELS == 1
    expected = (asah_scores("s100b")[malignant] >= 0.6).mean()
    assert comparison.sensitivity.correct_a == pytest.approx(expected)
    assert column["Sensitivity, reference / compared"].endswith(f"/ {expected:.3f}")
    assert "discordant images" in column["Specificity, McNemar p"]


def test_a_class_with_too_few_images_reads_too_few_cases():
    rng = np.random.default_rng(0)
    labels = np.array([1] * (reports.MIN_CONFIRMED_CASES - 1) + [0] * 30)
    paired = compare.PairedSet(
        basis=compare.TEST_SPLIT,
        description="few malignant",
        keys=tuple(str(index) for index in range(len(labels))),
        labels=labels,
        probabilities={run: rng.random(len(labels)) for run in ("a", "b", "c")},
    )
    table = compare.paired_table(paired, {"a": 0.5, "b": 0.5, "c": 0.5})
    assert table.columns.tolist() == ["b vs a", "c vs a"]
    assert table.loc["ROC AUC, DeLong p", "b vs a"] == reports.TOO_FEW_CASES
    assert table.loc["Sensitivity, McNemar p", "c vs a"] == reports.TOO_FEW_CASES
    assert table.loc["Specificity, McNemar p", "c vs a"] != reports.TOO_FEW_CASES


def test_roc_curves_on_the_paired_images_mark_each_runs_threshold():
    curves, points = compare.roc_curves(asah_paired_set(), {"wfns": 0.5, "s100b": 0.6})
    assert curves["wfns"]["auc"] == pytest.approx(ASAH_AUC["wfns"])
    scores = asah_scores("s100b")
    sensitivity = (scores[ASAH_LABELS == 1] >= 0.6).mean()
    false_positive_rate = (scores[ASAH_LABELS == 0] >= 0.6).mean()
    assert points["s100b"] == pytest.approx((false_positive_rate, sensitivity))
    assert not math.isnan(curves["s100b"]["fpr"][-1])
