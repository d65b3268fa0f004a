"""Two-phase transfer learning with honest evaluation, written to a run folder.

1. Group-aware split (patients, lesions and near-duplicate images never cross splits).
2. Head on frozen-backbone features, cached on disk and computed from unaugmented images.
3. Fine-tuning of the backbone's top layers with augmentation, at a low learning rate.
4. Calibration and the operating threshold on the validation split; the test split is
   scored once, at the end, with that threshold.

The steps themselves live in `core.train.recipe`, shared with the source cross-validation.
"""

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np

from core.inputs import data, images, splits
from core.modelling.model import resolve_weights
from core.progress import Progress, ProgressCallback
from core.serving.inference import load_run_model
from core.storage import runs, spreadsheet
from core.storage.card import build_card, ood_card
from core.train import distributed
from core.train.crossval import crossval_by_source, fold_config
from core.train.recipe import fit_detector, fit_model, prepare_data, score_splits
from core.train.train_config import TrainConfig


@dataclass(frozen=True)
class TrainResult:
    run_id: str
    folder: str
    test_metrics: dict


def new_run_id(backbone: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{backbone.replace('_', '-')}-{secrets.token_hex(2)}"


def write_run_files(folder: Path, model, card, history, prepared, scores) -> None:
    # An uncompiled twin sharing the layers is saved, so the file carries no optimizer state
    # (the Adam slots of the fine-tuned layers would double its size for nothing).
    keras.Model(model.input, model.outputs, name=model.name).save(folder / runs.MODEL_FILE)
    test_frame = prepared.dataset.frame.iloc[prepared.indices("test")]
    tests = test_frame.assign(probability=scores.test_probabilities)
    runs.write_tables(folder, history, tests, prepared.split.to_frame())
    if scores.detector.ood is not None:
        scores.detector.ood.save(folder)
    runs.write_card(folder, card)


def source_crossval_or_none(train_config, prepared, weights, report, should_stop):
    """The run's own source cross-validation, or None when the data cannot have one.

    A single-source dataset (a user's own folders) then gets a threshold from its
    validation split alone, and the card says so.
    """
    try:
        result = crossval_by_source(
            fold_config(train_config), prepared, weights, report, should_stop
        )
    except ValueError as error:
        report(Progress("crossval", f"No held-out-source threshold: {error}"))
        return None
    return result if result.folds else None


def train(
    train_config: TrainConfig,
    report: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    models_directory: Path | None = None,
    activate: bool = False,
) -> TrainResult:
    """Train, evaluate and save one run; the active model changes only if `activate`.

    With the "held_out_sources" threshold rule, a source cross-validation of the same recipe
    (shorter fine-tuning) runs first; its table is saved with the run and its pooled
    held-out predictions set the threshold.
    """
    train_config.validate()
    if train_config.strategy == "multiworker":
        # Before any other TensorFlow op: the strategy configures the collectives.
        models_directory, activate = distributed.worker_output(models_directory, activate)
    report = report or (lambda progress: None)
    should_stop = should_stop or (lambda: False)
    started = time.perf_counter()
    # Before any data work: a missing download should fail in a second, not after hashing.
    weights = resolve_weights(train_config.backbone, train_config.image_size, train_config.weights)
    if weights.note:
        report(Progress("weights", weights.note))
    prepared = prepare_data(train_config, report)
    timings = {"prepare_seconds": round(time.perf_counter() - started, 1)}
    crossval = None
    if train_config.threshold_rule == "held_out_sources":
        phase_start = time.perf_counter()
        crossval = source_crossval_or_none(train_config, prepared, weights, report, should_stop)
        timings["crossval_seconds"] = round(time.perf_counter() - phase_start, 1)
    model, history, fit_timings = fit_model(train_config, prepared, weights, report, should_stop)
    timings.update(fit_timings)
    phase_start = time.perf_counter()
    held_out = crossval.pooled() if crossval is not None else None
    scores = score_splits(model, train_config, prepared, report, held_out)
    timings["evaluate_seconds"] = round(time.perf_counter() - phase_start, 1)
    timings["total_seconds"] = round(time.perf_counter() - started, 1)
    run_id = new_run_id(train_config.backbone)
    card = build_card(run_id, train_config, prepared, scores, timings, weights, crossval)
    folder = runs.save_run(
        run_id,
        lambda partial: write_run_files(partial, model, card, history, prepared, scores),
        models_directory,
    )
    if crossval is not None:
        runs.write_json_atomic(folder / runs.CROSSVAL_FILE, crossval.to_json(scores.threshold))
    if activate:
        runs.set_active(run_id, models_directory)
    report(Progress("done", f"Run {run_id} saved"))
    return TrainResult(run_id, str(folder), scores.test_metrics)


def split_arrays(run: runs.Run, train_config: TrainConfig) -> dict:
    """The decoded images of a run's train, val and test splits, from its split.csv."""
    dataset = data.load_dataset(train_config.data_dir, train_config.csv, train_config.sites)
    split = spreadsheet.read_csv(run.folder / runs.SPLIT_FILE).set_index("image_name")["split"]
    frame = dataset.frame[dataset.frame["image_name"].isin(split.index)]
    if len(frame) < len(split):
        raise data.DatasetError(
            f"{len(split) - len(frame)} images of the run's split.csv are not in the data"
        )
    names = frame["image_name"].to_numpy()
    decoded = images.decode_many(
        frame["path"].tolist(), train_config.image_size, train_config.resample
    )
    arrays = np.stack([item for item in decoded if isinstance(item, np.ndarray)])
    if len(arrays) != len(frame):
        raise data.DatasetError("some of the run's images are unreadable now")
    return {name: arrays[split.loc[names].to_numpy() == name] for name in splits.SPLIT_NAMES}


def refit_ood(reference: str, data_dir=None, csv=None, report=None) -> dict:
    """Give an existing run the current OOD detector, fitted on its own splits.

    The model, its threshold and its metrics stay as they are; `ood.npz` and the card's
    `ood` entry are replaced.
    """
    report = report or (lambda progress: None)
    run = runs.resolve_run(reference)
    values = dict(run.card.config)
    if data_dir:
        values.update(data_dir=str(data_dir), csv=str(csv) if csv else None)
    train_config = TrainConfig.from_dict(values)
    arrays = split_arrays(run, train_config)
    model = load_run_model(run)
    detector = fit_detector(model, train_config, arrays, report)
    entry = ood_card(detector)
    if detector.ood is None or entry is None:
        raise ValueError(f"run {run.run_id}: too few training images for an OOD detector")
    detector.ood.save(run.folder)
    runs.write_card(run.folder, run.card.replace(ood=entry))
    return entry
