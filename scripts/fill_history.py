"""Fill a database with synthetic predictions, to measure the History page's queries at scale.

    python -m scripts.fill_history --database /tmp/history.duckdb --rows 1000000

DuckDB generates the rows itself (INSERT ... SELECT ... FROM range(n)), so a million rows take
seconds. Every image is predicted about four times by random models among three synthetic runs,
so same-image comparisons have data too. Never point this at the app's real database.
"""

import argparse
import datetime
import time
from pathlib import Path

from core.storage import db

SYNTHETIC_RUN_IDS = ("synthetic-mobilenet_v2", "synthetic-efficientnet_b0", "synthetic-resnet50")
PREDICTIONS_PER_IMAGE = 4
CONFIRMED_EVERY = 50

# hash() is deterministic, unlike random() under parallel execution, so fills are reproducible.
_FILL_SQL = """
INSERT INTO predictions (created_at, session_id, run_id, file_name, sha256, width, height,
    probability, label, threshold, latency_ms, tta, ood_score, ood_flag, confirmed_label,
    confirmed_at)
SELECT created_at, session_id, run_id, file_name, sha256, 1024, 768, probability,
    CASE WHEN probability >= 0.5 THEN 'malignant' ELSE 'benign' END, 0.5, latency_ms, tta,
    ood_score, ood_score > 0.95,
    CASE WHEN i % $confirmed_every = 0
        THEN CASE WHEN image % 3 = 0 THEN 'malignant' ELSE 'benign' END END,
    CASE WHEN i % $confirmed_every = 0 THEN created_at + INTERVAL 1 DAY END
FROM (
    SELECT i, image,
        make_timestamp($start_us + CAST(i * $step_us AS BIGINT)) AS created_at,
        'synthetic-session-' || CAST(hash(i, 'session') % 200 AS VARCHAR) AS session_id,
        list_extract($run_ids, CAST(hash(i, 'run') % len($run_ids) AS INTEGER) + 1) AS run_id,
        'ISIC_' || lpad(CAST(image AS VARCHAR), 7, '0') || '.jpg' AS file_name,
        sha256('synthetic-image-' || CAST(image AS VARCHAR)) AS sha256,
        -- Mostly the image's own score, a little model noise: models roughly agree.
        (0.8 * (hash(image) % 1000) + 0.2 * (hash(i, 'noise') % 1000)) / 1000.0 AS probability,
        40.0 + (hash(i, 'latency') % 800) / 10.0 AS latency_ms,
        i % 5 = 0 AS tta,
        (hash(i, 'ood') % 1000) / 1000.0 AS ood_score
    FROM (SELECT range AS i, hash(range, 'image') % $images AS image FROM range($rows))
)
"""


def fill_history(
    database: db.Database,
    rows: int = 1_000_000,
    days: int = 365,
    end: datetime.datetime | None = None,
) -> int:
    """Insert `rows` synthetic predictions spread evenly over `days` days up to `end` (now)."""
    if rows < 1 or days < 1:
        raise ValueError(f"rows {rows} and days {days} must both be at least 1")
    end = end or datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    start = end - datetime.timedelta(days=days)
    start_us = int((start - datetime.datetime(1970, 1, 1)).total_seconds() * 1_000_000)
    parameters = {
        "rows": rows,
        "images": max(rows // PREDICTIONS_PER_IMAGE, 1),
        "start_us": start_us,
        "step_us": days * 86_400 * 1_000_000 / rows,
        "run_ids": list(SYNTHETIC_RUN_IDS),
        "confirmed_every": CONFIRMED_EVERY,
    }
    with database.transaction() as cursor:
        inserted = cursor.execute(_FILL_SQL, parameters).fetchall()[0][0]
    return int(inserted)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", type=Path, required=True, help="DuckDB file to fill")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365)
    arguments = parser.parse_args()
    database = db.open_database(arguments.database)
    started = time.perf_counter()
    inserted = fill_history(database, arguments.rows, arguments.days)
    print(f"inserted {inserted} predictions in {time.perf_counter() - started:.1f} s")
    print(database.status())
    database.close()


if __name__ == "__main__":
    main()
