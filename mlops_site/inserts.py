"""A few model instances in one INSERT … RETURNING: what bulk_create does for the request path, without
planning the statement again on every call.

bulk_create rebuilds its INSERT (field lists, placeholders, the compiler) for every call: about 300 µs of
CPU for one request and one prediction row, the largest single cost of a stored prediction after the
middleware. Here the statement is built once per model, row count and database, and each value still goes
through its field's pre_save and get_db_prep_save, as the ORM's own INSERT does (auto_now_add, JSON
encoding, time zones). Saving signals are not sent, as with bulk_create.

On PostgreSQL, family_insert writes a row and the rows that point to it (a prediction request and its
rows) with one statement, which needs no transaction around it to be atomic.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

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
def _child_columns(model: type[Model], link: str) -> tuple[Field, ...]:
    """The columns of `model` but its primary key and the foreign key `link`, which the parent fills."""
    link_column = model._meta.get_field(link).column
    return tuple(field for field in _columns(model) if field.column != link_column)


def _values(objects: Sequence[Model], fields: Sequence[Field], connection: Any) -> list[Any]:
    """Each object's values for `fields`, row after row, as the ORM's own INSERT prepares them."""
    return [
        field.get_db_prep_save(field.pre_save(obj, add=True), connection)
        for obj in objects
        for field in fields
    ]


def _saved(obj: Model, pk: Any, alias: str) -> None:
    obj.pk = pk
    obj._state.adding = False
    obj._state.db = alias


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
        with connection.cursor() as cursor:
            cursor.execute(_statement(model, len(part), alias), _values(part, columns, connection))
            ids = cursor.fetchall()
        for obj, (pk,) in zip(part, ids, strict=True):
            _saved(obj, pk, alias)
    return list(objects)


@functools.cache
def _family_statement(
    parent_model: type[Model], child_model: type[Model], link: str, rows: int, alias: str, relaxed: bool
) -> str:
    connection = connections[alias]
    quote = connection.ops.quote_name
    parent_columns = _columns(parent_model)
    link_column = child_model._meta.get_field(link).column
    child_columns = _child_columns(child_model, link)
    parent_pk = quote(parent_model._meta.pk.column)
    # Typed placeholders: the values list's columns then have the table's types (JSON included).
    row = "(" + ", ".join(f"CAST(%s AS {f.db_type(connection)})" for f in child_columns) + ")"
    names = ", ".join(f"c{i}" for i in range(len(child_columns)))
    values = f"(VALUES {', '.join([row] * rows)}) AS v({names})"
    # A local setting lasts until the end of the statement's own transaction, commit included.
    relax = "CROSS JOIN (SELECT set_config('synchronous_commit', 'off', true)) AS s " if relaxed else ""
    # Names from the models' metadata, quoted; the values are parameters.
    return (
        f"WITH p AS (INSERT INTO {quote(parent_model._meta.db_table)} "  # noqa: S608
        f"({', '.join(quote(f.column) for f in parent_columns)}) "
        f"VALUES ({', '.join(['%s'] * len(parent_columns))}) RETURNING {parent_pk}) "
        f"INSERT INTO {quote(child_model._meta.db_table)} "
        f"({quote(link_column)}, {', '.join(quote(f.column) for f in child_columns)}) "
        f"SELECT p.{parent_pk}, v.* FROM p {relax}CROSS JOIN {values} "
        f"RETURNING {quote(child_model._meta.pk.column)}, {quote(link_column)}"
    )


def family_insert(
    parent: Model,
    children: Callable[[Model], Sequence[ModelT]],
    *,
    link: str,
    synchronous_commit: bool = True,
) -> list[ModelT]:
    """PostgreSQL: INSERT `parent` and the rows `children(parent)` builds (whose ForeignKey `link` is the
    parent) in one statement, and set every primary key; returns the children.

    One statement is atomic on its own, so outside a transaction it needs no BEGIN and COMMIT: one round
    trip to the server instead of four. `children` is called once the parent's own values are set (its
    auto_now_add time, for instance). `synchronous_commit=False` lets that statement's commit return before
    its WAL is flushed, as `SET LOCAL synchronous_commit TO OFF` would in a transaction.
    """
    alias = router.db_for_write(type(parent))
    connection = connections[alias]
    if connection.vendor != "postgresql":
        raise ValueError("family_insert needs PostgreSQL (a data-modifying WITH)")
    parent_model = type(parent)
    params = _values([parent], _columns(parent_model), connection)
    rows = children(parent)
    if not rows:
        raise ValueError("family_insert needs at least one child row")
    child_model = type(rows[0])
    params += _values(rows, _child_columns(child_model, link), connection)
    sql = _family_statement(parent_model, child_model, link, len(rows), alias, not synchronous_commit)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        returned = cursor.fetchall()
    _saved(parent, returned[0][1], alias)
    # RETURNING gives the rows in the order of the values list (Django's own bulk_create relies on it).
    for obj, (pk, _) in zip(rows, returned, strict=True):
        _saved(obj, pk, alias)
        setattr(obj, link, parent)  # the parent's id, and the parent kept as the related object
    return list(rows)
