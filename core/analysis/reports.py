"""Tables for the Metrics and History pages, computed from run cards and database frames.

Everything here works on results already stored (a card's evaluation, a run's test
predictions, confirmed outcomes), so no model is loaded and no TensorFlow is imported.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd

from core.analysis import metrics
from core.analysis.operating_point import LOCAL as LOCAL_THRESHOLD
from core.inputs import data, datasets
from core.inputs.labels import BENIGN, LABEL_VALUES, MALIGNANT
from core.storage.card import Card

HEADLINE_METRICS = {
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC (average precision)",
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "PPV (precision)",
    "npv": "NPV",
    "f1": "F1",
    "balanced_accuracy": "Balanced accuracy",
    "accuracy": "Accuracy",
}
# How a stored label reads on screen and in reports. The threshold is an operating point
# chosen for high sensitivity (often a few percent), so a probability above it is a reason to
# refer, not a finding of malignancy. Stored labels stay benign or malignant.
SHOWN_LABELS = {MALIGNANT: "refer (suspicious)", BENIGN: "below referral threshold"}
# An image flagged out of distribution gets no result, whichever side of the threshold it is.
NOT_ASSESSED = "not assessed: not dermoscopy?"
# Shown for a metric that cannot be computed (one class only, nothing predicted positive);
# the same words the app's metric tiles use.
MISSING = "n/a"
# How many diagnoses are shown before the rest (Predict, History) and listed in case reports.
TOP_DIAGNOSES = 3
REAL_WORLD_BOOTSTRAP = 200
# Confirmed cases of a class below which its metrics are not shown (see real_world_metrics).
MIN_CONFIRMED_CASES = 10
TOO_FEW_CASES = "too few cases"
# Validation ROC AUC below this is too close to chance (0.5) to activate a run unasked.
NEAR_CHANCE_AUC = 0.6
# The rows an evaluation may skip, by `data` problem kind, in words before their count.
SKIPPED_ROW_WORDS = {
    data.INVALID_TARGET: "rows with an invalid target",
    data.UNMATCHED_NAME: "rows whose name matches no image",
    data.DUPLICATE_NAME: "rows sharing an image name (the first of each kept)",
    data.DUPLICATE_IMAGE: "byte-identical image files (the first of each kept)",
}


@dataclass(frozen=True)
class OperatingPoint:
    """Counts and ratios at one threshold, and where that threshold sits on ROC and PR."""

    threshold: float
    counts: dict

    @property
    def roc_point(self) -> tuple[float, float] | None:
        sensitivity, specificity = self.counts["sensitivity"], self.counts["specificity"]
        if sensitivity is None or specificity is None:
            return None
        return 1.0 - specificity, sensitivity

    @property
    def pr_point(self) -> tuple[float, float] | None:
        recall, precision = self.counts["sensitivity"], self.counts["ppv"]
        return None if recall is None or precision is None else (recall, precision)


def chance_warning(card: Card) -> str | None:
    """Why a run's validation results are close to chance, or None when they are not."""
    auc = card.val_metrics.get("roc_auc")
    if auc is None or auc >= NEAR_CHANCE_AUC:
        return None
    return (
        f"Its validation ROC AUC is {auc:.3f}, near chance (0.5): it tells benign from "
        "malignant little better than a coin toss, whatever its sensitivity or specificity "
        "(a run with weights 'none' on a small sample often does)."
    )


def headline_table(evaluation: dict) -> pd.DataFrame:
    """Metric, value and 95% bootstrap interval (where one was computed) of an evaluation.

    Values are floats, NaN where missing, so that number formats apply to whole columns.
    """
    intervals = evaluation.get("intervals") or {}
    rows = []
    for key, name in HEADLINE_METRICS.items():
        low, high = intervals.get(key) or (None, None)
        rows.append({"metric": name, "value": evaluation.get(key), "ci_low": low, "ci_high": high})
    return _floats(pd.DataFrame(rows), ("value", "ci_low", "ci_high"))


def _floats(table: pd.DataFrame, names: tuple[str, ...]) -> pd.DataFrame:
    # None in a column makes it an object column, which tables show as "None" and never format.
    return table.astype(dict.fromkeys(names, "float64"))


def operating_point(test_predictions: pd.DataFrame, threshold: float) -> OperatingPoint:
    """Confusion counts and ratios of a run's stored test predictions at `threshold`."""
    counts = metrics.threshold_metrics(
        test_predictions["label"].to_numpy(), test_predictions["probability"].to_numpy(), threshold
    )
    return OperatingPoint(float(threshold), counts)


def classification_report(test_predictions: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per-class precision, recall and F1 (floats, NaN where undefined) and integer support."""
    rows = metrics.classification_report_table(
        test_predictions["label"].to_numpy(), test_predictions["probability"].to_numpy(), threshold
    )
    return _floats(pd.DataFrame(rows), ("precision", "recall", "f1"))


def shown_label(label: str | None, ood_flag=None) -> str:
    """A stored label as people read it: NOT_ASSESSED when flagged out of distribution."""
    # Database frames hold an unscored flag as pandas.NA, which has no truth value.
    if ood_flag is not None and not pd.isna(ood_flag) and bool(ood_flag):
        return NOT_ASSESSED
    return SHOWN_LABELS.get(str(label), "" if label is None else str(label))


def whose_threshold(threshold_source: str) -> str:
    """ "the model's" (its card's) or "this installation's own" (a local operating point)."""
    return "this installation's own" if threshold_source == LOCAL_THRESHOLD else "the model's"


def tta_views_text(card: Card) -> str:
    """What a run's test-time augmentation averages the image with, in words."""
    if card.tta_views == "dihedral":
        return "its 7 other flips and quarter turns"
    return "its two mirror images"


def tta_text(card: Card | None, on: bool) -> str:
    """ "on: the image and its 7 other flips and quarter turns", "off", or "on" alone when the
    run's card is gone."""
    if not on:
        return "off"
    return "on" if card is None else f"on: the image and {tta_views_text(card)}"


def threshold_distance(distance: float, threshold: float) -> str:
    """ "+39.9 percentage points above the threshold 6.1%": a difference of two percentages is
    in points; "+40.0%" would read as a relative change."""
    points = distance * 100
    if round(points, 1) == 0:
        return f"at the threshold {threshold:.1%}"
    side = "above" if points > 0 else "below"
    return f"{points:+.1f} percentage points {side} the threshold {threshold:.1%}"


def format_number(value: float | None, digits: int = 3) -> str:
    return MISSING if value is None or pd.isna(value) else f"{value:.{digits}f}"


def _format_interval(value: float | None, interval) -> str:
    """ "0.871 (0.820–0.915)": a value with its 95% interval, or the value alone."""
    if not interval or value is None:
        return format_number(value)
    return f"{value:.3f} ({interval[0]:.3f}–{interval[1]:.3f})"


def comparison_table(cards: dict[str, Card]) -> pd.DataFrame:
    """Runs side by side, as text: one column per run, one row per setting or test metric."""
    columns = {}
    for run_id, card in cards.items():
        test = card.test_metrics
        intervals = test.get("intervals") or {}
        data = card.data
        column = {
            "Backbone": _text(card.architecture),
            "Input size": _text(card.image_size, " px"),
            "Trained on": f"{_source(data)} ({_text(data.get('n_images'))} images)",
            "Sites": ", ".join(data.get("sites") or []) or MISSING,
            "Threshold": f"{card.threshold:.3f} ({_text(card.threshold_rule)})",
            "Test images": _text(test.get("n")),
        }
        for key, name in HEADLINE_METRICS.items():
            column[name] = _format_interval(test.get(key), intervals.get(key))
        columns[run_id] = column
    return pd.DataFrame(columns)


def members_table(card: Card) -> pd.DataFrame:
    """An ensemble's members and the ensemble, each on its own test figures (the same test
    split) and its mean held-out-source ROC AUC, fine-tuned folds and head-only ones."""
    rows = [
        _member_row(member.run_id, member.backbone, member.test_metrics, member)
        for member in card.members
    ]
    rows.append(_member_row("ensemble", _text(card.architecture), card.test_metrics, card))
    return pd.DataFrame(rows)


def _member_row(name: str, backbone: str, test: dict, figures) -> dict:
    intervals = test.get("intervals") or {}

    def held_out_auc(summary: dict | None) -> str:
        return format_number(((summary or {}).get("mean") or {}).get("roc_auc"))

    return {
        "Run": name,
        "Backbone": backbone,
        "Test ROC AUC (95% CI)": _format_interval(test.get("roc_auc"), intervals.get("roc_auc")),
        "Sensitivity": format_number(test.get("sensitivity")),
        "Specificity": format_number(test.get("specificity")),
        "Held-out sources, fine-tuned: mean ROC AUC": held_out_auc(figures.crossval_fine_tuned),
        "Held-out sources, head only: mean ROC AUC": held_out_auc(figures.crossval),
    }


def _source(data: dict) -> str:
    source = data.get("source")
    return datasets.describe_location(source) if source else MISSING


def _text(value, unit: str = "") -> str:
    return MISSING if value is None else f"{value}{unit}"


def roc_curves(cards: dict[str, Card]) -> dict[str, dict]:
    """The stored test ROC curves, with their AUCs, for `charts.roc_figure`."""
    curves = {}
    for run_id, card in cards.items():
        test = card.test_metrics
        if test.get("roc", {}).get("fpr"):
            curves[run_id] = {**test["roc"], "auc": test.get("roc_auc")}
    return curves


def real_world_metrics(confirmed: pd.DataFrame) -> pd.DataFrame:
    """Per model, how its stored predictions fared against confirmed diagnoses.

    Uses each model's own stored threshold (the card's, at prediction time). A metric whose
    cases number fewer than MIN_CONFIRMED_CASES of the class it depends on reads
    TOO_FEW_CASES: "0.000 (0.000-0.000)" from one case would look precise and mean nothing.
    """
    rows = []
    for run_id, group in confirmed.groupby("run_id", sort=True):
        labels = group["confirmed_label"].map(LABEL_VALUES).to_numpy(dtype=np.int64)
        threshold = float(group["threshold"].iloc[-1])
        evaluation = metrics.evaluate(
            labels, group["probability"].to_numpy(), threshold, n_bootstrap=REAL_WORLD_BOOTSTRAP
        )
        rows.append(
            {
                "Model": run_id,
                "Confirmed": evaluation["n"],
                "Malignant": evaluation["n_positive"],
                "Threshold": format_number(threshold),
                **_real_world_cells(evaluation),
            }
        )
    return pd.DataFrame(rows)


def _real_world_cells(evaluation: dict) -> dict[str, str]:
    positives = evaluation["n_positive"]
    enough = {
        "sensitivity": positives >= MIN_CONFIRMED_CASES,
        "specificity": evaluation["n"] - positives >= MIN_CONFIRMED_CASES,
    }
    enough["both"] = enough["sensitivity"] and enough["specificity"]
    intervals = evaluation["intervals"]
    cells = {
        "ROC AUC": ("both", _format_interval(evaluation["roc_auc"], intervals["roc_auc"])),
        "Sensitivity": (
            "sensitivity",
            _format_interval(evaluation["sensitivity"], intervals["sensitivity"]),
        ),
        "Specificity": (
            "specificity",
            _format_interval(evaluation["specificity"], intervals["specificity"]),
        ),
        "PPV": ("both", format_number(evaluation["ppv"])),
        "NPV": ("both", format_number(evaluation["npv"])),
    }
    return {name: text if enough[need] else TOO_FEW_CASES for name, (need, text) in cells.items()}


# Other thresholds a fold may be scored at, and how the table names them.
CROSSVAL_THRESHOLDS = (
    ("at_run_threshold", "at the run's threshold"),
    ("at_rule_threshold", "at the rule's threshold chosen without this source"),
)


def overlap_warning(record: dict) -> str | None:
    """What to tell people when the evaluated images include ones the run learned from."""
    overlap = record.get("overlap") or {}
    seen = overlap.get("train", 0) + overlap.get("val", 0)
    if not seen:
        return None
    return (
        f"{seen} of the {record['metrics']['n']} images were in the run's training "
        f"({overlap['train']}) or validation ({overlap['val']}) split (matched by "
        f"{overlap['by']}): these figures flatter the run; evaluate on images it never saw"
    )


def local_threshold_table(point: dict) -> pd.DataFrame:
    """A local operating point (`core.analysis.operating_point.choose`) against the card's
    threshold."""
    intervals = point["intervals"]
    return pd.DataFrame(
        [
            {
                "Threshold": format_number(point["threshold"]),
                "Card's threshold": format_number(point["card_threshold"]),
                "Target sensitivity": format_number(point["target_sensitivity"], 2),
                "Sensitivity (95% CI)": _format_interval(
                    point["sensitivity"], intervals["sensitivity"]
                ),
                "Specificity (95% CI)": _format_interval(
                    point["specificity"], intervals["specificity"]
                ),
                "Images": f"{point['n']} ({point['n_malignant']} malignant)",
            }
        ]
    )


def crossval_table(crossval: dict) -> pd.DataFrame:
    """One row per held-out source of a crossval.json, then its mean and worst rows (text).

    Sensitivity and specificity are at the fold's own threshold (chosen on the fold's
    validation split) and, when the file has them, at the run's threshold and at the
    held-out-sources rule's threshold chosen without the fold's source.
    """
    shifts = [
        (key, label)
        for key, label in CROSSVAL_THRESHOLDS
        if any(fold.get(key) for fold in crossval["folds"])
    ]
    rows = [_crossval_row(fold, shifts) for fold in crossval["folds"]]
    summary = crossval.get("summary") or {}
    return pd.DataFrame([*rows, *_crossval_summary_rows(summary, list(rows[0]))])


def _crossval_summary_rows(summary: dict, columns: list[str]) -> list[dict]:
    mean, worst = summary.get("mean") or {}, summary.get("worst") or {}
    rows = (
        {
            "Held-out source": "Mean over sources",
            "ROC AUC (95% CI)": format_number(mean.get("roc_auc")),
            "Sensitivity (95% CI)": format_number(mean.get("sensitivity")),
            "Specificity (95% CI)": format_number(mean.get("specificity")),
        },
        {
            "Held-out source": "Worst source",
            "ROC AUC (95% CI)": _worst(worst, "roc_auc"),
            "Sensitivity (95% CI)": _worst(worst, "sensitivity"),
        },
    )
    return [{**dict.fromkeys(columns, ""), **row} for row in rows]


def _crossval_row(fold: dict, shifts: list[tuple[str, str]]) -> dict:
    scored = fold.get("metrics") or {}
    intervals = scored.get("intervals") or {}
    row = {
        "Held-out source": fold["held_out"],
        "Images": _text(scored.get("n")),
        "Malignant": _text(scored.get("n_positive")),
        "ROC AUC (95% CI)": _format_interval(scored.get("roc_auc"), intervals.get("roc_auc")),
        "Threshold": format_number(fold.get("threshold")),
        "Sensitivity (95% CI)": _format_interval(
            scored.get("sensitivity"), intervals.get("sensitivity")
        ),
        "Specificity (95% CI)": _format_interval(
            scored.get("specificity"), intervals.get("specificity")
        ),
    }
    for shift, label in shifts:
        shifted = fold.get(shift) or {}
        shifted_intervals = shifted.get("intervals") or {}
        for key, name in (("sensitivity", "Sensitivity"), ("specificity", "Specificity")):
            row[f"{name} {label}"] = _format_interval(shifted.get(key), shifted_intervals.get(key))
    flagged = fold.get("ood_flagged")
    row["OOD flagged"] = MISSING if flagged is None else f"{flagged:.1%}"
    return row


def _worst(worst: dict, key: str) -> str:
    value, source = worst.get(key), worst.get(f"{key}_source")
    return f"{format_number(value)} ({source})" if source else format_number(value)


def crossval_roc_curves(crossval: dict) -> dict[str, dict]:
    """The held-out sources' ROC curves with their AUCs, for `charts.roc_figure`."""
    curves = {}
    for fold in crossval["folds"]:
        scored = fold.get("metrics") or {}
        if (scored.get("roc") or {}).get("fpr"):
            curves[fold["held_out"]] = {**scored["roc"], "auc": scored.get("roc_auc")}
    return curves


def crossval_skipped(crossval: dict) -> list[str]:
    """ "<source>: <reason>" for each source that could not be held out."""
    return [f"{item['source']}: {item['reason']}" for item in crossval.get("skipped") or []]


# How the subgroup table names each subgroup of an evaluation.
SUBGROUP_NAMES = {"site": "Site", "sex": "Sex", "age_band": "Age band", "source": "Source"}


def subgroup_table(evaluation: dict) -> pd.DataFrame:
    """One row per value of each subgroup (site, sex, age band, source), as text.

    A subgroup known for no image (every value "unknown") is left out. As in
    `real_world_metrics`, a metric needing more cases of a class than the subgroup has reads
    TOO_FEW_CASES: an interval from three images would look precise and mean nothing.
    """
    rows: list[dict] = []
    for key, name in SUBGROUP_NAMES.items():
        groups = (evaluation.get("subgroups") or {}).get(key) or {}
        if set(groups) <= {metrics.UNKNOWN_SUBGROUP}:
            continue
        values = sorted(groups, key=_age_order) if key == "age_band" else list(groups)
        rows.extend(_subgroup_row(name, value, groups[value]) for value in values)
    return pd.DataFrame(rows, columns=_SUBGROUP_COLUMNS)


def _age_order(band: str) -> int:
    """Age bands youngest first, then unknown: as text, "<30" would sort after "75+"."""
    bands = [*(name for _, name in data.AGE_BANDS), data.OLDEST_BAND]
    return bands.index(band) if band in bands else len(bands)


_SUBGROUP_COLUMNS = [
    "Subgroup",
    "Value",
    "Images",
    "Malignant",
    "ROC AUC (95% CI)",
    "Sensitivity (95% CI)",
    "Specificity (95% CI)",
]


def _subgroup_row(name: str, value: str, group: dict) -> dict:
    intervals = group.get("intervals") or {}
    malignant, benign = group["n_positive"], group["n"] - group["n_positive"]
    enough = {
        "roc_auc": min(malignant, benign) >= MIN_CONFIRMED_CASES,
        "sensitivity": malignant >= MIN_CONFIRMED_CASES,
        "specificity": benign >= MIN_CONFIRMED_CASES,
    }
    cells = {
        f"{HEADLINE_METRICS[key]} (95% CI)": (
            _format_interval(group.get(key), intervals.get(key)) if enough[key] else TOO_FEW_CASES
        )
        for key in enough
    }
    return {
        "Subgroup": name,
        "Value": value,
        "Images": group["n"],
        "Malignant": malignant,
        **cells,
    }


def ood_summary(record: dict) -> str:
    """ "3 of 120 images (2.5%) flagged out of distribution", or why there is no figure."""
    ood = record.get("ood")
    if not ood:
        return "Out of distribution: not checked (this run has no OOD detector)."
    return (
        f"Out of distribution: {ood['flagged']} of {ood['n_scored']} images "
        f"({ood['share']:.1%}) flagged as unlike the run's training images."
    )


# Bidirectional controls (U+202A-U+202E, U+2066-U+2069, LRM, RLM, ALM): a right-to-left
# override in "lesion\u202egpj.exe" displays the name as "lesionexe.jpg".
_BIDI_CONTROLS = dict.fromkeys(
    [*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C]
)


def display_name(name: str) -> str:
    """A file name as shown to people, without bidirectional controls; the stored one keeps
    them, so that it still matches the file."""
    return name.translate(_BIDI_CONTROLS)


def describe_skipped_rows(skipped: dict) -> str:
    """The skipped rows in words, each kind with its count and first few names."""
    parts = []
    for kind, words in SKIPPED_ROW_WORDS.items():
        if kind in skipped:
            count, examples = skipped[kind]["count"], skipped[kind]["examples"]
            more = ", ..." if count > len(examples) else ""
            parts.append(f"{words}: {count} ({', '.join(examples)}{more})")
    return "; ".join(parts)


def few_cases_warning(evaluation: dict) -> str | None:
    """Why an evaluation's headline figures are too uncertain to judge a run by, or None.

    With a handful of images an AUC of 1.000 and an interval of 1.000-1.000 look precise
    and mean little: the same minimum as the subgroup table applies to the whole set.
    """
    malignant = evaluation["n_positive"]
    benign = evaluation["n"] - malignant
    if min(malignant, benign) >= MIN_CONFIRMED_CASES:
        return None
    return (
        f"Only {malignant} malignant and {benign} benign images: with fewer than "
        f"{MIN_CONFIRMED_CASES} of a class these figures and their intervals are too "
        "uncertain to judge the run by. Evaluate on more images."
    )
