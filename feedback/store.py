"""Writing checked outcomes: the one write path of feedback, for one outcome from a page and for a
20,000-row chunk of a file alike.

`outcomes_write` locks the predictions, reads the outcomes there are, plans every row (created, updated,
unchanged; the history rows; the rollup deltas) and writes it all with a few statements: COPY for new
rows on PostgreSQL and a temporary table plus one UPDATE for many changed ones, plain INSERT and UPDATE
statements on SQLite. Model instances are built only for the answer, when asked for: building and
bulk-writing them cost 3 s per 20,000 new outcomes and 40 s per 20,000 changed ones (bulk_update's CASE
per row).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection
from django.utils import timezone

from feedback import quality
from feedback.checks import Checked, VersionInfo, label_text
from feedback.models import DelayHourly, Feedback, FeedbackChange, QualityHourly
from feedback.references import Target, parts
from mlops_site import rollups
from models_registry.models import Task

#: What storing an outcome did: a first outcome, a different one (or a new comment), or nothing.
STORED_STATUSES = ("created", "updated", "unchanged")

#: Columns of a new Feedback row, in the order the plan builds them; `id` comes from the sequence.
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
_EXISTING_COLUMNS = ("prediction_id", "id", *UPDATED_COLUMNS)
#: Changed rows from which a temporary table and one UPDATE beat an UPDATE per row (PostgreSQL).
_UPDATE_IN_BULK = 50


@dataclass(frozen=True)
class Stored:
    prediction_id: int
    status: str  # one of STORED_STATUSES
    # The outcome as stored, when the caller asked for it (an answer); None for file imports.
    feedback: Feedback | None
    # False when only the comment changed: no history row was written.
    outcome_changed: bool = True


@dataclass
class Plan:
    created: list[tuple[Any, ...]] = field(default_factory=list)
    updated: list[tuple[Any, ...]] = field(default_factory=list)
    changes: list[tuple[Any, ...]] = field(default_factory=list)
    cells: dict[tuple[Any, ...], list[float]] = field(
        default_factory=lambda: defaultdict(lambda: [0, 0.0, 0.0])
    )
    delays: dict[tuple[Any, ...], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0]))
    # (prediction id, status, outcome changed, the row's values by column name) per item, in order.
    results: list[tuple[int, str, bool, dict[str, Any]]] = field(default_factory=list)


def snapshot(
    correct: bool | None, true_label: str, true_value: float | None, *, source: str, by: Any, at: Any
) -> dict[str, Any]:
    """An outcome as the history keeps it."""
    return {
        "correct": correct,
        "true_label": true_label,
        "true_value": true_value,
        "source": source,
        "labelled_by": by,
        "at": at.isoformat() if at else None,
    }


def cell(
    version: VersionInfo, target: Target, true_label: str, true_value: float | None
) -> tuple[str, str, float, float]:
    """The rollup cell of an outcome: (predicted, actual, |error|, error²); classes have no error."""
    if version.task == Task.REGRESSION:
        error = float(true_value) - float(target.predicted)  # type: ignore[arg-type]
        return "", "", abs(error), error * error
    return label_text(target.predicted), true_label, 0.0, 0.0


def _lock_and_read(ids: list[int], *, answer: bool) -> dict[int, dict[str, Any]]:
    """Read the outcomes the predictions have, locking them (in prediction order) until the commit.

    Two writers of one outcome thus queue up, and the second plans from what the first wrote. A first
    outcome has no row to lock: two writers creating it at once meet at the unique index instead, and
    feedback_store retries the loser, which then finds and locks the winner's row. Locking the
    predictions instead would write a lock into 20,000 prediction rows per chunk of a file.
    """
    # The first outcome's time only for an answer: reading a datetime is the dearest part of a row.
    columns = (*_EXISTING_COLUMNS, "created_at") if answer else _EXISTING_COLUMNS
    existing: dict[int, dict[str, Any]] = {}
    for part in parts(ids):
        rows = (
            Feedback.objects.select_for_update()
            .filter(prediction_id__any_of=part)
            .order_by("prediction_id")
            .values_list(*columns)
        )
        for row in rows:
            existing[row[0]] = dict(zip(columns, row, strict=True))
    return existing


def _plan(
    checked: Sequence[Checked],
    existing: dict[int, dict[str, Any]],
    *,
    user_id: Any,
    source: str,
    answer: bool,
) -> Plan:
    now = timezone.now()
    plan = Plan()
    for item in checked:
        target, outcome, version = item.target, item.outcome, item.version
        old = existing.get(target.prediction_id)
        if old is not None and (old["correct"], old["true_label"], old["true_value"]) == outcome.values:
            if outcome.comment is not None and outcome.comment != old["comment"]:
                row = {**old, "comment": outcome.comment, "updated_at": now}
                plan.updated.append((old["id"], *(row[c] for c in UPDATED_COLUMNS)))
                plan.results.append((target.prediction_id, "updated", False, row))
            else:
                plan.results.append((target.prediction_id, "unchanged", False, old))
            continue
        hour = rollups.hour_of(target.created_at)
        predicted, actual, abs_error, sq_error = cell(version, target, outcome.true_label, outcome.true_value)
        counts = plan.cells[(target.model_version_id, hour, predicted, actual)]
        counts[0] += 1
        counts[1] += abs_error
        counts[2] += sq_error
        if old is None:
            delay = (now - target.created_at).total_seconds()
            plan.delays[(target.model_version_id, hour, quality.delay_bin(delay))][0] += 1
            regression = version.task == Task.REGRESSION
            values = (
                target.prediction_id,
                target.model_version_id,
                target.created_at,
                "" if regression else predicted,
                float(target.predicted) if regression else None,
                *outcome.values,
                outcome.comment or "",
                source,
                user_id,
                now,
                now,
            )
            plan.created.append(values)
            row = dict(zip(FEEDBACK_COLUMNS, values, strict=True)) if answer else {}
            plan.results.append((target.prediction_id, "created", True, row))
            continue
        old_predicted, old_actual, old_abs, old_sq = cell(
            version, target, old["true_label"], old["true_value"]
        )
        counts = plan.cells[(target.model_version_id, hour, old_predicted, old_actual)]
        counts[0] -= 1
        counts[1] -= old_abs
        counts[2] -= old_sq
        before = snapshot(
            old["correct"],
            old["true_label"],
            old["true_value"],
            source=old["source"],
            by=old["labelled_by_id"],
            at=old["updated_at"],
        )
        after = snapshot(*outcome.values, source=source, by=user_id, at=now)
        plan.changes.append((old["id"], json.dumps(before), json.dumps(after), user_id, source, now))
        row = {
            **old,
            "correct": outcome.correct,
            "true_label": outcome.true_label,
            "true_value": outcome.true_value,
            "comment": outcome.comment if outcome.comment is not None else old["comment"],
            "source": source,
            "labelled_by_id": user_id,
            "updated_at": now,
        }
        plan.updated.append((old["id"], *(row[c] for c in UPDATED_COLUMNS)))
        plan.results.append((target.prediction_id, "updated", True, row))
    return plan


def _table(model: Any) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _names(columns: Sequence[str]) -> str:
    return ", ".join(connection.ops.quote_name(c) for c in columns)


def _adapted(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Values as the database driver takes them in a plain statement (SQLite wants datetimes as text)."""
    ops = connection.ops
    return [[ops.adapt_datetimefield_value(v) if hasattr(v, "tzinfo") else v for v in row] for row in rows]


def _insert(model: Any, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The driver's own cursor, so its errors are wrapped here as Django's (IntegrityError).
            with (
                connection.wrap_database_errors,
                cursor.cursor.copy(f"COPY {_table(model)} ({_names(columns)}) FROM STDIN") as copy,
            ):
                for row in rows:
                    copy.write_row(row)
            return
        placeholders = ", ".join("%s" for _ in columns)
        cursor.executemany(
            f"INSERT INTO {_table(model)} ({_names(columns)}) VALUES ({placeholders})",  # noqa: S608
            _adapted(rows),
        )


def _update(rows: list[tuple[Any, ...]]) -> None:
    """Replace outcomes of existing rows: one UPDATE per row, or on PostgreSQL for many rows, COPY into a
    temporary table and one UPDATE from it."""
    if not rows:
        return
    table = _table(Feedback)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and len(rows) >= _UPDATE_IN_BULK:
            cursor.execute(
                "CREATE TEMPORARY TABLE feedback_updated (id bigint PRIMARY KEY, correct boolean, "
                "true_label varchar(255), true_value double precision, comment varchar(1000), "
                "source varchar(8), labelled_by_id bigint, updated_at timestamp with time zone) "
                "ON COMMIT DROP"
            )
            with (
                connection.wrap_database_errors,
                cursor.cursor.copy(
                    f"COPY feedback_updated ({_names(('id', *UPDATED_COLUMNS))}) FROM STDIN"
                ) as copy,
            ):
                for row in rows:
                    copy.write_row(row)
            assignments = ", ".join(f"{c} = u.{c}" for c in _names(UPDATED_COLUMNS).split(", "))
            cursor.execute(
                f"UPDATE {table} AS f SET {assignments} "  # noqa: S608
                "FROM feedback_updated AS u WHERE f.id = u.id"
            )
            cursor.execute("DROP TABLE feedback_updated")
            return
        assignments = ", ".join(f"{c} = %s" for c in _names(UPDATED_COLUMNS).split(", "))
        cursor.executemany(
            f"UPDATE {table} SET {assignments} WHERE id = %s",  # noqa: S608
            [[*row[1:], row[0]] for row in _adapted(rows)],
        )


def outcomes_write(checked: Sequence[Checked], *, user: Any, source: str, answer: bool) -> list[Stored]:
    """Lock, plan and write checked outcomes with their history and rollups; call inside a transaction.

    With `answer`, each Stored carries the outcome as a Feedback instance (not re-read: built from the
    values written, with the caller as labelled_by where the caller gave it).
    """
    user_id = getattr(user, "pk", None)
    existing = _lock_and_read(sorted(c.target.prediction_id for c in checked), answer=answer)
    plan = _plan(checked, existing, user_id=user_id, source=source, answer=answer)
    _insert(Feedback, FEEDBACK_COLUMNS, plan.created)
    _update(plan.updated)
    _insert(FeedbackChange, CHANGE_COLUMNS, plan.changes)
    rollups.counters_add(
        QualityHourly,
        keys=("model_version", "hour", "predicted", "actual"),
        sums=("n", "sum_abs_error", "sum_sq_error"),
        deltas={key: tuple(values) for key, values in plan.cells.items() if any(values)},
    )
    rollups.counters_add(
        DelayHourly,
        keys=("model_version", "hour", "bin"),
        sums=("n",),
        deltas={key: tuple(values) for key, values in plan.delays.items()},
    )
    return [
        Stored(
            prediction_id,
            status,
            feedback=_instance(row, user) if answer else None,
            outcome_changed=changed,
        )
        for prediction_id, status, changed, row in plan.results
    ]


def _instance(row: dict[str, Any], user: Any) -> Feedback:
    values = {k: v for k, v in row.items() if k != "prediction_id"}
    feedback = Feedback(prediction_id=row["prediction_id"], **values)
    if user is not None and getattr(user, "pk", None) == row.get("labelled_by_id"):
        feedback.labelled_by = user
    return feedback
