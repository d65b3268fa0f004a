"""History queries over a million predictions, and the Metrics page's threshold recompute."""

import statistics
import time

import numpy as np
import pandas as pd

from bench.common import Settings, median_seconds, timed
from bench.report import Figure, Goal
from core.analysis.metrics import threshold_metrics
from core.storage import db
from scripts.fill_history import SYNTHETIC_RUN_IDS, fill_history

QUERY_REPEATS = 5


def history_queries(database: db.Database) -> dict:
    """The queries one History page render issues, named as in the report."""
    everything = db.HistoryFilter()
    narrowed = db.HistoryFilter(
        run_ids=SYNTHETIC_RUN_IDS[:1], labels=("malignant",), min_probability=0.3
    )
    return {
        "filter (count of filtered rows)": lambda: database.count_predictions(narrowed),
        "first page (50 newest, thumbnails)": lambda: database.query_predictions(everything),
        "predictions per day": lambda: database.predictions_per_day(everything),
        "probability histogram": lambda: database.probability_histogram(everything),
    }


def history(settings: Settings) -> list[Figure]:
    rows = settings.size(1_000_000, 20_000)
    database = db.open_database(settings.work_dir / "history.duckdb")
    try:
        fill_seconds, inserted = timed(lambda: fill_history(database, rows))
        scan = database.count_predictions(db.HistoryFilter())
        baseline = median_seconds(lambda: database.count_predictions(db.HistoryFilter()), 5)
        figures = []
        for name, query in history_queries(database).items():
            cold, _ = timed(query)
            warm = median_seconds(query, QUERY_REPEATS)
            figures.append(
                Figure(
                    group="history",
                    name=f"{name}, {inserted:,} rows",
                    value=warm * 1000,
                    baseline=baseline * 1000,
                    unit="ms",
                    baseline_name="count(*) of all rows",
                    goal=Goal("value", "<", 300),
                    details={"first_call_ms": cold * 1000, "fill_seconds": fill_seconds},
                )
            )
    finally:
        database.close()
    if scan != inserted:
        raise RuntimeError(f"filled {inserted} rows but {scan} are stored")
    return figures


def metrics(settings: Settings) -> list[Figure]:
    """Confusion counts at a new threshold, as the Metrics page recomputes on a slider move."""
    from sklearn.metrics import confusion_matrix

    test = pd.read_csv(settings.run.folder / "test_predictions.csv")
    labels, probabilities = test["label"].to_numpy(), test["probability"].to_numpy()
    thresholds = np.linspace(0.05, 0.95, 50)
    durations, baseline = [], []
    for threshold in thresholds:
        start = time.perf_counter()
        threshold_metrics(labels, probabilities, threshold)
        durations.append(time.perf_counter() - start)
        start = time.perf_counter()
        confusion_matrix(labels, probabilities >= threshold, labels=[0, 1])
        baseline.append(time.perf_counter() - start)
    return [
        Figure(
            group="metrics",
            name=f"threshold_metrics recompute ({len(labels)} test predictions)",
            value=statistics.median(durations) * 1000,
            baseline=statistics.median(baseline) * 1000,
            unit="ms",
            baseline_name="sklearn confusion_matrix",
            speedup=True,
            goal=Goal("value", "<", 50),
            details={"max_ms": max(durations) * 1000},
        )
    ]
