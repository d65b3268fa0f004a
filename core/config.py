"""Paths and defaults, overridable by environment variables.

Nothing here imports TensorFlow, scikit-learn or Streamlit, so any page can read it cheaply.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _path_from_env(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser().resolve() if value else default


def _flag_from_env(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


# Trained runs live here: <run_id>/model.keras + card.json. A deployment moves it to
# persistent storage with DERMO_MODELS_DIR.
MODELS_DIR = _path_from_env("DERMO_MODELS_DIR", REPO_ROOT / "models")
# The root that the Train page may read datasets from; the UI never reads outside it.
DATA_ROOT = _path_from_env("DERMO_DATA_ROOT", REPO_ROOT / "data")
DB_PATH = _path_from_env("DERMO_DB_PATH", DATA_ROOT / "app.duckdb")
# Backbone features of the frozen-backbone phase, keyed by image content and backbone.
CACHE_DIR = _path_from_env("DERMO_CACHE_DIR", REPO_ROOT / ".cache")
SAMPLE_DIR = REPO_ROOT / "data" / "sample"

# The committed default model is named in active.json (tracked by git). Activating a run
# writes active.local.json beside it instead (git ignores models/*), and that local choice wins,
# so a checkout never turns dirty and `git pull` never conflicts over the active model.
ACTIVE_FILE_NAME = "active.json"
LOCAL_ACTIVE_FILE_NAME = "active.local.json"
DEFAULT_BACKBONE = "mobilenet_v2"
DEFAULT_IMAGE_SIZE = 224
# Images larger than this are refused before decoding (decompression bombs).
MAX_IMAGE_PIXELS = int(os.environ.get("DERMO_MAX_IMAGE_PIXELS", "50000000"))
# Uploads (and members of uploaded ZIPs) larger than this are refused before decoding.
MAX_UPLOAD_BYTES = int(os.environ.get("DERMO_MAX_UPLOAD_BYTES", str(50 * 1024 * 1024)))
# The one exception: a whole dataset uploaded as one ZIP (Train, Metrics). The server's own cap,
# maxUploadSize in .streamlit/config.toml, must not be below it.
MAX_DATASET_UPLOAD_BYTES = int(
    os.environ.get("DERMO_MAX_DATASET_UPLOAD_BYTES", str(2 * 1024 * 1024 * 1024))
)
# Off by default: a public deployment keeps no picture of what visitors upload. When on, the
# History page shows a small JPEG of each prediction, re-encoded without any metadata.
STORE_THUMBNAILS = _flag_from_env("DERMO_STORE_THUMBNAILS")
# Shown on the pages and printed on every case report, so it is worded once, here.
RESEARCH_NOTICE = (
    "Research tool, not a diagnostic device: it must not be used to diagnose, treat or triage "
    "patients. Every output needs review by a qualified clinician."
)


def ephemeral_storage_reason(environment=None) -> str | None:
    """Why trained runs and history would be lost on restart, or None when they are kept.

    Hugging Face Spaces set SPACE_ID and mount persistent storage (when bought) at /data;
    Streamlit Community Cloud runs apps from /mount/src and keeps nothing across restarts.
    DERMO_EPHEMERAL_STORAGE=1 says so explicitly for any other host.
    """
    environment = os.environ if environment is None else environment
    if environment.get("DERMO_EPHEMERAL_STORAGE") == "1":
        return "this deployment's storage is marked as temporary"
    if environment.get("SPACE_ID") and not str(MODELS_DIR).startswith("/data"):
        return "this Hugging Face Space has no persistent storage at /data"
    if str(REPO_ROOT).startswith("/mount/src"):
        return "Streamlit Community Cloud keeps no files across restarts"
    return None
