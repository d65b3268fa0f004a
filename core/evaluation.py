"""Evaluate a trained run on any labelled dataset, at the run's own threshold."""

from pathlib import Path

import numpy as np

from core import data, diagnoses
from core.inference import Predictor
from core.metrics import evaluate
from core.runs import resolve_run

SUBGROUP_COLUMNS = ("site", "source")


def evaluate_dataset(
    data_dir: str | Path,
    csv_path: str | Path | None = None,
    sites: tuple[str, ...] = ("all",),
    model: str | None = None,
    tta: bool | None = None,
    n_bootstrap: int = 1000,
) -> dict:
    """Metrics over every labelled, readable image; the threshold is never re-tuned here."""
    dataset = data.load_dataset(data_dir, csv_path, sites)
    predictor = Predictor(resolve_run(model))
    frame = dataset.frame
    items = list(zip(frame["image_name"], frame["path"], strict=True))
    predictions = list(predictor.predict_many(items, tta=tta))
    scored = np.array([prediction.error == "" for prediction in predictions])
    probabilities = np.array([p.probability for p in predictions if not p.error], dtype=float)
    kept = frame[scored]
    subgroups = {name: kept[name].tolist() for name in SUBGROUP_COLUMNS}
    subgroups["diagnosis"] = diagnoses.vocabulary_names(kept["diagnosis"], kept["label"])
    metrics = evaluate(
        kept["label"].to_numpy(),
        probabilities,
        predictor.threshold,
        subgroups=subgroups,
        n_bootstrap=n_bootstrap,
    )
    metrics["model"] = predictor.run.run_id
    metrics["tta"] = predictor.default_tta if tta is None else tta
    metrics["unreadable"] = [p.file for p in predictions if p.error]
    return metrics
