"""Helpers every app's pages share: the staff-only decorator and form errors as sentences."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

STAFF_ONLY_MESSAGE = "This page is available to staff members only."


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
