"""A clinic's own operating point: a threshold chosen on its own labelled images.

The card's threshold was chosen on the training sources, and a threshold does not travel well
to another clinic's patients and dermatoscopes (the held-out-source table in the README). A
clinic with at least MIN_CASES malignant and MIN_CASES benign images of its own, none of them
seen by the run in training or validation, sets its installation's threshold from them: the
highest threshold that reaches the target sensitivity on that set.

The adopted operating points are local state, one file beside `active.local.json`
(`OPERATING_POINTS_FILE`, ignored by git), never written into a run folder: a committed run
stays as it was trained. `threshold_for` is what prediction labels with.
"""

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from core.analysis.calibration import choose_threshold
from core.analysis.metrics import threshold_metrics, wilson_interval
from core.storage import runs

OPERATING_POINTS_FILE = "operating_points.local.json"
# Fewer cases of a class than this give a threshold (and figures) too uncertain to adopt.
MIN_CASES = 30
DEFAULT_SENSITIVITY = 0.90
CARD, LOCAL = "card", "local"
THRESHOLD_SOURCES = (CARD, LOCAL)


@dataclass(frozen=True)
class Threshold:
    """The threshold a run labels with, where it comes from, and a line saying so."""

    value: float
    source: str
    note: str


def _store_path(directory: Path | None = None) -> Path:
    return runs.models_dir(directory) / OPERATING_POINTS_FILE


def load_all(directory: Path | None = None) -> dict[str, dict]:
    """Every adopted operating point by run id; an unreadable file holds none."""
    try:
        payload = json.loads(_store_path(directory).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return payload if isinstance(payload, dict) else {}


def operating_point(run_id: str, directory: Path | None = None) -> dict | None:
    point = load_all(directory).get(run_id)
    return point if isinstance(point, dict) and "threshold" in point else None


def _describe(point: dict) -> str:
    where = f"evaluation {point['evaluation_id']}" if point.get("evaluation_id") else "data"
    return (
        f"local threshold {point['threshold']:.3f} from {where} {point['dataset']}, "
        f"{point['n']} images"
    )


def threshold_for(run: runs.Run, directory: Path | None = None) -> Threshold:
    """The adopted local threshold of `run` if there is one, else its card's."""
    point = operating_point(run.run_id, directory)
    if point is not None:
        return Threshold(float(point["threshold"]), LOCAL, _describe(point))
    value = run.card.threshold
    return Threshold(value, CARD, f"card threshold {value:.3f}")


def choose(
    run: runs.Run,
    predictions: pd.DataFrame,
    target_sensitivity: float = DEFAULT_SENSITIVITY,
    *,
    dataset: str,
    tta: bool,
    evaluation_id: str | None = None,
) -> dict:
    """The operating point these predictions give (`label`, `probability`, `sha256`,
    `image_name`), or ValueError saying why they cannot set one."""
    if not 0.5 <= target_sensitivity < 1.0:
        raise ValueError(f"target sensitivity must be in [0.5, 1), got {target_sensitivity}")
    check_set(run, predictions)
    labels = predictions["label"].to_numpy(dtype="int64")
    probabilities = predictions["probability"].to_numpy(dtype=float)
    threshold = choose_threshold(labels, probabilities, "sensitivity", target_sensitivity)
    at = threshold_metrics(labels, probabilities, threshold)
    return {
        "run_id": run.run_id,
        "threshold": threshold,
        "target_sensitivity": target_sensitivity,
        "sensitivity": at["sensitivity"],
        "specificity": at["specificity"],
        "intervals": {
            "sensitivity": wilson_interval(at["tp"], at["tp"] + at["fn"]),
            "specificity": wilson_interval(at["tn"], at["tn"] + at["fp"]),
        },
        "confusion": {name: at[name] for name in ("tn", "fp", "fn", "tp")},
        "n": len(labels),
        "n_malignant": at["tp"] + at["fn"],
        "n_benign": at["tn"] + at["fp"],
        "dataset": dataset,
        "evaluation_id": evaluation_id,
        "tta": tta,
        "card_threshold": run.card.threshold,
    }


def check_set(run: runs.Run, images: pd.DataFrame) -> None:
    """ValueError when these images (`label`, `sha256`, `image_name`) cannot set a threshold:
    too few of a class, or some of them seen by the run in training or validation."""
    labels = images["label"].to_numpy(dtype="int64")
    n_malignant, n_benign = int(labels.sum()), int((labels == 0).sum())
    if min(n_malignant, n_benign) < MIN_CASES:
        raise ValueError(
            f"a local threshold needs at least {MIN_CASES} malignant and {MIN_CASES} benign "
            f"images; this set has {n_malignant} malignant and {n_benign} benign"
        )
    overlap = runs.split_overlap(run, images["sha256"], images["image_name"])
    if overlap is None:
        raise ValueError(
            f"run {run.run_id} has no {runs.SPLIT_FILE}, so images it trained on cannot be "
            "told apart: a local threshold needs a run with its split"
        )
    seen = overlap["train"] + overlap["val"]
    if seen:
        raise ValueError(
            f"{seen} of these images were in run {run.run_id}'s training ({overlap['train']}) "
            f"or validation ({overlap['val']}) split (matched by {overlap['by']}): a threshold "
            "chosen on them would flatter the run; use images it never saw"
        )


def adopt(point: dict, directory: Path | None = None) -> dict:
    """Make `point` (from `choose`) the threshold of its run on this installation."""
    points = load_all(directory)
    stamped = {**point, "adopted_at": datetime.now(UTC).isoformat(timespec="seconds")}
    points[point["run_id"]] = stamped
    runs.write_json_atomic(_store_path(directory), points)
    return stamped


def clear(run_id: str, directory: Path | None = None) -> bool:
    """Go back to the card's threshold; False when no local threshold was set."""
    points = load_all(directory)
    if points.pop(run_id, None) is None:
        return False
    runs.write_json_atomic(_store_path(directory), points)
    return True
