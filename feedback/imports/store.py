"""Storing a chunk's checked outcomes: feedback_store's semantics, written with COPY on PostgreSQL.

feedback_store builds a model instance per row and writes with bulk_create and bulk_update; on a
20,000-row chunk that costs about 3 s for new outcomes and 40 s for changed ones (bulk_update's CASE
per row), far from the 20,000 rows/s an import needs. `outcomes_store` does the same on PostgreSQL with
one locking read, one read of the outcomes there are, COPY for new outcomes and their history, and
COPY into a temporary table plus one UPDATE for changed ones; the rollups go through the same
`rollups.counters_add`. Elsewhere (SQLite) it calls feedback_store itself.

The same semantics, row for row (tests/test_import_store.py compares both on PostgreSQL): the same
outcome again changes nothing ("unchanged"; a new comment is kept, "updated"); a different one replaces
the outcome, records old → new in FeedbackChange and moves the prediction's count from the old rollup
cell to the new one; a first outcome adds its label delay. The predictions are locked first, in id order,
like feedback_store locks them, so a concurrent writer of the same prediction queues up behind the chunk.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from feedback import quality
from feedback import services as feedback_services
from feedback.models import DelayHourly, Feedback, FeedbackChange, QualityHourly
from mlops_site import rollups
from models_registry.models import Task
from predictions.models import Prediction

#: Columns COPY fills; `id` comes from the table's sequence.
FEEDBACK_COLUMNS = (
    "prediction_id",
    "model_version_id",
    "prediction_created_at",
    "predicted_label",
    "predicted_value",
    "correct",
    "true_label",
    "true_value",
    "comment",
    "source",
    "labelled_by_id",
    "created_at",
    "updated_at",
)
CHANGE_COLUMNS = ("feedback_id", "old", "new", "changed_by_id", "source", "changed_at")
UPDATED_COLUMNS = ("correct", "true_label", "true_value", "comment", "source", "labelled_by_id", "updated_at")


def outcomes_store(checked: Sequence[feedback_services.Checked], *, user: Any, source: str) -> Counter[str]:
    """Store checked outcomes with their history and rollups in one transaction; idempotent per prediction.

    Returns how many were "created", "updated" and "unchanged".
    """
    if not checked:
        return Counter()
    if connection.vendor != "postgresql":
        return Counter(s.status for s in feedback_services.feedback_store(checked, user=user, source=source))
    with transaction.atomic():
        return _store(checked, user=user, source=source)


def _table(model: Any) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _columns(names: Sequence[str]) -> str:
    return ", ".join(connection.ops.quote_name(name) for name in names)


def _store(checked: Sequence[feedback_services.Checked], *, user: Any, source: str) -> Counter[str]:
    now = timezone.now()
    ids = sorted(c.target.prediction_id for c in checked)
    user_id = getattr(user, "pk", None)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {_table(Prediction)} WHERE id = ANY(%s) ORDER BY id FOR UPDATE",  # noqa: S608
            [ids],
        )
        columns = (
            "prediction_id, id, correct, true_label, true_value, comment, source, labelled_by_id, updated_at"
        )
        cursor.execute(f"SELECT {columns} FROM {_table(Feedback)} WHERE prediction_id = ANY(%s)", [ids])  # noqa: S608
        existing = {row[0]: row[1:] for row in cursor.fetchall()}
    counts: Counter[str] = Counter()
    cells: dict[tuple[Any, ...], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    delays: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0])
    created: list[tuple[Any, ...]] = []
    updated: list[tuple[Any, ...]] = []
    changes: list[tuple[Any, ...]] = []
    for item in checked:
        target, outcome, version = item.target, item.outcome, item.version
        old = existing.get(target.prediction_id)
        if old is not None:
            feedback_id, old_correct, old_label, old_value, old_comment, old_source, old_by, old_at = old
            if (old_correct, old_label, old_value) == outcome.values:
                if outcome.comment is not None and outcome.comment != old_comment:
                    updated.append(
                        (
                            feedback_id,
                            old_correct,
                            old_label,
                            old_value,
                            outcome.comment,
                            old_source,
                            old_by,
                            now,
                        )
                    )
                    counts["updated"] += 1
                else:
                    counts["unchanged"] += 1
                continue
        hour = rollups.hour_of(target.created_at)
        predicted, actual, abs_error, sq_error = feedback_services._cell(
            version, target, outcome.true_label, outcome.true_value
        )
        cell = cells[(target.model_version_id, hour, predicted, actual)]
        cell[0] += 1
        cell[1] += abs_error
        cell[2] += sq_error
        if old is None:
            delay = (now - target.created_at).total_seconds()
            delays[(target.model_version_id, hour, quality.delay_bin(delay))][0] += 1
            regression = version.task == Task.REGRESSION
            created.append(
                (
                    target.prediction_id,
                    target.model_version_id,
                    target.created_at,
                    "" if regression else predicted,
                    float(target.predicted) if regression else None,
                    outcome.correct,
                    outcome.true_label,
                    outcome.true_value,
                    outcome.comment or "",
                    source,
                    user_id,
                    now,
                    now,
                )
            )
            counts["created"] += 1
            continue
        old_predicted, old_actual, old_abs, old_sq = feedback_services._cell(
            version, target, old_label, old_value
        )
        old_cell = cells[(target.model_version_id, hour, old_predicted, old_actual)]
        old_cell[0] -= 1
        old_cell[1] -= old_abs
        old_cell[2] -= old_sq
        before = feedback_services._snapshot(
            old_correct, old_label, old_value, source=old_source, by=old_by, at=old_at
        )
        after = feedback_services._snapshot(*outcome.values, source=source, by=user_id, at=now)
        changes.append((feedback_id, json.dumps(before), json.dumps(after), user_id, source, now))
        comment = outcome.comment if outcome.comment is not None else old_comment
        updated.append((feedback_id, *outcome.values, comment, source, user_id, now))
        counts["updated"] += 1
    with connection.cursor() as wrapper:
        cursor = wrapper.cursor
        if created:
            _copy(cursor, _table(Feedback), FEEDBACK_COLUMNS, created)
        if updated:
            _update(cursor, updated)
        if changes:
            _copy(cursor, _table(FeedbackChange), CHANGE_COLUMNS, changes)
    rollups.counters_add(
        QualityHourly,
        keys=("model_version", "hour", "predicted", "actual"),
        sums=("n", "sum_abs_error", "sum_sq_error"),
        deltas={key: tuple(values) for key, values in cells.items() if any(values)},
    )
    rollups.counters_add(
        DelayHourly,
        keys=("model_version", "hour", "bin"),
        sums=("n",),
        deltas={key: tuple(values) for key, values in delays.items()},
    )
    return counts


def _copy(cursor: Any, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    with cursor.copy(f"COPY {table} ({_columns(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _update(cursor: Any, rows: list[tuple[Any, ...]]) -> None:
    """Replace the outcomes of existing feedback rows: COPY into a temporary table, then one UPDATE."""
    table = _table(Feedback)
    cursor.execute(
        "CREATE TEMPORARY TABLE feedback_import_updated (id bigint PRIMARY KEY, correct boolean, "
        "true_label varchar(255), true_value double precision, comment varchar(1000), source varchar(8), "
        "labelled_by_id bigint, updated_at timestamp with time zone) ON COMMIT DROP"
    )
    _copy(cursor, "feedback_import_updated", ("id", *UPDATED_COLUMNS), rows)
    assignments = ", ".join(f"{name} = u.{name}" for name in _columns(UPDATED_COLUMNS).split(", "))
    cursor.execute(
        f"UPDATE {table} AS f SET {assignments} FROM feedback_import_updated AS u WHERE f.id = u.id"  # noqa: S608
    )
    cursor.execute("DROP TABLE feedback_import_updated")
