"""API page numbers and sizes, checked like any other input: a malformed one is a 400 naming it; and keyset
(cursor) pagination for long lists, whose pages all cost what the first does."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.core import signing
from django.db.models import Q, QuerySet
from rest_framework import pagination, serializers
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from mlops_site.errors import Invalid, problem

PAGE_SIZE = 50
#: What `page` may also say besides a number.
LAST_PAGE = "last"
#: Larger page numbers are refused rather than looked up (and counted) in the database.
MAX_PAGE = 10**9


class PageNumberPagination(pagination.PageNumberPagination):
    """DRF's, except that `page` must be a whole number from 1 (or "last") and `page_size` one within limits.

    DRF answers `?page=null` with a 404 and quietly ignores `?page_size=null`; both are refused here. A
    page past the last one is still a 404: the list is valid, that page of it does not exist.
    """

    page_size = PAGE_SIZE
    page_size_query_param: str | None = None
    max_page_size: int | None = None
    last_page_strings = (LAST_PAGE,)

    def paginate_queryset(self, queryset: Any, request: Any, view: Any = None) -> list[Any] | None:
        self._check_query(request)
        return super().paginate_queryset(queryset, request, view)

    def _check_query(self, request: Any) -> None:
        problems: dict[str, list[str]] = {}
        page = request.query_params.get(self.page_query_param)
        if page is not None and page not in self.last_page_strings and not _positive_int(page):
            problems[self.page_query_param] = [
                f"Must be a whole number from 1, or {LAST_PAGE!r}; got {page!r}."
            ]
        if self.page_size_query_param:
            size = request.query_params.get(self.page_size_query_param)
            if size is not None and not (_positive_int(size) and int(size) <= (self.max_page_size or 10**6)):
                problems[self.page_size_query_param] = [
                    f"Must be a whole number from 1 to {self.max_page_size}; got {size!r}."
                ]
        if problems:
            raise serializers.ValidationError(problems)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}
            elif parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1, "maximum": self.max_page_size}
        return parameters


def _positive_int(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 10 and 1 <= int(text) <= MAX_PAGE


# --------------------------------------------------------------------------------------------------
# Keyset (cursor) pagination: any page as fast as the first
# --------------------------------------------------------------------------------------------------
#: Signs cursors, so a value signed for anything else (or edited by hand) is refused, never looked up.
CURSOR_SALT = "mlops_site.pagination.cursor"
CURSOR_PARAM = "cursor"
#: The largest id a cursor may name (a bigint), so a forged one never reaches the database as an overflow.
MAX_ID = 2**63 - 1


def _cursor_invalid(message: str) -> Invalid:
    return Invalid(
        f"Invalid {CURSOR_PARAM!r}: {message}",
        errors=[problem(message, field=CURSOR_PARAM, code="invalid_cursor")],
    )


CURSOR_HELP = (
    "Follow the `next` or `previous` link of a page (or pass its `cursor` unchanged); leave it out for the "
    "newest rows."
)


@dataclass(frozen=True)
class Position:
    """Where a page starts: the (created_at, id) of a row, and whether the page goes back (newer rows)."""

    created_at: dt.datetime
    id: int
    back: bool = False


def cursor_encode(position: Position) -> str:
    """An opaque, signed cursor for `position`."""
    payload = [position.created_at.astimezone(dt.UTC).isoformat(), position.id, int(position.back)]
    return signing.dumps(payload, salt=CURSOR_SALT, compress=False)


def cursor_decode(cursor: str) -> Position:
    """The position a cursor names; raises Invalid (400, field "cursor") for anything not signed here."""
    if not cursor:
        raise _cursor_invalid(f"it is empty. {CURSOR_HELP}")
    try:
        payload = signing.loads(cursor[:400], salt=CURSOR_SALT)
    except (signing.BadSignature, ValueError, UnicodeError):
        payload = None
    try:
        moment, pk, back = payload  # type: ignore[misc]
        created_at = dt.datetime.fromisoformat(moment)
        if created_at.tzinfo is None or isinstance(pk, bool) or not isinstance(pk, int) or back not in (0, 1):
            raise ValueError(cursor)
        if not 0 <= pk <= MAX_ID:
            raise ValueError(cursor)
    except (TypeError, ValueError):
        raise _cursor_invalid(f"this is not a cursor this list gave out. {CURSOR_HELP}") from None
    return Position(created_at=created_at, id=pk, back=bool(back))


@dataclass
class KeysetPage:
    """One page of rows newest first, with the cursors of its neighbours (None at either end).

    Duck-types what templates/_pagination.html reads of a Django page (`has_other_pages`, ...).
    """

    items: list[Any]
    next_cursor: str | None
    previous_cursor: str | None
    is_keyset = True

    @property
    def has_next(self) -> bool:
        return self.next_cursor is not None

    @property
    def has_previous(self) -> bool:
        return self.previous_cursor is not None

    @property
    def has_other_pages(self) -> bool:
        return self.has_next or self.has_previous

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _position_of(row: Any, *, back: bool) -> str:
    return cursor_encode(Position(created_at=row.created_at, id=row.pk, back=back))


def keyset_page(queryset: QuerySet[Any], *, cursor: str | None, size: int) -> KeysetPage:
    """The page of `queryset` (newest first by created_at, then id) that `cursor` points at, in one query.

    A page reads `size` + 1 rows from the position on, so an index on (…filters, created_at, id) serves
    page 6,000 as cheaply as page 1: there is no OFFSET to walk and no count. The cursor is a position, not
    a page number, so rows added meanwhile never shift a page or show a row twice. Raises Invalid for a
    malformed or forged cursor. `queryset`'s own ordering is replaced.
    """
    position = None if cursor is None else cursor_decode(cursor)
    newest_first = ("-created_at", "-id")
    if position is None:
        rows = list(queryset.order_by(*newest_first)[: size + 1])
        items = rows[:size]
        following = _position_of(items[-1], back=False) if len(rows) > size else None
        return KeysetPage(items=items, next_cursor=following, previous_cursor=None)
    at, pk = position.created_at, position.id
    if not position.back:
        # created_at <= at narrows the index range; the OR only drops rows of the same instant.
        older = queryset.filter(Q(created_at__lt=at) | Q(id__lt=pk), created_at__lte=at)
        rows = list(older.order_by(*newest_first)[: size + 1])
        items = rows[:size]
        following = _position_of(items[-1], back=False) if len(rows) > size else None
        # Came here from a row before this position: there is a page back, even if this one is empty.
        back = Position(created_at=at, id=pk, back=True) if not items else None
        preceding = cursor_encode(back) if back else _position_of(items[0], back=True)
        return KeysetPage(items=items, next_cursor=following, previous_cursor=preceding)
    newer = queryset.filter(Q(created_at__gt=at) | Q(id__gt=pk), created_at__gte=at)
    rows = list(newer.order_by("created_at", "id")[: size + 1])
    items = rows[:size][::-1]
    preceding = _position_of(items[0], back=True) if len(rows) > size else None
    forward = Position(created_at=at, id=pk, back=False) if not items else None
    following = cursor_encode(forward) if forward else _position_of(items[-1], back=False)
    return KeysetPage(items=items, next_cursor=following, previous_cursor=preceding)


class CursorPagination(pagination.BasePagination):
    """Keyset pagination for the API: `cursor` from the `next`/`previous` links, `page_size` within limits.

    The answer is {next, previous, results}: no count, which would cost a scan of every matching row. An
    old client's `?page=` is refused with a 400 that names `cursor` rather than quietly answering page 1.
    """

    cursor_query_param = CURSOR_PARAM
    page_size = PAGE_SIZE
    page_size_query_param = "page_size"
    max_page_size = 500
    refused_query_param = "page"
    display_page_controls = False

    def paginate_queryset(self, queryset: Any, request: Any, view: Any = None) -> list[Any] | None:
        size = self._check_query(request)
        self.request = request
        self.page = keyset_page(queryset, cursor=request.query_params.get(self.cursor_query_param), size=size)
        return self.page.items

    def _check_query(self, request: Any) -> int:
        params = request.query_params
        if self.refused_query_param in params:
            raise Invalid(
                "This list is paginated by cursor, not by page number.",
                errors=[
                    problem(
                        f"'{self.refused_query_param}' is no longer accepted: follow the `next` and "
                        f"`previous` links, whose `{self.cursor_query_param}` parameter marks the position.",
                        field=self.refused_query_param,
                        code="use_cursor",
                    )
                ],
            )
        size = params.get(self.page_size_query_param)
        if size is None:
            return self.page_size
        if not (_positive_int(size) and int(size) <= self.max_page_size):
            raise serializers.ValidationError(
                {
                    self.page_size_query_param: [
                        f"Must be a whole number from 1 to {self.max_page_size}; got {size!r}."
                    ]
                }
            )
        return int(size)

    def _link(self, cursor: str | None) -> str | None:
        if cursor is None:
            return None
        return replace_query_param(self.request.build_absolute_uri(), self.cursor_query_param, cursor)

    def get_paginated_response(self, data: Any) -> Response:
        return Response(
            {
                "next": self._link(self.page.next_cursor),
                "previous": self._link(self.page.previous_cursor),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        link = {"type": "string", "format": "uri", "nullable": True}
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {
                "next": {**link, "description": "The next (older) page, or null on the last."},
                "previous": {**link, "description": "The previous (newer) page, or null on the first."},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "Where the page starts, as given in the `next` or `previous` link. Opaque: "
                "a cursor this list did not give out answers 400. Page numbers (`page`) are refused.",
                "schema": {"type": "string"},
            },
            {
                "name": self.page_size_query_param,
                "required": False,
                "in": "query",
                "description": f"Rows per page (default {self.page_size}).",
                "schema": {"type": "integer", "minimum": 1, "maximum": self.max_page_size},
            },
        ]
