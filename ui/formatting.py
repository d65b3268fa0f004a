"""How the pages write numbers, counts, times, file locations and images as text.

No Streamlit call here: these only turn values into the strings that widgets show.
"""

import base64
from datetime import UTC, datetime
from pathlib import Path

from core import config


def percent(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}%}"


def number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def plural(count: int, noun: str) -> str:
    """ "1 prediction", "2 predictions"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def utc_time(iso_text: str | None) -> str:
    """ "2026-11-28 06:23 UTC" from an ISO 8601 timestamp; the text itself when unparsable."""
    try:
        moment = datetime.fromisoformat(str(iso_text))
    except ValueError:
        return "n/a" if iso_text is None else str(iso_text)
    # Timestamps without an offset are UTC everywhere in this app (cards, database).
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def file_location(path: str | Path) -> str:
    """A file's path relative to the repository when inside it, else only its name.

    Absolute machine paths say nothing useful to a visitor and reveal the server's layout.
    """
    resolved = Path(path).resolve()
    if resolved.is_relative_to(config.REPO_ROOT):
        return str(resolved.relative_to(config.REPO_ROOT))
    return resolved.name


def with_interval(evaluation: dict, key: str) -> str:
    """ "0.871 (95% CI 0.820-0.915)" from an evaluation dict."""
    interval = (evaluation.get("intervals") or {}).get(key)
    text = number(evaluation.get(key))
    return f"{text} (95% CI {interval[0]:.3f}-{interval[1]:.3f})" if interval else text


def data_url(jpeg) -> str | None:
    """A data URL that st.column_config.ImageColumn can show; None for a missing thumbnail."""
    # Database frames hold missing blobs as pandas.NA, fresh results as None.
    if not isinstance(jpeg, bytes | bytearray | memoryview) or len(jpeg) == 0:
        return None
    return "data:image/jpeg;base64," + base64.b64encode(bytes(jpeg)).decode("ascii")


def upload_limit_mb(limit_bytes: int | None = None) -> int:
    """An upload limit from `core.config` (MAX_UPLOAD_BYTES unless given) in the MB that
    st.file_uploader's max_upload_size takes, so every uploader states its limit one way."""
    limit = config.MAX_UPLOAD_BYTES if limit_bytes is None else limit_bytes
    return max(1, limit // 1024**2)
