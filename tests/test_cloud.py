"""Streamlit Community Cloud: the app runs from the repository root with only requirements.txt.

tests/cloud_app.py renders every page in a fresh process that cannot import what only the
development requirements bring; an import that creeps in outside requirements.txt fails here
before it fails a deployment.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from core import config

CLOUD_APP = config.REPO_ROOT / "tests" / "cloud_app.py"
# Community Cloud reads the first of these it finds, at the entrypoint's folder, then the root;
# any of them before requirements.txt would replace it.
DEPENDENCY_FILES_BEFORE_REQUIREMENTS = ("uv.lock", "Pipfile", "environment.yml")


def committed_models(destination: Path) -> Path:
    """A copy of the committed active model, so predicting writes nothing in the repository."""
    source = config.REPO_ROOT / "models"
    run_id = json.loads((source / "active.json").read_text())["run_id"]
    destination.mkdir()
    shutil.copy2(source / "active.json", destination / "active.json")
    shutil.copytree(source / run_id, destination / run_id)
    return destination


def test_every_page_runs_with_only_the_app_requirements(tmp_path: Path) -> None:
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("DERMO_") and name != "PYTHONPATH"
    }
    environment = {
        **inherited,
        # `streamlit run Home.py` puts the script's folder, the root, first on sys.path.
        "PYTHONPATH": str(config.REPO_ROOT),
        "DERMO_MODELS_DIR": str(committed_models(tmp_path / "models")),
        "DERMO_DB_PATH": str(tmp_path / "app.duckdb"),
        "DERMO_DATA_ROOT": str(tmp_path / "data"),
        "DERMO_CACHE_DIR": str(tmp_path / "cache"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    completed = subprocess.run(
        [sys.executable, str(CLOUD_APP)],
        cwd=config.REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["exceptions"] == []
    assert result["outside_requirements"] == {}


def test_cloud_installs_from_requirements_txt() -> None:
    # Home.py sits at the root, so the entrypoint's folder and the root are one folder.
    found = [
        name for name in DEPENDENCY_FILES_BEFORE_REQUIREMENTS if (config.REPO_ROOT / name).exists()
    ]
    assert not found, f"Community Cloud would install from {found}, not requirements.txt"
