"""Cross-validation by source: how the recipe does on a clinic whose images it never saw.

Each source with enough malignant images is held out in turn: the recipe trains on the other
sources (their usual grouped train and validation splits, the test split joining training),
chooses its threshold on its own validation split, and is scored once on the held-out source.
Groups (patients, lesions, near-duplicate images) are those of the whole dataset, so an image
of another source that is a near-duplicate of a held-out one is left out of training too.
"""

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from core.analysis.calibration import choose_threshold
from core.analysis.metrics import evaluate
from core.progress import Progress
from core.storage import runs, spreadsheet
from core.train.train_config import TARGET_SENSITIVITY, TrainConfig

# A held-out source needs this many images of each class for an AUC worth reporting.
MIN_CASES = 30
# Folds inside a training run (and --quick) train the head only: four folds of the full
# schedule would take four times as long as the run itself, and two fine-tune epochs never
# beat the head on validation on the shared data (their first epoch is warm-up).
FOLD_FINE_TUNE_EPOCHS = 0
EXCLUDED = "excluded"


@dataclass
class Fold:
    held_out: str
    train_sources: list[str]
    n_train: int
    n_val: int
    threshold: float
    val_roc_auc: float | None
    metrics: dict
    ood_flagged: float | None
    seconds: float
    labels: np.ndarray = field(repr=False)
    probabilities: np.ndarray = field(repr=False)
    image_names: np.ndarray = field(repr=False)

    def at_threshold(self, threshold: float) -> dict:
        """Sensitivity and specificity of this fold's predictions at another threshold."""
        return at_threshold(self.labels, self.probabilities, threshold)


def at_threshold(labels, probabilities, threshold: float) -> dict:
    """Sensitivity and specificity, with intervals, of held-out predictions at a threshold."""
    at = evaluate(labels, probabilities, threshold)
    return {
        "threshold": threshold,
        **{name: at[name] for name in ("sensitivity", "specificity")},
        "intervals": {name: at["intervals"][name] for name in ("sensitivity", "specificity")},
    }


@dataclass
class CrossvalResult:
    config: dict
    folds: list[Fold]
    skipped: list[dict]
    min_cases: int = MIN_CASES
    preset: str = "custom"

    def pooled(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Labels and calibrated probabilities of every held-out image, all folds together."""
        if not self.folds:
            return None
        labels = np.concatenate([fold.labels for fold in self.folds])
        return labels, np.concatenate([fold.probabilities for fold in self.folds])

    def rule_threshold(self, fold: Fold) -> float | None:
        """The held_out_sources rule's threshold for a run that never saw `fold`'s source.

        The lower of the fold's own validation threshold and the one reaching the target
        sensitivity on the other folds' pooled predictions: the threshold's choice never
        sees the source it is judged on, so its sensitivity there is an honest estimate.
        """
        others = [other for other in self.folds if other is not fold]
        if not others:
            return None
        labels = np.concatenate([other.labels for other in others])
        probabilities = np.concatenate([other.probabilities for other in others])
        target = float(self.config.get("target_sensitivity", TARGET_SENSITIVITY))
        return min(fold.threshold, choose_threshold(labels, probabilities, "sensitivity", target))

    def write_predictions(self, path) -> None:
        """Every held-out image's calibrated probability, one CSV row each, so that folds of
        different recipes (ensemble members, say) can be paired and combined later."""
        rows = [
            {"held_out": fold.held_out, "image_name": name, "label": int(label), "probability": p}
            for fold in self.folds
            for name, label, p in zip(
                fold.image_names, fold.labels, fold.probabilities, strict=True
            )
        ]
        columns = ["held_out", "image_name", "label", "probability"]
        spreadsheet.to_csv(pd.DataFrame(rows, columns=columns), path, index=False)

    def to_json(self, run_threshold: float | None = None) -> dict:
        folds = []
        for fold in self.folds:
            entry = {
                name: getattr(fold, name)
                for name in (
                    "held_out",
                    "train_sources",
                    "n_train",
                    "n_val",
                    "threshold",
                    "val_roc_auc",
                    "metrics",
                    "ood_flagged",
                    "seconds",
                )
            }
            if run_threshold is not None:
                entry["at_run_threshold"] = fold.at_threshold(run_threshold)
            rule_threshold = self.rule_threshold(fold)
            if rule_threshold is not None:
                entry["at_rule_threshold"] = fold.at_threshold(rule_threshold)
            folds.append(entry)
        payload = {
            "by": "source",
            "preset": self.preset,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": self.config,
            "min_cases": self.min_cases,
            "folds": folds,
            "summary": summarise(folds),
            "skipped": self.skipped,
        }
        if run_threshold is not None:
            payload["run_threshold"] = run_threshold
        return payload


def merge(records: list[dict], predictions: pd.DataFrame | None, run_threshold: float) -> dict:
    """Folds run one at a time (`crossval --source`, each its own JSON) as one record.

    They must share a preset and hold out different sources. With the folds' `--predictions`
    CSVs, each is also scored at the run's threshold (`at_run_threshold`).
    """
    if not records:
        raise ValueError("nothing to merge: give one or more crossval JSON files")
    presets = {record.get("preset") for record in records}
    if len(presets) > 1:
        raise ValueError(f"the files mix presets {sorted(map(str, presets))}: merge one kind")
    folds = [dict(fold) for record in records for fold in record["folds"]]
    held_out = [fold["held_out"] for fold in folds]
    if len(set(held_out)) < len(held_out):
        raise ValueError(f"a source is held out twice among {held_out}")
    for fold in folds:
        rows = (
            None
            if predictions is None
            else predictions[predictions["held_out"] == fold["held_out"]]
        )
        if rows is not None and len(rows):
            fold["at_run_threshold"] = at_threshold(
                rows["label"], rows["probability"], run_threshold
            )
    return {
        **{key: records[0][key] for key in ("by", "preset", "config", "min_cases")},
        "created_at": max(record["created_at"] for record in records),
        "folds": folds,
        "summary": summarise(folds),
        "skipped": [item for record in records for item in record.get("skipped", [])],
        "run_threshold": run_threshold,
    }


def summarise(folds: list[dict]) -> dict:
    """Mean and worst held-out ROC AUC and sensitivity (at the run's threshold when known),
    and under "rule" the same at the rule's threshold chosen without each source."""
    if not folds:
        return {}

    def values(entry: dict) -> dict:
        at = entry.get("at_run_threshold") or entry["metrics"]
        return {
            "roc_auc": entry["metrics"]["roc_auc"],
            "sensitivity": at["sensitivity"],
            "specificity": at["specificity"],
        }

    table = {entry["held_out"]: values(entry) for entry in folds}
    summary = mean_and_worst(table, ("roc_auc", "sensitivity", "specificity"))
    if all("at_rule_threshold" in entry for entry in folds):
        rule = {entry["held_out"]: entry["at_rule_threshold"] for entry in folds}
        summary["rule"] = mean_and_worst(rule, ("sensitivity", "specificity"))
    return summary


def mean_and_worst(table: dict[str, dict], names: tuple[str, ...]) -> dict:
    """{"mean": {name: ...}, "worst": {name: ..., name_source: ...}} over a table's rows."""
    mean = {name: float(np.mean([row[name] for row in table.values()])) for name in names}
    worst: dict = {}
    for name in names[:2]:
        source = min(table, key=lambda key: table[key][name])
        worst[name], worst[f"{name}_source"] = table[source][name], source
    return {"mean": mean, "worst": worst}


def held_out_sources(
    frame, min_cases: int = MIN_CASES, only: tuple[str, ...] = ()
) -> tuple[list[str], list[dict]]:
    """Sources with enough of both classes to score, and why the others are not held out.

    `only` limits the folds to those sources (say, a user's own clinic).
    """
    present = set(frame["source"].unique())
    unknown = sorted(set(only) - present)
    if unknown:
        raise ValueError(f"no images from source(s) {unknown}; the data has {sorted(present)}")
    chosen, skipped = [], []
    sources = sorted(source for source in present if source and (not only or source in only))
    for source in sources:
        labels = frame.loc[frame["source"] == source, "label"]
        malignant, benign = int(labels.sum()), int((labels == 0).sum())
        if min(malignant, benign) < min_cases:
            reason = (
                f"{malignant} malignant and {benign} benign images; holding a source out "
                f"needs {min_cases} of each"
            )
            skipped.append({"source": source, "reason": reason})
        else:
            chosen.append(source)
    return chosen, skipped


def fold_split(split: np.ndarray, groups: np.ndarray, sources: np.ndarray, source: str):
    """The held-out source becomes "test"; images grouped with it from elsewhere are excluded."""
    held_groups = np.unique(groups[sources == source])
    in_held_group = np.isin(groups, held_groups)
    fold = np.where(split == "test", "train", split).astype(object)
    fold[in_held_group] = EXCLUDED
    fold[in_held_group & (sources == source)] = "test"
    return fold


def fold_config(train_config: TrainConfig) -> TrainConfig:
    """The recipe of a run's own folds: the same, with at most FOLD_FINE_TUNE_EPOCHS epochs."""
    epochs = min(train_config.fine_tune_epochs, FOLD_FINE_TUNE_EPOCHS)
    # Dihedral TTA costs 8 passes per image over every held-out source: flips are enough here.
    return dataclasses.replace(
        train_config, fine_tune_epochs=epochs, tta_views="flips", threshold_rule="sensitivity"
    )


def _fold_data(prepared, source: str):
    frame = prepared.dataset.frame
    split = fold_split(
        prepared.split.split, prepared.split.groups, frame["source"].to_numpy(), source
    )
    return dataclasses.replace(prepared, split=dataclasses.replace(prepared.split, split=split))


def run_fold(train_config, prepared, weights, source, report, should_stop) -> Fold:
    """Train on every other source and score the held-out one at the fold's own threshold."""
    # The recipe loads TensorFlow: imported when a fold runs, so that merging and summarising
    # records (`crossval-merge`) never loads it.
    from core.train.recipe import fit_model, score_splits

    started = time.perf_counter()
    fold = _fold_data(prepared, source)

    def fold_report(progress) -> None:
        # One stage for the whole fold, without epoch logs: a live learning curve shows the
        # run's own epochs only.
        message = f"Held out {source}: {progress.message}"
        report(dataclasses.replace(progress, stage="crossval", message=message, logs={}))

    report(Progress("crossval", f"Holding out {source}: training on the other sources"))
    model, _, _ = fit_model(train_config, fold, weights, fold_report, should_stop)
    scores = score_splits(model, train_config, fold, fold_report)
    frame = fold.dataset.frame
    train_rows = fold.indices("train")
    test_rows = fold.indices("test")
    return Fold(
        held_out=source,
        train_sources=sorted(set(frame["source"].iloc[train_rows])),
        n_train=len(train_rows),
        n_val=len(fold.indices("val")),
        threshold=scores.threshold,
        val_roc_auc=scores.val_metrics["roc_auc"],
        metrics={key: value for key, value in scores.test_metrics.items() if key != "subgroups"},
        ood_flagged=scores.detector.flagged["test"],
        seconds=round(time.perf_counter() - started, 1),
        labels=fold.labels[test_rows],
        probabilities=np.asarray(scores.test_probabilities),
        image_names=frame["image_name"].to_numpy()[test_rows],
    )


def crossval_by_source(
    train_config: TrainConfig,
    prepared,
    weights,
    report,
    should_stop,
    min_cases: int = MIN_CASES,
    preset: str = "custom",
    only: tuple[str, ...] = (),
) -> CrossvalResult:
    """Hold each eligible source out in turn; ValueError when none can be held out."""
    frame = prepared.dataset.frame
    sources, skipped = held_out_sources(frame, min_cases, only)
    if not sources or frame["source"].nunique() < 2:
        raise ValueError(
            "cross-validation by source needs two or more sources (the `source` column), "
            f"one of them with {min_cases} malignant and {min_cases} benign images"
        )
    folds = []
    for source in sources:
        try:
            folds.append(run_fold(train_config, prepared, weights, source, report, should_stop))
        except ValueError as error:
            # The other sources may lack a class in training or validation: say so, go on.
            skipped.append({"source": source, "reason": f"fold failed: {error}"})
    return CrossvalResult(dataclasses.asdict(train_config), folds, skipped, min_cases, preset)


def run_crossval(
    train_config,
    run_reference=None,
    quick=False,
    report=None,
    should_stop=None,
    min_cases: int = MIN_CASES,
    only: tuple[str, ...] = (),
    predictions_path=None,
):
    """`python -m core crossval`: the JSON record, saved in the run's folder with a run;
    with `predictions_path`, the held-out images' probabilities as CSV too.

    With a run, each fold is also scored at the run's own threshold (`at_run_threshold`).
    """
    # Imported here for the same reason as in `run_fold`: both load TensorFlow.
    from core.modelling.model import resolve_weights
    from core.train.recipe import prepare_data

    report = report or (lambda progress: None)
    train_config.validate()
    if train_config.strategy == "multiworker":
        # Every worker would run every fold and write the same JSON: one machine does it.
        raise ValueError("crossval runs on one machine: use --strategy default or mirrored")
    if quick:
        train_config = fold_config(train_config)
    elif train_config.threshold_rule == "held_out_sources":
        # The folds choose their own threshold on their own validation split.
        train_config = dataclasses.replace(train_config, threshold_rule="sensitivity")
    weights = resolve_weights(train_config.backbone, train_config.image_size, train_config.weights)
    if weights.note:
        report(Progress("weights", weights.note))
    prepared = prepare_data(train_config, report)
    result = crossval_by_source(
        train_config,
        prepared,
        weights,
        report,
        should_stop or (lambda: False),
        min_cases,
        preset="quick" if quick else "full",
        only=only,
    )
    if predictions_path is not None:
        result.write_predictions(predictions_path)
    if run_reference is None:
        return result.to_json()
    run = runs.resolve_run(run_reference)
    payload = result.to_json(run.card.threshold)
    save_with_run(run, payload)
    return payload


def save_with_run(run, payload: dict) -> str:
    """The one writer of a finished run's held-out-source record; returns the file name.

    Folds of the recipe as trained (preset "full") go to crossval_fine_tuned.json, head-only
    ones to crossval.json, and the card gets the summary of that kind, so that listing runs
    never opens the fold files.
    """
    fine_tuned = payload["preset"] == "full"
    name = runs.CROSSVAL_FINE_TUNED_FILE if fine_tuned else runs.CROSSVAL_FILE
    runs.write_json_atomic(run.folder / name, payload)
    summary_key = "crossval_fine_tuned" if fine_tuned else "crossval"
    runs.write_card(run.folder, run.card.replace(**{summary_key: payload["summary"]}))
    return name
