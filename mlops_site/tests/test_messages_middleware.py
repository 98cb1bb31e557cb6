"""Message storage is made only for requests that use messages; messages still reach the next page."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.test import RequestFactory
from django.utils.functional import empty

from mlops_site.middleware import MessageMiddleware


def run(view, request):
    return MessageMiddleware(view)(request)


def with_session(request):
    from django.contrib.sessions.backends.signed_cookies import SessionStore

    request.session = SessionStore()
    return request


def test_a_request_that_uses_no_message_builds_no_storage_and_sets_no_cookie():
    request = with_session(RequestFactory().get("/healthz"))

    response = run(lambda r: HttpResponse("ok"), request)

    assert request._messages._wrapped is empty  # the storage was never made
    assert "messages" not in response.cookies
    assert not request.session.modified


def test_a_message_added_is_stored_and_read_on_the_next_request():
    def adds(request):
        messages.success(request, "Version 3 is in production.")
        return HttpResponse("added")

    first = with_session(RequestFactory().get("/models/x"))
    response = run(adds, first)
    cookie = response.cookies["messages"].value
    assert cookie

    second = with_session(RequestFactory().get("/models/x", HTTP_COOKIE=f"messages={cookie}"))
    read: list[str] = []

    def shows(request):
        read.extend(str(m) for m in messages.get_messages(request))
        return HttpResponse("shown")

    after = run(shows, second)
    assert read == ["Version 3 is in production."]
    # Read messages are removed: the cookie is cleared.
    assert after.cookies["messages"].value == ""
