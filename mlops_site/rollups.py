"""Counter tables kept in the writer's transaction: add to a row by its key, creating it when missing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import connection, models


def hour_of(moment: dt.datetime) -> dt.datetime:
    """The start of the UTC hour `moment` falls in, the bucket every hourly rollup uses."""
    if moment.tzinfo is not dt.UTC:  # the database's datetimes are UTC already: no conversion per row
        moment = moment.astimezone(dt.UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def counters_add(
    model: type[models.Model],
    *,
    keys: Sequence[str],
    sums: Sequence[str],
    deltas: Mapping[tuple[Any, ...], Sequence[float | int]],
) -> None:
    """Add `deltas` {key values: increments of `sums`} to `model`'s rows in one statement per batch.

    INSERT … ON CONFLICT DO UPDATE (PostgreSQL, and SQLite since 3.24) adds in the database, so writers
    in concurrent transactions never lose an increment: the second waits for the first's row lock and
    adds to its result. `keys` must be exactly the fields of one of the model's unique constraints.
    Django's bulk_create(update_conflicts=True) would overwrite the sums instead of adding to them.
    """
    if not deltas:
        return
    quote = connection.ops.quote_name
    meta = model._meta
    key_columns = [meta.get_field(name).column for name in keys]
    sum_columns = [meta.get_field(name).column for name in sums]
    table = quote(meta.db_table)
    names = ", ".join(quote(c) for c in (*key_columns, *sum_columns))
    placeholders = ", ".join(["%s"] * (len(key_columns) + len(sum_columns)))
    updates = ", ".join(f"{quote(c)} = {table}.{quote(c)} + excluded.{quote(c)}" for c in sum_columns)
    sql = (
        f"INSERT INTO {table} ({names}) VALUES ({placeholders}) "  # noqa: S608
        f"ON CONFLICT ({', '.join(quote(c) for c in key_columns)}) DO UPDATE SET {updates}"
    )
    datetime_fields = {
        i for i, name in enumerate(keys) if isinstance(meta.get_field(name), models.DateTimeField)
    }
    # A fixed order, so two transactions adding to the same rows lock them in the same order.
    rows = [
        [
            connection.ops.adapt_datetimefield_value(value) if i in datetime_fields else value
            for i, value in enumerate(key)
        ]
        + list(values)
        for key, values in sorted(deltas.items(), key=lambda item: tuple(map(str, item[0])))
    ]
    with connection.cursor() as cursor:
        if len(rows) == 1:
            cursor.execute(sql, rows[0])
        else:
            cursor.executemany(sql, rows)
