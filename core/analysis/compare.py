"""Runs compared on the same images: paired tests of ROC AUC, sensitivity and specificity.

Two runs scored on different images cannot be compared fairly, so everything here starts
from a paired set: the images every chosen run has scored, each with its label and each
run's probability. The set comes from a shared evaluation (runs evaluated on the same
dataset) or from the images their test splits have in common.

ROC AUCs are compared with DeLong's test for correlated ROC curves, computed with the fast
algorithm of Sun and Xu (2014); sensitivity and specificity at each run's own threshold
with McNemar's test on the images of one class.
"""

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from core.analysis import metrics, reports

Z_95 = float(stats.norm.ppf(0.975))
# Discordant images below which McNemar's chi-square approximation is poor, so the exact
# binomial test is used instead (the common rule of thumb).
EXACT_BELOW = 25
EXACT = "exact binomial"
CHI_SQUARE = "chi-square with continuity correction"
EVALUATION = "evaluation"
TEST_SPLIT = "test split"


@dataclass(frozen=True)
class DeLongResult:
    """Two correlated ROC AUCs; `difference` is auc_a - auc_b."""

    auc_a: float
    auc_b: float
    difference: float
    standard_error: float
    interval: tuple[float, float]
    z: float
    p_value: float


@dataclass(frozen=True)
class McNemarResult:
    """A paired difference in the share of one class's images that two runs call right.

    `correct_a`/`correct_b` are those shares (sensitivity on malignant images, specificity
    on benign ones); `only_a`/`only_b` the discordant images that only one run got right.
    """

    n: int
    correct_a: float
    correct_b: float
    only_a: int
    only_b: int
    difference: float
    interval: tuple[float, float]
    p_value: float
    method: str


@dataclass(frozen=True)
class PairedSet:
    """The images every run in `probabilities` scored, in one order, and where they came from.

    `basis` is EVALUATION or TEST_SPLIT; `description` says which images, for people.
    """

    basis: str
    description: str
    keys: tuple[str, ...]
    labels: np.ndarray
    probabilities: dict[str, np.ndarray]

    @property
    def n_images(self) -> int:
        return len(self.keys)

    @property
    def n_malignant(self) -> int:
        return int(self.labels.sum())


@dataclass(frozen=True)
class PairedComparison:
    """A compared run against the reference run on a paired set, each at its own threshold.

    In each test result "a" is the compared run and "b" the reference, so every difference
    reads compared minus reference: positive means the compared run does better. A result
    is None when a class has fewer than `reports.MIN_CONFIRMED_CASES` images.
    """

    reference: str
    compared: str
    n_images: int
    n_malignant: int
    thresholds: tuple[float, float]
    auc: DeLongResult | None
    sensitivity: McNemarResult | None
    specificity: McNemarResult | None


def _midranks(values: np.ndarray) -> np.ndarray:
    # Ties share the mean of their ranks: Algorithm 1 of Sun and Xu (2014).
    return stats.rankdata(values, method="average")


def _structural_components(
    positives: np.ndarray, negatives: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC and DeLong's placements V10 (per positive) and V01 (per negative), by midranks."""
    m, n = len(positives), len(negatives)
    combined = _midranks(np.concatenate([positives, negatives]))
    among_positives, among_negatives = _midranks(positives), _midranks(negatives)
    v10 = (combined[:m] - among_positives) / n
    v01 = 1.0 - (combined[m:] - among_negatives) / m
    return float(v10.mean()), v10, v01


def delong_test(labels, scores_a, scores_b) -> DeLongResult:
    """DeLong's test of two ROC AUCs measured on the same images, two-sided.

    The same numbers as R pROC's `roc.test(..., method="delong", paired=TRUE)`.
    """
    label_array, first = metrics.validate_predictions(labels, scores_a)
    _, second = metrics.validate_predictions(label_array, scores_b)
    if not 0 < int(label_array.sum()) < len(label_array):
        raise ValueError("DeLong's test needs both benign and malignant images")
    positive = label_array == 1
    parts = [_structural_components(s[positive], s[~positive]) for s in (first, second)]
    aucs = [auc for auc, _, _ in parts]
    covariance = (
        np.cov(np.vstack([v10 for _, v10, _ in parts])) / positive.sum()
        + np.cov(np.vstack([v01 for _, _, v01 in parts])) / (~positive).sum()
    )
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    difference = aucs[0] - aucs[1]
    standard_error = math.sqrt(max(float(variance), 0.0))
    z, p_value = _z_and_p(difference, standard_error)
    interval = (difference - Z_95 * standard_error, difference + Z_95 * standard_error)
    return DeLongResult(aucs[0], aucs[1], difference, standard_error, interval, z, p_value)


def _z_and_p(difference: float, standard_error: float) -> tuple[float, float]:
    if standard_error == 0.0:
        # Identical curves (or both perfect) leave nothing to test.
        return (0.0, 1.0) if difference == 0.0 else (math.copysign(math.inf, difference), 0.0)
    z = difference / standard_error
    return z, float(2.0 * stats.norm.sf(abs(z)))


def mcnemar_test(correct_a, correct_b) -> McNemarResult:
    """McNemar's test of two paired proportions, from whether each run got each image right.

    Exact binomial when fewer than EXACT_BELOW images are discordant, else chi-square with
    continuity correction. The 95% interval of the difference is Wald's for paired
    proportions (Agresti, Categorical Data Analysis, 2nd ed., section 10.1).
    """
    first, second = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if first.shape != second.shape or first.ndim != 1 or len(first) == 0:
        raise ValueError("McNemar's test needs two equally long, non-empty sequences")
    n = len(first)
    only_a, only_b = int(np.sum(first & ~second)), int(np.sum(~first & second))
    discordant = only_a + only_b
    if discordant < EXACT_BELOW:
        method = EXACT
        p_value = float(stats.binomtest(only_a, discordant).pvalue) if discordant else 1.0
    else:
        method = CHI_SQUARE
        statistic = (abs(only_a - only_b) - 1) ** 2 / discordant
        p_value = float(stats.chi2.sf(statistic, 1))
    difference = (only_a - only_b) / n
    standard_error = math.sqrt(max(discordant - (only_a - only_b) ** 2 / n, 0.0)) / n
    interval = (
        max(difference - Z_95 * standard_error, -1.0),
        min(difference + Z_95 * standard_error, 1.0),
    )
    rates = float(first.mean()), float(second.mean())
    return McNemarResult(n, *rates, only_a, only_b, difference, interval, p_value, method)


def _inner_join(frames: dict[str, pd.DataFrame], key: str) -> pd.DataFrame:
    """One row per image every frame has, with one probability column per run.

    Images are matched on the key and the label, so an image whose label differs between
    runs is left out rather than compared against two truths.
    """
    joined = None
    for run_id, frame in frames.items():
        part = (
            frame[[key, "label", "probability"]]
            .dropna(subset=[key])
            .drop_duplicates(subset=[key])
            .rename(columns={"probability": run_id})
        )
        joined = part if joined is None else joined.merge(part, on=[key, "label"])
    if joined is None:
        raise ValueError("no runs to pair")
    return joined.sort_values(key).reset_index(drop=True)


def _paired_set(frames: dict[str, pd.DataFrame], key: str, basis: str, what: str) -> PairedSet:
    joined = _inner_join(frames, key)
    return PairedSet(
        basis=basis,
        description=f"{what}: {len(joined)} image{'' if len(joined) == 1 else 's'}",
        keys=tuple(joined[key].astype(str)),
        labels=joined["label"].to_numpy(dtype=np.int64),
        probabilities={run_id: joined[run_id].to_numpy(dtype=float) for run_id in frames},
    )


def pair_test_splits(test_predictions: dict[str, pd.DataFrame]) -> PairedSet:
    """The images the runs' test splits share, matched by image name.

    `test_predictions[run_id]` holds image_name, label and probability, as
    `Database.run_test_predictions` returns them.
    """
    _require_two(test_predictions)
    what = "Images in every chosen run's test split, matched by image name"
    return _paired_set(test_predictions, "image_name", TEST_SPLIT, what)


def pair_evaluations(predictions: dict[str, pd.DataFrame], dataset: str) -> PairedSet:
    """The images of a dataset every run was evaluated on, by SHA-256 (else by image name).

    `predictions[run_id]` holds image_name, sha256, label and probability, as
    `Database.evaluation_predictions` returns them. Content hashes match an image however
    it was named; names are the fallback when an evaluation stored no hashes.
    """
    _require_two(predictions)
    hashed = all(frame["sha256"].notna().all() for frame in predictions.values())
    key, by = ("sha256", "content (SHA-256)") if hashed else ("image_name", "image name")
    what = f"Images of the shared evaluation set {dataset}, matched by {by}"
    return _paired_set(predictions, key, EVALUATION, what)


def _require_two(frames: dict[str, pd.DataFrame]) -> None:
    if len(frames) < 2:
        raise ValueError(f"pairing needs two or more runs, got {len(frames)}")


def shared_evaluations(evaluations: pd.DataFrame, run_ids: list[str]) -> dict[str, dict]:
    """Datasets every run in `run_ids` was evaluated on: {dataset_key: {name, run: eval id}}.

    `evaluations` has the columns of `Database.list_evaluations`; each run's latest
    evaluation of a dataset is the one used.
    """
    rows = evaluations[evaluations["run_id"].isin(run_ids) & evaluations["dataset_key"].notna()]
    latest = rows.sort_values("created_at").groupby(["dataset_key", "run_id"]).tail(1)
    shared = {}
    for dataset_key, group in latest.groupby("dataset_key", sort=False):
        if set(group["run_id"]) == set(run_ids):
            shared[str(dataset_key)] = {
                "dataset": str(group["dataset"].iloc[-1]),
                "evaluations": dict(zip(group["run_id"], group["evaluation_id"], strict=True)),
            }
    return shared


def test_split_warning(test_predictions: dict[str, pd.DataFrame]) -> str | None:
    """Why the runs' stored test metrics are not side by side on the same images, or None."""
    names = {run_id: set(frame["image_name"]) for run_id, frame in test_predictions.items()}
    if len({frozenset(images) for images in names.values()}) <= 1:
        return None
    sizes = ", ".join(f"{run_id}: {len(images)} images" for run_id, images in names.items())
    return (
        f"These runs were tested on different images ({sizes}), so their test metrics below "
        "are not a like-for-like comparison. The paired comparison uses only images that "
        "every run scored."
    )


def compare_runs(
    paired: PairedSet, reference: str, compared: str, thresholds: dict[str, float]
) -> PairedComparison:
    """Paired tests of `compared` against `reference`, each run at its own threshold."""
    labels = paired.labels
    runs = (compared, reference)
    scores = [paired.probabilities[run_id] for run_id in runs]
    called = [paired.probabilities[run_id] >= thresholds[run_id] for run_id in runs]
    malignant, benign = labels == 1, labels == 0
    enough_malignant = paired.n_malignant >= reports.MIN_CONFIRMED_CASES
    enough_benign = paired.n_images - paired.n_malignant >= reports.MIN_CONFIRMED_CASES
    return PairedComparison(
        reference=reference,
        compared=compared,
        n_images=paired.n_images,
        n_malignant=paired.n_malignant,
        thresholds=(thresholds[reference], thresholds[compared]),
        auc=delong_test(labels, *scores) if enough_malignant and enough_benign else None,
        sensitivity=(
            mcnemar_test(called[0][malignant], called[1][malignant]) if enough_malignant else None
        ),
        specificity=(
            mcnemar_test(~called[0][benign], ~called[1][benign]) if enough_benign else None
        ),
    )


def format_p(p_value: float) -> str:
    return "< 0.001" if p_value < 0.001 else f"{p_value:.3f}"


def _format_difference(difference: float, interval: tuple[float, float]) -> str:
    return f"{difference:+.3f} ({interval[0]:+.3f} to {interval[1]:+.3f})"


def _mcnemar_cells(result: McNemarResult | None, name: str) -> dict[str, str]:
    cells = {
        f"{name}, reference / compared": lambda r: f"{r.correct_b:.3f} / {r.correct_a:.3f}",
        f"{name} difference, compared − reference (95% CI)": lambda r: _format_difference(
            r.difference, r.interval
        ),
        f"{name}, McNemar p": lambda r: (
            f"{format_p(r.p_value)} ({r.method}, {r.only_a + r.only_b} discordant images)"
        ),
    }
    return {
        label: reports.TOO_FEW_CASES if result is None else text(result)
        for label, text in cells.items()
    }


def _auc_cells(result: DeLongResult | None) -> dict[str, str]:
    cells = {
        "ROC AUC, reference / compared": lambda r: f"{r.auc_b:.3f} / {r.auc_a:.3f}",
        "ROC AUC difference, compared − reference (95% CI)": lambda r: _format_difference(
            r.difference, r.interval
        ),
        "ROC AUC, DeLong p": lambda r: format_p(r.p_value),
    }
    return {
        label: reports.TOO_FEW_CASES if result is None else text(result)
        for label, text in cells.items()
    }


def _comparison_column(comparison: PairedComparison) -> dict[str, str]:
    reference_threshold, compared_threshold = comparison.thresholds
    return {
        "Images (malignant)": f"{comparison.n_images} ({comparison.n_malignant})",
        "Thresholds, reference / compared": (
            f"{reference_threshold:.3f} / {compared_threshold:.3f}"
        ),
        **_auc_cells(comparison.auc),
        **_mcnemar_cells(comparison.sensitivity, "Sensitivity"),
        **_mcnemar_cells(comparison.specificity, "Specificity"),
    }


def paired_table(paired: PairedSet, thresholds: dict[str, float]) -> pd.DataFrame:
    """The first run as reference against each other run, as text: one column per pair.

    Cells read TOO_FEW_CASES where a class has fewer than `reports.MIN_CONFIRMED_CASES`
    images, as the real-world metrics do: a test on a handful of cases means nothing.
    """
    reference, *others = paired.probabilities
    columns = {
        f"{compared} vs {reference}": _comparison_column(
            compare_runs(paired, reference, compared, thresholds)
        )
        for compared in others
    }
    return pd.DataFrame(columns)


def roc_curves(
    paired: PairedSet, thresholds: dict[str, float]
) -> tuple[dict[str, dict], dict[str, tuple[float, float]]]:
    """Each run's ROC curve on the paired images and its point at its own threshold.

    In the shapes `charts.roc_figure` takes: curves with their AUCs, and (FPR, TPR) points.
    """
    curves, points = {}, {}
    for run_id, probabilities in paired.probabilities.items():
        scored = metrics.evaluate(paired.labels, probabilities, thresholds[run_id], n_bootstrap=0)
        if scored["roc"]["fpr"]:
            curves[run_id] = {**scored["roc"], "auc": scored["roc_auc"]}
            points[run_id] = (1.0 - scored["specificity"], scored["sensitivity"])
    return curves, points
