"""Fixtures for the app tests: app paths in a temporary folder and one tiny trained run.

AppTest runs page scripts in this process, so the paths are set both as environment variables
(read by the training subprocess) and as `core.config` attributes (read by the pages).
Test modules import the fixtures they use from here.
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
    from core.train_config import TrainConfig

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
    from core import training

    result = training.train(
        tiny_train_config(), models_directory=app_paths.models_dir, activate=True
    )
    return result.run_id


@pytest.fixture
def fresh_app(tmp_path, monkeypatch) -> AppPaths:
    """Empty app folders: no runs, a new database."""
    return point_app_at(tmp_path, monkeypatch)


def app(page: str) -> AppTest:
    """An AppTest of a page script, by its path from the repository root."""
    return AppTest.from_file(str(config.REPO_ROOT / page), default_timeout=TIMEOUT)


def texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)
