"""Evaluate a trained run on any labelled dataset, at the run's own threshold.

An evaluation produces a record (`evaluation_record`) and one prediction per scored image;
`runs.write_evaluation` stores both in the run's folder, where the database indexes them and
the Metrics page shows them again later. The threshold is the run's own, never re-tuned on the
evaluated images: re-tuning would flatter the run on exactly the data meant to test it.
"""

import datetime
import hashlib
import math
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from core.analysis import metrics, reports
from core.inputs import data, datasets, diagnoses
from core.serving.inference import BATCH_SIZE, Predictor
from core.storage import runs

# The subgroups of an evaluation, in the order the Metrics page lists them.
SUBGROUP_COLUMNS = ("site", "sex", "age_band", "source")

BatchCallback = Callable[[int, int], None]
MAX_SKIPPED_EXAMPLES = 5


class SkippedRowsError(data.DatasetError):
    """Rows of the dataset cannot be scored, and skipping them was not asked for."""


def age_band(age) -> str:
    """The age band of an approximate age in years; "unknown" when it is missing."""
    try:
        years = float(age)
    except (TypeError, ValueError):
        return metrics.UNKNOWN_SUBGROUP
    if not math.isfinite(years):
        return metrics.UNKNOWN_SUBGROUP
    return next((name for upper, name in data.AGE_BANDS if years < upper), data.OLDEST_BAND)


def dataset_key(sha256s) -> str:
    """A fingerprint of the evaluated images' contents: equal for the same set of images.

    Two runs scored on the same images share it, whatever the files were called or where
    they were, so their evaluations can be compared pairwise.
    """
    return hashlib.sha256("\n".join(sorted(set(sha256s))).encode("ascii")).hexdigest()


def load_evaluation_dataset(
    data_dir: str | Path,
    csv_path: str | Path | None = None,
    sites=("all",),
    skip_unmatched: bool = False,
) -> tuple[data.Dataset, dict]:
    """Every labelled, readable image, and the rows skipped (`skipped_rows`).

    One image of each class is enough to evaluate on. Rows that cannot be scored (an invalid
    target, a name that matches no image, a duplicate) raise `SkippedRowsError` unless
    `skip_unmatched`: metrics on fewer images than the user listed must not pass unnoticed.
    """
    report = data.validate_dataset(data_dir, csv_path, sites, min_per_class=1)
    if not report.ok or report.dataset is None:
        raise data.DatasetError("; ".join(problem.message for problem in report.errors))
    skipped = skipped_rows(report)
    if skipped and not skip_unmatched:
        raise SkippedRowsError(
            f"{reports.describe_skipped_rows(skipped)}. Nothing was evaluated: correct the "
            "data, or skip these rows (--skip-unmatched, or the checkbox on the Metrics page) "
            f"to evaluate the other {len(report.dataset.frame)} images"
        )
    return report.dataset, skipped


def skipped_rows(report: data.ValidationReport) -> dict:
    """{kind: {"count", "examples"}} of the rows the dataset dropped, by `data` kind."""
    skipped = {}
    for problem in report.problems:
        if problem.kind in reports.SKIPPED_ROW_WORDS:
            names = [Path(file).name for file in problem.files[:MAX_SKIPPED_EXAMPLES]]
            skipped[problem.kind] = {"count": len(problem.files), "examples": names}
    return skipped


def dataset_name(dataset: data.Dataset) -> str:
    """Where the dataset is, for people (never a server path), and its site filter if any."""
    folder = dataset.csv_path.parent if dataset.csv_path is not None else dataset.root
    where = datasets.describe_location(folder)
    if dataset.sites == (data.ALL_SITES,):
        return where
    return f"{where}, sites {', '.join(dataset.sites)}"


def score_images(
    predictor: Predictor,
    frame: pd.DataFrame,
    tta: bool,
    on_batch: BatchCallback | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """One row per readable image (`runs.EVALUATION_PREDICTION_COLUMNS`) and the unreadable.

    `on_batch(done, total)` is called after each batch of images; it may raise to stop.
    """
    items = list(zip(frame["image_name"], frame["path"], strict=True))
    scored, unreadable = [], []
    for done, prediction in enumerate(predictor.predict_many(items, tta=tta), start=1):
        if prediction.error:
            unreadable.append(prediction.file)
        else:
            scored.append((done - 1, prediction))
        if on_batch is not None and (done % BATCH_SIZE == 0 or done == len(items)):
            on_batch(done, len(items))
    rows = frame.iloc[[index for index, _ in scored]]
    predictions = pd.DataFrame(
        {
            "image_name": rows["image_name"].to_numpy(),
            "sha256": [prediction.sha256 for _, prediction in scored],
            "label": rows["label"].to_numpy(dtype=np.int64),
            "probability": [prediction.probability for _, prediction in scored],
            "ood_score": [prediction.ood_score for _, prediction in scored],
            "ood_flag": pd.array([p.ood_flag for _, p in scored], dtype="boolean"),
            "site": rows["site"].to_numpy(),
            "sex": rows["sex"].to_numpy(),
            "age": rows["age_approx"].to_numpy(dtype=float),
            "source": rows["source"].to_numpy(),
            "diagnosis": rows["diagnosis"].to_numpy(),
        }
    )
    return predictions, unreadable


def ood_share(predictions: pd.DataFrame) -> dict | None:
    """How many evaluated images the run's OOD detector flagged; None without a detector."""
    flags = predictions["ood_flag"].dropna()
    if flags.empty:
        return None
    flagged = int(flags.astype(bool).sum())
    return {"n_scored": len(flags), "flagged": flagged, "share": flagged / len(flags)}


def evaluation_record(
    run: runs.Run,
    predictions: pd.DataFrame,
    *,
    dataset: str,
    tta: bool,
    unreadable: list[str],
    skipped: dict | None = None,
    n_bootstrap: int = 1000,
) -> dict:
    """The stored evaluation: metrics at the run's threshold, subgroups with intervals, OOD."""
    if predictions.empty:
        raise ValueError("none of the images could be read, so there is nothing to evaluate")
    labels = predictions["label"].to_numpy()
    subgroups = {name: predictions[name].tolist() for name in ("site", "sex", "source")}
    subgroups["age_band"] = [age_band(age) for age in predictions["age"]]
    subgroups["diagnosis"] = diagnoses.vocabulary_names(predictions["diagnosis"], labels)
    threshold = run.card.threshold
    scored = metrics.evaluate(
        labels,
        predictions["probability"].to_numpy(),
        threshold,
        subgroups=subgroups,
        n_bootstrap=n_bootstrap,
        subgroup_intervals=True,
    )
    created = datetime.datetime.now(datetime.UTC)
    return {
        # Time first, so that ids sort by age; the random part keeps parallel ones apart.
        "evaluation_id": f"{created:%Y%m%d-%H%M%S-%f}-{uuid.uuid4().hex[:6]}",
        "run_id": run.run_id,
        "created_at": created.isoformat(),
        "dataset": dataset,
        "dataset_key": dataset_key(predictions["sha256"]),
        "threshold": threshold,
        "tta": tta,
        "metrics": scored,
        "ood": ood_share(predictions),
        "unreadable": unreadable,
        "overlap": runs.split_overlap(run, predictions["sha256"], predictions["image_name"]),
        "skipped_rows": skipped or {},
    }


def evaluate_run(
    run: runs.Run,
    dataset: data.Dataset,
    tta: bool | None = None,
    n_bootstrap: int = 1000,
    on_batch: BatchCallback | None = None,
    skipped: dict | None = None,
) -> tuple[dict, pd.DataFrame]:
    """Score `dataset` with `run` at its own threshold: (record, per-image predictions).

    `skipped` is what `load_evaluation_dataset` skipped, kept in the record.
    """
    predictor = Predictor(run)
    use_tta = predictor.default_tta if tta is None else tta
    predictions, unreadable = score_images(predictor, dataset.frame, use_tta, on_batch)
    record = evaluation_record(
        run,
        predictions,
        dataset=dataset_name(dataset),
        tta=use_tta,
        unreadable=unreadable,
        skipped=skipped,
        n_bootstrap=n_bootstrap,
    )
    return record, predictions


def save_evaluation(run: runs.Run, record: dict, predictions: pd.DataFrame) -> Path:
    """Store the evaluation in the run's folder, where the app finds and indexes it."""
    return runs.write_evaluation(run.folder, record, predictions)
