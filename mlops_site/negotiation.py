"""DRF's content negotiation, with the answer to the usual Accept headers worked out once per view.

Almost every API call sends no Accept header, `*/*` or `application/json`; for those DRF parses the header
and matches it against each renderer on every request (about 60 µs). The choice depends only on that header
and the view's renderer classes, so it is kept per process for those three headers (a bounded table: one
entry per view's list of renderers and header). Every other header, a format suffix or a `?format=` goes
through DRF's own negotiation unchanged, 406 included.
"""

from __future__ import annotations

from typing import Any

from rest_framework.negotiation import DefaultContentNegotiation

_USUAL_ACCEPT = frozenset({"*/*", "application/json"})
_chosen: dict[tuple[Any, ...], tuple[int, str]] = {}


class ContentNegotiation(DefaultContentNegotiation):
    def select_renderer(
        self, request: Any, renderers: list[Any], format_suffix: str | None = None
    ) -> tuple[Any, str]:
        accept = request.META.get("HTTP_ACCEPT", "*/*")
        override = self.settings.URL_FORMAT_OVERRIDE
        asks_format = override and request.META.get("QUERY_STRING") and override in request.query_params
        if format_suffix or accept not in _USUAL_ACCEPT or asks_format:
            return super().select_renderer(request, renderers, format_suffix)
        key = (accept, *(type(renderer) for renderer in renderers))
        found = _chosen.get(key)
        if found is None:
            renderer, media_type = super().select_renderer(request, renderers, format_suffix)
            found = _chosen[key] = (next(i for i, r in enumerate(renderers) if r is renderer), media_type)
        index, media_type = found
        return renderers[index], media_type
