"""Ensemble runs: two or more trained runs combined into one model, scored like a trained run.

`core.modelling.model.build_ensemble` nests the members' models in one `.keras` file (raw RGB
in, one malignant probability out), so Predict, the CLI, Evaluate, Compare, History and case reports
use an ensemble like any other run. Here it gets what a training run gets: calibration and the
threshold on the validation split, one OOD detector on the members' features side by side,
and the test split scored once.

The members must have been trained on the same data with the same split: the ensemble's
validation and test images are then ones that no member trained on.

Held-out-source figures of an ensemble come from its members' fine-tuned folds (`crossval
--source S --predictions FILE`): on each source that every member held out, the fold models'
calibrated probabilities are combined in logit space, as the ensemble combines its members.
"""

import dataclasses
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from core.analysis.calibration import mean_logit
from core.analysis.metrics import evaluate
from core.modelling.model import ResolvedWeights, build_ensemble
from core.progress import Progress, ProgressCallback
from core.serving.inference import load_run_model
from core.storage import runs, spreadsheet
from core.storage.card import Card, build_card
from core.train import crossval
from core.train.recipe import PreparedData, prepare_data, score_splits
from core.train.train_config import TrainConfig
from core.train.training import TrainResult, new_run_id, write_run_files

BACKBONE = "ensemble"
COMBINATION = (
    "sigmoid of the members' mean logit (their uncalibrated malignant outputs), then the "
    "ensemble's own calibration; diagnoses: the members' mean distribution"
)
# What must agree between members for their split to be one split.
SHARED_CONFIG = ("data_dir", "csv", "sites", "seed", "fractions", "resample", "target")


def check_members(members: list[runs.Run]) -> None:
    """Two or more distinct single-model runs of the same data, split and target."""
    ids = [run.run_id for run in members]
    if len(set(ids)) < 2:
        raise ValueError(f"an ensemble needs two or more different runs, got {ids}")
    nested = [run.run_id for run in members if run.card.is_ensemble]
    if nested:
        raise ValueError(f"{nested} are ensembles already: combine their members instead")
    for key in SHARED_CONFIG:
        values = {repr(run.card.config.get(key)) for run in members}
        if len(values) > 1:
            raise ValueError(
                f"the members differ in {key} ({sorted(values)}): an ensemble needs runs "
                "trained on the same data and split"
            )
    fingerprints = {run.card.data.get("fingerprint") for run in members}
    if len(fingerprints) > 1:
        raise ValueError("the members were trained on different images (data fingerprints)")


def ensemble_config(members: list[runs.Run], data_dir, csv, threshold_rule: str) -> TrainConfig:
    """The first member's recipe, at the largest member's image size, to score the ensemble."""
    values = dict(members[0].card.config)
    size = max(run.card.image_size for run in members)
    values.update(backbone=BACKBONE, image_size=size, threshold_rule=threshold_rule)
    if data_dir:
        values.update(data_dir=str(data_dir), csv=str(csv) if csv else None)
    return TrainConfig.from_dict(values)


def check_same_split(members: list[runs.Run], prepared: PreparedData) -> None:
    """The data's split, made again, must be every member's split.csv, image by image."""
    made = prepared.split.to_frame().set_index("image_name")["split"].sort_index()
    for run in members:
        stored = spreadsheet.read_csv(run.folder / runs.SPLIT_FILE, dtype={"image_name": str})
        split = stored.set_index("image_name")["split"].sort_index()
        if not split.equals(made):
            raise ValueError(
                f"run {run.run_id} was trained on another split of these images: its "
                "validation or test images may be another member's training images"
            )


def fold_ensemble(predictions: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Members' held-out fold predictions, paired by source and image, combined in logit space.

    `predictions` maps a member's run id to its rows (held_out, image_name, label,
    probability); only sources that every member held out are kept.
    """
    indexed = {
        run_id: frame.set_index(["held_out", "image_name"])
        for run_id, frame in predictions.items()
    }
    shared = sorted(set.intersection(*(set(frame.index) for frame in indexed.values())))
    if not shared:
        raise ValueError("the members' held-out predictions share no source and image")
    labels = pd.DataFrame(
        {run_id: frame.loc[shared, "label"] for run_id, frame in indexed.items()}
    )
    if (labels.nunique(axis=1) > 1).any():
        raise ValueError("the members' held-out predictions disagree on some images' labels")
    stacked = np.stack([frame.loc[shared, "probability"].to_numpy() for frame in indexed.values()])
    combined = pd.DataFrame(
        {"label": labels.iloc[:, 0].astype(int), "probability": mean_logit(stacked)},
        index=pd.MultiIndex.from_tuples(shared, names=["held_out", "image_name"]),
    )
    return combined.reset_index()


def fold_record(combined: pd.DataFrame, threshold: float, config: dict) -> dict:
    """The held-out-source record (as `crossval_fine_tuned.json`) of the fold ensembles."""
    folds = []
    for source, rows in combined.groupby("held_out"):
        scored = evaluate(rows["label"], rows["probability"], threshold)
        folds.append(
            {
                "held_out": source,
                "threshold": threshold,
                "metrics": scored,
                "at_run_threshold": crossval.at_threshold(
                    rows["label"], rows["probability"], threshold
                ),
            }
        )
    return {
        "by": "source",
        "preset": "full",
        "kind": "fold ensembles of the members' fine-tuned folds, combined in logit space",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config,
        "min_cases": crossval.MIN_CASES,
        "folds": folds,
        "summary": crossval.summarise(folds),
        "skipped": [],
        "run_threshold": threshold,
    }


def member_entry(run: runs.Run) -> dict:
    """What the ensemble's card says of one member: its recipe and its own figures."""
    test = run.card.test_metrics
    summary = {key: test.get(key) for key in ("n", "n_positive", "roc_auc", "sensitivity")}
    summary["specificity"] = test.get("specificity")
    summary["intervals"] = {"roc_auc": (test.get("intervals") or {}).get("roc_auc")}
    return {
        "run_id": run.run_id,
        "backbone": run.card.backbone,
        "image_size": run.card.image_size,
        "threshold": run.card.threshold,
        "metrics": {"test": summary},
        "crossval": run.card.crossval,
        "crossval_fine_tuned": run.card.crossval_fine_tuned,
    }


def ensemble_card(run_id, members, train_config, prepared, scores, timings, folds) -> Card:
    card = build_card(run_id, train_config, prepared, scores, timings, ResolvedWeights(None, None))
    return card.replace(
        backbone=BACKBONE,
        weights="the members'",
        members=[member_entry(run) for run in members],
        ensemble={"combination": COMBINATION, "grad_cam": "Grad-CAM: the members' mean map"},
        crossval=None,
        crossval_fine_tuned=None if folds is None else folds["summary"],
    )


def read_held_out(paths_by_member: dict[str, list[str]], directory=None) -> dict:
    """Each member's fold prediction CSVs as one frame, keyed by the member's run id."""
    return {
        runs.resolve_run(member, directory).run_id: pd.concat(
            [spreadsheet.read_csv(path, dtype={"image_name": str}) for path in paths]
        )
        for member, paths in paths_by_member.items()
    }


def build_ensemble_run(
    references: list[str],
    held_out: dict[str, list[str]] | None = None,
    report: ProgressCallback | None = None,
    models_directory: Path | None = None,
    activate: bool = False,
    data_dir=None,
    csv=None,
) -> TrainResult:
    """Combine the runs, score the ensemble on their shared split and save it as a run.

    `held_out` maps a member to its fine-tuned fold prediction CSVs; with them the threshold
    is the lower of those reaching the target sensitivity on the validation split and on the
    fold ensembles' pooled predictions (the "held_out_sources" rule), and the card gets their
    figures. Without them the threshold comes from the validation split alone.
    """
    report = report or (lambda progress: None)
    started = time.perf_counter()
    members = [runs.resolve_run(reference, models_directory) for reference in references]
    check_members(members)
    folds = read_held_out(held_out or {}, models_directory)
    if folds and set(folds) != {run.run_id for run in members}:
        raise ValueError("give held-out fold predictions for every member, or for none")
    # With fold predictions the threshold also holds on sources the members never saw.
    rule = "held_out_sources" if folds else "sensitivity"
    train_config = ensemble_config(members, data_dir, csv, rule)
    prepared = prepare_data(train_config, report)
    check_same_split(members, prepared)
    report(Progress("data", f"Combining {len(members)} members"))
    model = build_ensemble([load_run_model(run) for run in members])
    combined = fold_ensemble(folds) if folds else None
    pooled = None
    if combined is not None:
        pooled = (combined["label"].to_numpy(), combined["probability"].to_numpy())
    scores = score_splits(model, train_config, prepared, report, pooled)
    timings = {"total_seconds": round(time.perf_counter() - started, 1)}
    run_id = new_run_id(BACKBONE)
    record = None
    if combined is not None:
        record = fold_record(combined, scores.threshold, dataclasses.asdict(train_config))
    card = ensemble_card(run_id, members, train_config, prepared, scores, timings, record)
    folder = runs.save_run(
        run_id,
        lambda partial: write_run_files(partial, model, card, [], prepared, scores),
        models_directory,
    )
    if record is not None:
        runs.write_json_atomic(folder / runs.CROSSVAL_FINE_TUNED_FILE, record)
    if activate:
        runs.set_active(run_id, models_directory)
    report(Progress("done", f"Run {run_id} saved"))
    return TrainResult(run_id, str(folder), scores.test_metrics)
