"""API page numbers and sizes, checked like any other input: a malformed one is a 400 naming it."""

from __future__ import annotations

from typing import Any

from rest_framework import pagination, serializers

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
