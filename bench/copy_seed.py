"""Predictions stored in bulk for the feedback benchmarks: COPY of the request and prediction rows, then the
hourly counts through the real `prediction_hours_add`."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

#: The columns of a COPY line, tab-separated in this order.
REQUEST_COLUMNS = (
    "id", "request_id", "user_id", "channel", "model_version_id", "stage", "n_rows", "latency_ms",
    "created_at",
)  # fmt: skip
PREDICTION_COLUMNS = (
    "id", "request_id", "row_index", "user_id", "model_version_id", "channel", "inputs", "prediction",
    "probabilities", "warnings", "confidence", "created_at",
)  # fmt: skip
LINES_PER_WRITE = 50_000


def _copy(cursor: Any, table: str, columns: Iterable[str], lines: list[str]) -> None:
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for start in range(0, len(lines), LINES_PER_WRITE):
            copy.write("".join(lines[start : start + LINES_PER_WRITE]))


def predictions_copy(
    *, request_lines: list[str], prediction_lines: list[str], hours: Iterable[tuple[int, dt.datetime, int]]
) -> None:
    """In one transaction: COPY the lines (PostgreSQL), move the id sequences past the ids they hold, and
    count (model version id, hour, rows) with the service, so the rollups are the ones live code keeps."""
    from django.core.management.color import no_style
    from django.db import connection, transaction

    from predictions import live_rollups
    from predictions.models import Prediction, PredictionRequest

    with transaction.atomic(), connection.cursor() as wrapper:
        cursor = wrapper.cursor
        _copy(cursor, PredictionRequest._meta.db_table, REQUEST_COLUMNS, request_lines)
        _copy(cursor, Prediction._meta.db_table, PREDICTION_COLUMNS, prediction_lines)
        for sql in connection.ops.sequence_reset_sql(no_style(), [PredictionRequest, Prediction]):
            wrapper.execute(sql)
        for version_id, hour, rows in hours:
            live_rollups.prediction_hours_add(model_version_id=version_id, hour=hour, rows=rows)
