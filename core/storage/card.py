"""The model card: everything needed to use and judge a run, as plain JSON.

`build_card` writes a card and `Card` reads one: the rest of the code asks the card's
properties, never its keys, so that a card from an older version reads the same as a new one
(`OLD_CARD_DEFAULTS`).
"""

import platform
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from core import config
from core.inputs import data
from core.inputs.diagnoses import DIAGNOSIS_NAMES
from core.inputs.labels import CLASS_NAMES

LIBRARIES = ("tensorflow-cpu", "tensorflow", "keras", "numpy", "scikit-learn", "pillow", "pandas")
# 2: the first card with a version; a card without one reads as version 1.
CARD_VERSION = 2
# What a card meant by leaving a key out, for the keys older versions did not write.
OLD_CARD_DEFAULTS: dict[str, Any] = {
    "version": 1,
    # Before dihedral TTA, TTA averaged the image and its two mirror images.
    "tta_views": "flips",
    "resample": "bilinear",
    "tta": False,
    # Before the diagnosis target, every model learnt benign or malignant only.
    "target": "binary",
    "diagnoses": None,
    "crossval": None,
    "crossval_fine_tuned": None,
    "ood": None,
    # Only an ensemble's card lists members.
    "members": [],
}
# A card that lacks these cannot be used at all.
REQUIRED_KEYS = ("image_size", "threshold")


@dataclass(frozen=True)
class Member:
    """One run of an ensemble, as the ensemble's card lists it: the keys of the member's own
    card (`run_id`, `backbone`, `image_size`, `metrics`, `crossval`, `crossval_fine_tuned`)."""

    run_id: str
    backbone: str
    image_size: int
    test_metrics: dict
    crossval: dict | None
    crossval_fine_tuned: dict | None

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> "Member":
        return cls(
            run_id=str(entry["run_id"]),
            backbone=str(entry["backbone"]),
            image_size=int(entry["image_size"]),
            test_metrics=_test_metrics(entry),
            crossval=entry.get("crossval"),
            crossval_fine_tuned=entry.get("crossval_fine_tuned"),
        )


def _test_metrics(entries: Mapping[str, Any]) -> dict:
    return (entries.get("metrics") or {}).get("test") or {}


@dataclass(frozen=True)
class Card:
    """A run's card.json as read: `entries` is the JSON object, never changed in place."""

    entries: Mapping[str, Any]

    @classmethod
    def from_dict(cls, payload: Any) -> "Card":
        """ValueError when `payload` is not a card object with an image size and threshold."""
        if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED_KEYS):
            raise ValueError("lacks image_size or threshold")
        return cls(payload)

    @classmethod
    def minimal(cls, run_id: str, image_size: int, threshold: float, **entries) -> "Card":
        """A card with only what listing and scoring need, for benchmarks and tests; `entries`
        add or replace top-level keys (a model to load also needs `calibration`)."""
        base = {
            "version": CARD_VERSION,
            "run_id": run_id,
            "backbone": config.DEFAULT_BACKBONE,
            "image_size": image_size,
            "threshold": {"value": threshold, "rule": "youden", "target_sensitivity": None},
        }
        return cls.from_dict({**base, **entries})

    def to_dict(self) -> dict:
        """The JSON object to write: what was read, without the old-card defaults."""
        return dict(self.entries)

    def replace(self, **entries) -> "Card":
        """A copy with these top-level keys replaced (a refreshed summary, a new detector)."""
        return Card({**self.entries, **entries})

    def _entry(self, name: str) -> Any:
        return self.entries.get(name, OLD_CARD_DEFAULTS.get(name))

    @property
    def version(self) -> int:
        return int(self._entry("version"))

    @property
    def run_id(self) -> str | None:
        return self._entry("run_id")

    @property
    def created_at(self) -> str | None:
        return self._entry("created_at")

    @property
    def backbone(self) -> str | None:
        return self._entry("backbone")

    @property
    def weights(self) -> str | None:
        return self._entry("weights")

    @property
    def target(self) -> str:
        return self._entry("target")

    @property
    def image_size(self) -> int:
        return int(self.entries["image_size"])

    @property
    def resample(self) -> str:
        return self._entry("resample")

    @property
    def tta(self) -> bool:
        return bool(self._entry("tta"))

    @property
    def tta_views(self) -> str:
        return self._entry("tta_views")

    @property
    def threshold(self) -> float:
        """The operating threshold chosen when the run was trained."""
        return float(self.entries["threshold"]["value"])

    @property
    def threshold_rule(self) -> str | None:
        return self.entries["threshold"].get("rule")

    @property
    def calibration(self) -> dict:
        return self.entries["calibration"]

    @property
    def diagnoses(self) -> tuple[str, ...]:
        """The diagnosis model's class names in output order; () for a binary model."""
        return tuple(self._entry("diagnoses") or ())

    @property
    def test_metrics(self) -> dict:
        """The held-out test split's evaluation; {} when the card has none."""
        return _test_metrics(self.entries)

    @property
    def val_metrics(self) -> dict:
        return (self._entry("metrics") or {}).get("val") or {}

    @property
    def data(self) -> dict:
        """What the run was trained on: source, sites, image count, class balance."""
        return self._entry("data") or {}

    @property
    def config(self) -> dict:
        """The recipe (`TrainConfig` as JSON)."""
        return self.entries["config"]

    @property
    def ood(self) -> dict | None:
        return self._entry("ood")

    @property
    def ood_threshold(self) -> float | None:
        return (self.ood or {}).get("threshold")

    @property
    def crossval(self) -> dict | None:
        """The summary of the head-only held-out-source folds (crossval.json), if any."""
        return self._entry("crossval")

    @property
    def crossval_fine_tuned(self) -> dict | None:
        """The summary of the folds of the recipe as trained (crossval_fine_tuned.json)."""
        return self._entry("crossval_fine_tuned")

    @property
    def members(self) -> tuple[Member, ...]:
        """An ensemble's runs; () for a single run."""
        return tuple(Member.from_dict(entry) for entry in self._entry("members"))

    @property
    def is_ensemble(self) -> bool:
        return bool(self.members)

    @property
    def combination(self) -> str:
        """How an ensemble combines its members' outputs, and its Grad-CAM their maps."""
        entry = self.entries.get("ensemble") or {}
        return "; ".join(entry[key] for key in ("combination", "grad_cam") if entry.get(key))

    @property
    def architecture(self) -> str | None:
        """The backbone, or what an ensemble combines: "ensemble of a (224 px) + b (260 px)"."""
        if not self.members:
            return self.backbone
        parts = [f"{member.backbone} ({member.image_size} px)" for member in self.members]
        return "ensemble of " + " + ".join(parts)


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


def build_card(run_id, train_config, prepared, scores, timings, weights, crossval=None) -> Card:
    frame = prepared.dataset.frame
    entries = {
        "version": CARD_VERSION,
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
                name: int((frame["label"] == label).sum())
                for label, name in enumerate(CLASS_NAMES)
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
    return Card.from_dict(entries)
