"""Fixtures for the app tests: app paths in a temporary folder and one tiny trained run.

AppTest runs page scripts in this process, so the paths are set both as environment variables
(read by the training subprocess) and as `core.config` attributes (read by the pages).
tests/conftest.py loads the fixtures as a plugin; test modules import only the helpers.
"""

import dataclasses
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import config

TIMEOUT = 120
SAMPLE_IMAGES = sorted((config.SAMPLE_DIR / "images").glob("*.jpg"))
PATH_SETTINGS = {
    "MODELS_DIR": ("DERMO_MODELS_DIR", "models"),
    "DB_PATH": ("DERMO_DB_PATH", "app.duckdb"),
    "DATA_ROOT": ("DERMO_DATA_ROOT", "data"),
    "CACHE_DIR": ("DERMO_CACHE_DIR", "cache"),
}


@dataclasses.dataclass(frozen=True)
class AppPaths:
    models_dir: Path
    db_path: Path
    data_root: Path
    cache_dir: Path


def point_app_at(root: Path, patch: pytest.MonkeyPatch) -> AppPaths:
    """Make the app (this process and the processes it starts) use folders under `root`."""
    for attribute, (variable, name) in PATH_SETTINGS.items():
        patch.setenv(variable, str(root / name))
        patch.setattr(config, attribute, root / name)
    (root / "data").mkdir(parents=True, exist_ok=True)
    return AppPaths(root / "models", root / "app.duckdb", root / "data", root / "cache")


def tiny_train_config(**changes):
    """The quickest honest run: the bundled sample, a small backbone, random weights."""
    from core.train.train_config import TrainConfig

    settings = {
        "data_dir": str(config.SAMPLE_DIR),
        "csv": str(config.SAMPLE_DIR / "metadata.csv"),
        "backbone": "mobilenet_v3_small",
        "image_size": 64,
        "weights": "none",
        "head_epochs": 1,
        "fine_tune_epochs": 0,
    }
    return TrainConfig(**{**settings, **changes})


@pytest.fixture(scope="session")
def app_paths(tmp_path_factory) -> AppPaths:
    """App folders shared by the tests that need a trained run (trained once per session)."""
    with pytest.MonkeyPatch.context() as patch:
        yield point_app_at(tmp_path_factory.mktemp("app"), patch)


@pytest.fixture(scope="session")
def trained_run(app_paths: AppPaths) -> str:
    """The id of a tiny run trained on the bundled sample and made active."""
    from core.train import training

    result = training.train(
        tiny_train_config(), models_directory=app_paths.models_dir, activate=True
    )
    return result.run_id


@pytest.fixture
def fresh_app(tmp_path, monkeypatch) -> AppPaths:
    """Empty app folders: no runs, a new database."""
    return point_app_at(tmp_path, monkeypatch)


def copy_run(source: Path, models: Path, run_id: str) -> Path:
    """A copy of a run folder under another id (its card says so, as ingestion expects)."""
    import json
    import shutil

    from core.storage import runs

    folder = models / run_id
    shutil.copytree(source, folder)
    card = json.loads((folder / runs.CARD_FILE).read_text())
    runs.write_json_atomic(folder / runs.CARD_FILE, {**card, "run_id": run_id})
    return folder


def app(page: str) -> AppTest:
    """An AppTest of a page script, by its path from the repository root."""
    return AppTest.from_file(str(config.REPO_ROOT / page), default_timeout=TIMEOUT)


def texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)


def crossval_payload(run_threshold: float | None = 0.4) -> dict:
    """A crossval.json as `python -m core crossval` writes it: two sources held out, one not."""
    import numpy as np

    from core.analysis import metrics

    folds = []
    for index, source in enumerate(("ISIC 2017 challenge", "ISIC Archive 9-class set")):
        rng = np.random.default_rng(index)
        labels = rng.integers(0, 2, 120)
        probabilities = np.clip(labels * 0.35 + rng.random(120) * 0.65, 0, 1)
        scored = metrics.evaluate(labels, probabilities, 0.45, n_bootstrap=30)
        fold = {
            "held_out": source,
            "train_sources": ["HAM10000"],
            "n_train": 700,
            "n_val": 130,
            "threshold": 0.45,
            "val_roc_auc": 0.9,
            "metrics": scored,
            "ood_flagged": 0.0125 if index == 0 else None,
            "seconds": 12.0,
        }
        if run_threshold is not None:
            fold["at_run_threshold"] = {
                "threshold": run_threshold,
                "sensitivity": 0.81,
                "specificity": 0.7,
                "intervals": {"sensitivity": [0.7, 0.9], "specificity": [0.6, 0.8]},
            }
        folds.append(fold)
    aucs = [fold["metrics"]["roc_auc"] for fold in folds]
    return {
        "by": "source",
        "preset": "quick",
        "created_at": "2026-12-01T10:00:00+00:00",
        "config": {},
        "min_malignant": 30,
        "run_threshold": run_threshold,
        "folds": folds,
        "summary": {
            "mean": {"roc_auc": sum(aucs) / 2, "sensitivity": 0.8, "specificity": 0.7},
            "worst": {
                "roc_auc": min(aucs),
                "roc_auc_source": folds[aucs.index(min(aucs))]["held_out"],
                "sensitivity": 0.78,
                "sensitivity_source": "ISIC 2017 challenge",
            },
        },
        "skipped": [{"source": "HAM10000", "reason": "17 malignant images, fewer than 30"}],
    }
