"""Helpers every app's pages share: the staff-only decorator, form errors as sentences, and refusals shown.

Pages answer refusals through the one mapping of mlops_site.errors: a form page shows them above its form
(`refused`), any other page becomes the error page with the mapped status (`domain_errors`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from mlops_site import errors

STAFF_ONLY_MESSAGE = "This page is available to staff members only."

ERROR_TITLES = {
    400: "Refused",
    409: "Not possible right now",
    413: "Too large",
    503: "Temporarily unavailable",
}


def staff_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Anonymous visitors go to the login page; logged-in users without staff status get a 403."""

    @wraps(view)
    @login_required
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_staff:
            raise PermissionDenied(STAFF_ONLY_MESSAGE)
        return view(request, *args, **kwargs)

    return wrapped


def form_messages(form: Any) -> list[str]:
    """Every error of a bound form, prefixed with its field's label."""
    return [
        f"{form[field].label}: {message}" if field in form.fields else message
        for field, items in form.errors.items()
        for message in items
    ]


def refused(exc: Exception) -> errors.ErrorAnswer:
    """The mapped answer to a service's refusal, for a page that shows it with its form; re-raises bugs."""
    answer = errors.error_answer(exc)
    if answer is None:
        raise exc
    return answer


def error_page(request: HttpRequest, answer: errors.ErrorAnswer) -> HttpResponse:
    response = render(
        request,
        "error.html",
        {"answer": answer, "title": ERROR_TITLES.get(answer.status, "Refused")},
        status=answer.status,
    )
    if answer.retry_after:
        response["Retry-After"] = str(answer.retry_after)
    return response


def domain_errors(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Refusals the view does not handle become the error page with their mapped status.

    Not found and not allowed stay Django's own 404 and 403 pages; exceptions the mapping does not know
    are bugs and stay 500s.
    """

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except (Http404, PermissionDenied):
            raise
        except Exception as exc:
            answer = errors.error_answer(exc)
            if answer is None:
                raise
            if answer.status == 404:
                raise Http404(answer.detail) from exc
            return error_page(request, answer)

    return wrapped
