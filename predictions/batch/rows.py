"""A batch chunk's Prediction rows: encoded column-wise for one statement, inserted, ids read back."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from django.db import connection

from predictions.models import BatchPredictionJob, Channel, Prediction


def labels_json(labels: list[Any]) -> np.ndarray:
    values = np.asarray(labels)
    if values.dtype.kind == "f":
        # Regression: numpy writes the shortest repr of each float, which is also its JSON.
        return values.astype(str).astype(object)
    unique = {value: json.dumps(value) for value in set(labels)}
    return np.array([unique[value] for value in labels], dtype=object)


def probabilities_json(probabilities: np.ndarray, classes: list[str]) -> np.ndarray:
    text = pd.DataFrame(probabilities, columns=classes).to_json(
        orient="records", lines=True, double_precision=15
    )
    return np.array(text.rstrip("\n").split("\n"), dtype=object)


@dataclass(frozen=True)
class Rows:
    """One chunk's Prediction rows, encoded for one statement of the database at hand."""

    count: int
    created_at: dt.datetime
    # "copy" (PostgreSQL), "execute" (SQLite: one INSERT … SELECT over json_each) or "executemany".
    method: str
    sql: str
    params: Any


# Constant columns first: a row is then one constant part plus its own values.
_CONSTANT_COLUMNS = (
    "request_id",
    "user_id",
    "model_version_id",
    "channel",
    "batch_job_id",
    "inputs",
    "created_at",
)
_ROW_COLUMNS = ("row_index", "prediction", "probabilities", "warnings", "confidence")


def _copy_escaped(values: np.ndarray) -> np.ndarray:
    """JSON texts escaped for COPY's text format, where only the backslash needs doubling here."""
    joined = "\n".join(values)  # encoded JSON holds no raw line break
    if "\\" not in joined:
        return values
    return np.array(joined.replace("\\", "\\\\").split("\n"), dtype=object)


def sqlite_json_arrows() -> bool:
    # The -> and ->> operators arrived in SQLite 3.38 (2022); older libraries get executemany.
    return connection.Database.sqlite_version_info >= (3, 38, 0)


def rows_encode(
    job: BatchPredictionJob,
    *,
    row_indexes: np.ndarray,
    predictions: np.ndarray,
    probabilities: np.ndarray | None,
    warnings: np.ndarray,
    confidence: np.ndarray | None = None,
    created_at: dt.datetime,
) -> Rows:
    """Encode one chunk's rows (JSON values already encoded, column-wise) for a single statement.

    bulk_create would build a model instance and encode four JSON values per row in Python, several
    times slower. PostgreSQL gets one COPY, SQLite one INSERT … SELECT that unpacks a JSON array in C;
    both statements then run without the GIL, beside the main thread's work on the next chunk.
    """
    table = connection.ops.quote_name(Prediction._meta.db_table)
    names = ", ".join(connection.ops.quote_name(c) for c in (*_CONSTANT_COLUMNS, *_ROW_COLUMNS))
    constants = [job.prediction_request_id, job.user_id, job.model_version_id, Channel.BATCH.value, job.pk]
    count = len(row_indexes)
    rows_text = row_indexes.astype(str).astype(object)
    # repr() of a float64 is its shortest exact text, which both databases read back unchanged.
    confidence_text = (
        np.asarray(confidence, dtype="float64").astype(str).astype(object) if confidence is not None else None
    )
    if connection.vendor == "postgresql":
        prefix = "\t".join("\\N" if v is None else str(v) for v in constants)
        prefix += "\t{}\t" + created_at.isoformat() + "\t"
        column = _copy_escaped(probabilities) if probabilities is not None else np.array("\\N")
        lines = (
            prefix
            + rows_text
            + "\t"
            + _copy_escaped(predictions)
            + "\t"
            + column
            + "\t"
            + _copy_escaped(warnings)
            + "\t"
            + (confidence_text if confidence_text is not None else np.array("\\N"))
        )
        payload = ("\n".join(lines) + "\n").encode("utf-8")
        return Rows(
            count=count,
            created_at=created_at,
            method="copy",
            sql=f"COPY {table} ({names}) FROM STDIN",
            params=payload,
        )
    created_value = connection.ops.adapt_datetimefield_value(created_at)
    if connection.vendor == "sqlite" and sqlite_json_arrows():
        column = probabilities if probabilities is not None else np.array("null")
        scores = confidence_text if confidence_text is not None else np.array("null")
        items = "[" + rows_text + "," + predictions + "," + column + "," + warnings + "," + scores + "]"
        sql = (
            f"INSERT INTO {table} ({names}) SELECT %s, %s, %s, %s, %s, %s, %s, "  # noqa: S608
            "j.value ->> 0, j.value -> 1, NULLIF(j.value -> 2, 'null'), j.value -> 3, j.value ->> 4 "
            "FROM json_each(%s) AS j"
        )
        return Rows(
            count=count,
            created_at=created_at,
            method="execute",
            sql=sql,
            params=[*constants, "{}", created_value, "[" + ",".join(items) + "]"],
        )
    placeholders = ", ".join(["%s"] * (len(_CONSTANT_COLUMNS) + len(_ROW_COLUMNS)))
    values = list(
        zip(
            *([value] * count for value in [*constants, "{}", created_value]),
            row_indexes.tolist(),
            predictions.tolist(),
            probabilities.tolist() if probabilities is not None else [None] * count,
            warnings.tolist(),
            confidence.tolist() if confidence is not None else [None] * count,
            strict=True,
        )
    )
    return Rows(
        count=count,
        created_at=created_at,
        method="executemany",
        sql=f"INSERT INTO {table} ({names}) VALUES ({placeholders})",  # noqa: S608
        params=values,
    )


#: WAL pages (4 KiB each) SQLite lets build up while a batch chunk commits before it copies them into the
#: database file: ten times its default. A chunk of 50,000 rows writes thousands of pages, so the default
#: checkpointed (and synced) at every commit and wrote the same index pages again each time; spaced out,
#: storing 500,000 rows took 22% less time.
WAL_PAGES_BETWEEN_CHECKPOINTS = 10_000


@contextlib.contextmanager
def checkpoints_spaced() -> Iterator[None]:
    """On SQLite, let this connection's commits checkpoint the WAL less often while the block runs."""
    if connection.vendor != "sqlite":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA wal_autocheckpoint")
        (before,) = cursor.fetchone()
        cursor.execute(f"PRAGMA wal_autocheckpoint = {WAL_PAGES_BETWEEN_CHECKPOINTS:d}")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA wal_autocheckpoint = {int(before):d}")


def rows_insert(rows: Rows) -> int | None:
    """Insert the rows. Returns the id of the last one when the statement numbered them consecutively in
    their order (SQLite's single INSERT … SELECT: AUTOINCREMENT gives each next row the next id), else None.
    """
    with connection.cursor() as cursor:
        if rows.method == "copy":
            with cursor.cursor.copy(rows.sql) as copy:  # type: ignore[attr-defined]
                copy.write(rows.params)
        elif rows.method == "execute":
            cursor.execute(rows.sql, rows.params)
            return cursor.lastrowid
        else:
            cursor.executemany(rows.sql, rows.params)
    return None


def ids_read(
    job: BatchPredictionJob,
    *,
    row_indexes: np.ndarray,
    stored: np.ndarray | None = None,
    last_id: int | None = None,
) -> np.ndarray:
    """Prediction ids of the chunk's rows, aligned with row_indexes (0 where no row was stored).

    With `last_id` from rows_insert and `stored` (which of row_indexes were inserted, in order), the ids
    are counted back from the last one, once two lookups confirm the first and last rows are the
    chunk's; reading 50,000 ids back cost more than every other step of storing a chunk but the insert.
    """
    if last_id is not None and stored is not None:
        ids = _ids_counted(job, row_indexes=row_indexes, stored=stored, last_id=last_id)
        if ids is not None:
            return ids
    table = connection.ops.quote_name(Prediction._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT row_index, id FROM {table} "  # noqa: S608
            "WHERE batch_job_id = %s AND row_index >= %s AND row_index <= %s",
            [job.pk, int(row_indexes[0]), int(row_indexes[-1])],
        )
        found = np.array(cursor.fetchall(), dtype="int64").reshape(-1, 2)
    ids = np.zeros(len(row_indexes), dtype="int64")
    ids[np.searchsorted(row_indexes, found[:, 0])] = found[:, 1]
    return ids


def _ids_counted(
    job: BatchPredictionJob, *, row_indexes: np.ndarray, stored: np.ndarray, last_id: int
) -> np.ndarray | None:
    inserted = row_indexes[stored]
    count = len(inserted)
    if not count:
        return None
    first_id = last_id - count + 1
    expected = {(first_id, int(inserted[0])), (last_id, int(inserted[-1]))}
    table = connection.ops.quote_name(Prediction._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, row_index FROM {table} WHERE id IN (%s, %s) AND batch_job_id = %s",  # noqa: S608
            [first_id, last_id, job.pk],
        )
        if set(cursor.fetchall()) != expected:
            return None
    ids = np.zeros(len(row_indexes), dtype="int64")
    ids[stored] = np.arange(first_id, last_id + 1, dtype="int64")
    return ids
