"""The landing page, and the not-found and server-error answers: the error envelope under /api/."""

from __future__ import annotations

import sys

from django.contrib.auth.decorators import login_required
from django.db import DatabaseError, DataError, IntegrityError
from django.http import HttpRequest, HttpResponse, JsonResponse, UnreadablePostError
from django.shortcuts import render
from django.urls import Resolver404, resolve
from django.views import defaults
from django.views.decorators.http import require_GET

from mlops_site import errors
from mlops_site import home as home_selectors
from mlops_site.errors import ErrorAnswer

#: Where the API is mounted (mlops_site.urls); a 404 or 500 there answers JSON, not a page.
API_PREFIX = "/api/"
PLAIN_TEXT = "text/plain; charset=utf-8"


@require_GET
@login_required
def home(request: HttpRequest) -> HttpResponse:
    """Models to predict with, one's recent predictions and those awaiting feedback; staff cards too."""
    return render(
        request,
        "home.html",
        {"home": home_selectors.home_get(user=request.user), "here": request.get_full_path()},
    )


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path_info.startswith(API_PREFIX):
        detail = "There is no API endpoint at this address."
        if not request.path_info.endswith("/") and _resolves(f"{request.path_info}/"):
            detail += f" Did you mean {request.path_info}/ (API addresses end with a slash)?"
        return JsonResponse(ErrorAnswer(404, "not_found", detail).body(), status=404)
    return defaults.page_not_found(request, exception)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    # Django refuses some requests before any view (too many fields, a malformed multipart body).
    if request.path_info.startswith(API_PREFIX):
        answer = ErrorAnswer(400, "invalid", str(exception) or "The request was malformed.")
        return JsonResponse(answer.body(), status=400)
    return defaults.bad_request(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    # Nothing here may need the database, URL reversing or templates' context: they may be what broke.
    # Django calls this while handling the exception, so it is still at hand: a database outage that
    # struck outside a view (the session or user lookup in a middleware) is a 503 too, not a 500.
    exception = sys.exc_info()[1]
    answer = None
    if isinstance(exception, DatabaseError) and not isinstance(exception, IntegrityError | DataError):
        answer = errors.database_unavailable(exception)
    elif isinstance(exception, UnreadablePostError):
        # Read by a middleware (CSRF) before any view: the client stopped sending, so it is its error.
        answer = errors.error_answer(exception)
    if answer is not None:
        if request.path_info.startswith(API_PREFIX):
            response: HttpResponse = JsonResponse(answer.body(), status=answer.status)
        else:
            # No template: rendering one would look the user up, perhaps in the database that is down.
            response = HttpResponse(answer.detail, status=answer.status, content_type=PLAIN_TEXT)
        if answer.retry_after:
            response["Retry-After"] = str(answer.retry_after)
        return response
    if request.path_info.startswith(API_PREFIX):
        answer = ErrorAnswer(500, "server_error", "The server failed; the error was logged.")
        return JsonResponse(answer.body(), status=500)
    return defaults.server_error(request)


def _resolves(path: str) -> bool:
    try:
        resolve(path)
    except Resolver404:
        return False
    return True
