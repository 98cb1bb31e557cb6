"""A few model instances in one INSERT … RETURNING: what bulk_create does for the request path, without
planning the statement again on every call.

bulk_create rebuilds its INSERT (field lists, placeholders, the compiler) for every call: about 300 µs of
CPU for one request and one prediction row, the largest single cost of a stored prediction after the
middleware. Here the statement is built once per model, row count and database, and each value still goes
through its field's pre_save and get_db_prep_save, as the ORM's own INSERT does (auto_now_add, JSON
encoding, time zones). Saving signals are not sent, as with bulk_create.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TypeVar

from django.db import connections, router
from django.db.models import Field, Model

ModelT = TypeVar("ModelT", bound=Model)

#: Rows per statement: far below SQLite's 32,766 parameters and PostgreSQL's 65,535 for a dozen columns.
MAX_ROWS = 500


@functools.cache
def _columns(model: type[Model]) -> tuple[Field, ...]:
    # Every concrete column but the generated primary key; a field that needs its own placeholder (binary
    # data on some databases) is left to bulk_create.
    return tuple(
        field
        for field in model._meta.concrete_fields
        if field is not model._meta.pk or not field.db_returning
    )


@functools.cache
def _statement(model: type[Model], rows: int, alias: str) -> str:
    connection = connections[alias]
    quote = connection.ops.quote_name
    columns = _columns(model)
    row = "(" + ", ".join(["%s"] * len(columns)) + ")"
    # Names from the model's metadata, quoted; the values are parameters.
    return (
        f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in columns)}) "  # noqa: S608
        f"VALUES {', '.join([row] * rows)} RETURNING {quote(model._meta.pk.column)}"
    )


def _plain(model: type[Model], alias: str) -> bool:
    """Whether the fast path applies: the database returns inserted ids, no column needs a placeholder."""
    if not connections[alias].features.can_return_rows_from_bulk_insert:
        return False
    return not any(hasattr(field, "get_placeholder") for field in _columns(model))


def objects_insert(objects: Sequence[ModelT]) -> list[ModelT]:
    """INSERT `objects` (new instances of one model, in one transaction or not) and set their primary
    keys, as bulk_create would; returns them."""
    if not objects:
        return list(objects)
    model = type(objects[0])
    alias = router.db_for_write(model)
    if not _plain(model, alias):
        return model._default_manager.bulk_create(objects)
    connection = connections[alias]
    columns = _columns(model)
    for start in range(0, len(objects), MAX_ROWS):
        part = objects[start : start + MAX_ROWS]
        params = [
            field.get_db_prep_save(field.pre_save(obj, add=True), connection)
            for obj in part
            for field in columns
        ]
        with connection.cursor() as cursor:
            cursor.execute(_statement(model, len(part), alias), params)
            ids = cursor.fetchall()
        for obj, (pk,) in zip(part, ids, strict=True):
            obj.pk = pk
            obj._state.adding = False
            obj._state.db = alias
    return list(objects)
