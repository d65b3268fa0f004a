"""The model card: everything needed to use and judge a run, as plain JSON."""

import platform
import subprocess
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata

from core import config, data
from core.diagnoses import DIAGNOSIS_NAMES

LIBRARIES = ("tensorflow-cpu", "tensorflow", "keras", "numpy", "scikit-learn", "pillow", "pandas")


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Installed versions from package metadata (nothing is imported)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=config.REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def describe_path(path) -> str:
    """A data path relative to the repository when inside it, so cards stay portable."""
    resolved = config.REPO_ROOT.joinpath(path).resolve()
    try:
        return str(resolved.relative_to(config.REPO_ROOT))
    except ValueError:
        return str(path)


def _outputs(train_config) -> str:
    first = "first output (N, 1): malignant probability before calibration; apply `calibration`"
    if train_config.target == "binary":
        return first
    return (
        f"{first}. Second output (N, {len(DIAGNOSIS_NAMES)}): probabilities of `diagnoses`; "
        "the first output is the sum of the malignant ones"
    )


def ood_card(detector) -> dict | None:
    """The card's account of the OOD detector (None when the data was too small for one)."""
    if detector.ood is None:
        return None
    return {
        "threshold": detector.ood.threshold,
        "detail_range": detector.ood.detail_range,
        "method": detector.ood.method,
        "flagged": detector.flagged,
        "non_dermoscopy_check": detector.check,
    }


def build_card(run_id, train_config, prepared, scores, timings, weights, crossval=None) -> dict:
    frame = prepared.dataset.frame
    return {
        "run_id": run_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "backbone": train_config.backbone,
        "image_size": train_config.image_size,
        "resample": train_config.resample,
        "weights": train_config.weights,
        "weights_file": weights.file,
        "weights_note": weights.note,
        "target": train_config.target,
        "diagnoses": list(DIAGNOSIS_NAMES) if train_config.target == "diagnosis" else None,
        "input": "RGB float values 0-255, shape (N, S, S, 3), whole image resized to S x S",
        "output": _outputs(train_config),
        "tta": train_config.tta,
        "tta_views": train_config.tta_views,
        "threshold": {
            "value": scores.threshold,
            "rule": train_config.threshold_rule,
            "target_sensitivity": train_config.target_sensitivity,
            "chosen_on": f"{scores.threshold_note}; calibrated probabilities, same TTA setting",
        },
        "calibration": scores.calibration,
        "imbalance": train_config.imbalance,
        "data": {
            "source": describe_path(train_config.data_dir),
            "csv": describe_path(train_config.csv) if train_config.csv else None,
            "sites": list(train_config.sites),
            "layout": prepared.dataset.layout,
            "fingerprint": data.dataset_fingerprint(frame),
            "n_images": len(frame),
            "class_balance": {
                "benign": int((frame["label"] == 0).sum()),
                "malignant": int((frame["label"] == 1).sum()),
            },
        },
        "split": {
            "seed": train_config.seed,
            "fractions": list(train_config.fractions),
            "group_by": list(prepared.split.group_by),
            "sizes": prepared.split.sizes(),
        },
        "config": asdict(train_config),
        # What `config.input_pipeline` resolved to: "memory" or "stream".
        "input_pipeline": prepared.input_pipeline,
        "metrics": {"test": scores.test_metrics, "val": scores.val_metrics},
        "ood": ood_card(scores.detector),
        "crossval": None if crossval is None else crossval.to_json(scores.threshold)["summary"],
        "versions": library_versions(),
        "git_commit": git_commit(),
        "timings": timings,
        "license": "Trained on CC BY-NC 4.0 images: non-commercial use only.",
    }
