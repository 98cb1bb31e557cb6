"""Content negotiation: the usual Accept headers get DRF's own answer, remembered; the rest go through DRF."""

from __future__ import annotations

import pytest
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer, TemplateHTMLRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from mlops_site.negotiation import ContentNegotiation

RENDERER_LISTS = [
    [JSONRenderer, BrowsableAPIRenderer],
    [BrowsableAPIRenderer, JSONRenderer],
    [TemplateHTMLRenderer, JSONRenderer],
]
ACCEPTS = [None, "*/*", "application/json", "text/html", "application/json; indent=4", "text/*", "image/png"]


def request_with(accept: str | None, query: str = "") -> Request:
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    return Request(APIRequestFactory().get(f"/api/anything/{query}", **headers))


def outcome(negotiation, accept, classes, query=""):
    """The renderer's position and media type chosen, or the exception's name (406, or 404 for a ?format=
    none of the renderers has)."""
    renderers = [cls() for cls in classes]
    try:
        renderer, media_type = negotiation.select_renderer(request_with(accept, query), renderers)
    except Exception as exc:
        return type(exc).__name__
    return renderers.index(renderer), media_type


@pytest.mark.parametrize("classes", RENDERER_LISTS)
@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.parametrize("query", ["", "?format=json", "?format=api"])
def test_every_answer_is_drfs_own_the_first_time_and_after(classes, accept, query):
    expected = outcome(DefaultContentNegotiation(), accept, classes, query)

    # Worked out, then remembered.
    assert outcome(ContentNegotiation(), accept, classes, query) == expected
    assert outcome(ContentNegotiation(), accept, classes, query) == expected


@pytest.mark.django_db
def test_an_api_call_answers_json_and_an_unknown_accept_header_is_406(client):
    assert client.get("/api/models/", HTTP_ACCEPT="*/*").status_code in (401, 403)
    answer = client.get("/api/models/")
    assert answer["Content-Type"].startswith("application/json")
    assert client.get("/api/models/", HTTP_ACCEPT="image/png").status_code == 406
