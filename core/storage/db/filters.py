"""Which predictions the History page shows: `HistoryFilter` and the SQL it becomes.

User values only ever travel as parameters; the only names written into SQL text are column
names taken from a whitelist.
"""

import dataclasses
import datetime
import re
from collections.abc import Sequence
from typing import Any

from core.storage.db.store import as_utc_naive, check_label, placeholders

_SORTABLE_COLUMNS = frozenset(
    {
        "id",
        "created_at",
        "session_id",
        "run_id",
        "file_name",
        "probability",
        "label",
        "latency_ms",
        "ood_score",
        "confirmed_label",
    }
)
_ORDER_PATTERN = re.compile(r"^\s*(\w+)(?:\s+(asc|desc))?\s*$", re.IGNORECASE)


@dataclasses.dataclass
class HistoryFilter:
    """Which predictions to show; empty tuples and None mean no restriction.

    A `date` bound covers whole UTC days (`end` included); a `datetime` bound is exact (naive
    values are UTC). `session_id` None means every session.
    """

    start: datetime.date | datetime.datetime | None = None
    end: datetime.date | datetime.datetime | None = None
    run_ids: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    min_probability: float | None = None
    max_probability: float | None = None
    file_name_contains: str | None = None
    session_id: str | None = None
    # True: flagged out of distribution; False: not flagged (also predictions made without an
    # OOD detector, which flag nothing); None: both.
    ood_flag: bool | None = None
    # True: a confirmed outcome is stored; False: none is; None: both.
    confirmed: bool | None = None


def order_sql(order: str) -> str:
    match = _ORDER_PATTERN.match(order)
    if match is None or match.group(1).lower() not in _SORTABLE_COLUMNS:
        raise ValueError(
            f"cannot sort by {order!r}; use '<column> ASC|DESC' with a column among "
            f"{sorted(_SORTABLE_COLUMNS)}"
        )
    direction = (match.group(2) or "ASC").upper()
    return f"{match.group(1).lower()} {direction}, id {direction}"


def _check_filter(history_filter: HistoryFilter) -> None:
    for label in history_filter.labels:
        check_label(label, "history filter")
    if isinstance(history_filter.run_ids, str):
        raise TypeError(
            f"run_ids must be a tuple of run ids, not the string {history_filter.run_ids!r}"
        )
    bounds = (history_filter.min_probability, history_filter.max_probability)
    if any(bound is not None and not 0.0 <= bound <= 1.0 for bound in bounds):
        raise ValueError(f"probability bounds {bounds} must lie in [0, 1]")


def filter_sql(history_filter: HistoryFilter) -> tuple[str, list[Any]]:
    """The WHERE condition and its parameters; user values only ever travel as parameters."""
    _check_filter(history_filter)
    clauses: list[tuple[str, list[Any]]] = []
    if history_filter.start is not None:
        clauses.append(("created_at >= ?", [_day_or_moment(history_filter.start, 0)]))
    if history_filter.end is not None:
        clauses.append(_end_clause(history_filter.end))
    for column, values in (("run_id", history_filter.run_ids), ("label", history_filter.labels)):
        if values:
            clauses.append((f"{column} IN ({placeholders(len(values))})", list(values)))
    if history_filter.min_probability is not None:
        clauses.append(("probability >= ?", [history_filter.min_probability]))
    if history_filter.max_probability is not None:
        clauses.append(("probability <= ?", [history_filter.max_probability]))
    if history_filter.file_name_contains:
        clauses.append(
            ("contains(lower(file_name), lower(?))", [history_filter.file_name_contains])
        )
    if history_filter.session_id is not None:
        clauses.append(("session_id = ?", [history_filter.session_id]))
    if history_filter.ood_flag is not None:
        clauses.append(("coalesce(ood_flag, FALSE) = ?", [bool(history_filter.ood_flag)]))
    if history_filter.confirmed is not None:
        clauses.append(("(confirmed_label IS NOT NULL) = ?", [bool(history_filter.confirmed)]))
    where = " AND ".join(condition for condition, _ in clauses) or "TRUE"
    return where, [value for _, values in clauses for value in values]


def _day_or_moment(bound: datetime.date, days_after: int) -> datetime.datetime:
    if isinstance(bound, datetime.datetime):
        return as_utc_naive(bound)
    return datetime.datetime.combine(bound + datetime.timedelta(days=days_after), datetime.time())


def _end_clause(end: datetime.date) -> tuple[str, list[Any]]:
    if isinstance(end, datetime.datetime):
        return "created_at <= ?", [as_utc_naive(end)]
    # A date includes its whole day: everything before the next midnight.
    return "created_at < ?", [_day_or_moment(end, 1)]


def ids_sql(prediction_ids: Sequence[int], session_id: str | None) -> tuple[str, list[Any]]:
    """The WHERE condition for these ids, of `session_id`'s predictions only when given."""
    where = f"id IN ({placeholders(len(prediction_ids))})"
    parameters: list[Any] = [int(id_) for id_ in prediction_ids]
    if session_id is not None:
        where += " AND session_id = ?"
        parameters.append(session_id)
    return where, parameters
