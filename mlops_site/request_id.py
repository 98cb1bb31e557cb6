"""The request id: one per web request, in every log line it causes, in its answer and in its Celery tasks.

The middleware takes a client's `X-Request-ID` only when it is well-formed, otherwise it makes one, and
writes the id back into the request's headers: the prediction API stores that header as the
PredictionRequest's request_id, so a prediction's row, its log lines and its answer share one id.
`mlops_site.celery` carries the id in task headers to the tasks a request enqueues.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING

from django.core.signals import request_finished
from django.dispatch import receiver

if TYPE_CHECKING:
    # Only for the hints: settings imports this module (through logging_setup) before Django is set up.
    from django.http import HttpRequest, HttpResponse

HEADER = "X-Request-ID"
_META_KEY = "HTTP_X_REQUEST_ID"
# The characters and length predictions.services accepts for a request_id (PredictionRequest holds 64),
# so an id a client may send with a prediction is kept as it is. Anything else (a huge or forged header,
# spaces, quotes, control characters) is never logged or echoed: a new id replaces it.
_WELL_FORMED = re.compile(r"[A-Za-z0-9._:-]{1,64}\Z")

_current: ContextVar[str | None] = ContextVar("request_id", default=None)


def is_well_formed(value: object) -> bool:
    return isinstance(value, str) and _WELL_FORMED.match(value) is not None


def new() -> str:
    return uuid.uuid4().hex


def current() -> str | None:
    """The id of the request or task this code runs for, or None outside both (beat, shell)."""
    return _current.get()


def bind(value: str | None) -> Token[str | None]:
    return _current.set(value)


def reset(token: Token[str | None]) -> None:
    _current.reset(token)


@contextmanager
def bound(value: str | None) -> Iterator[None]:
    token = bind(value)
    try:
        yield
    finally:
        reset(token)


class RequestIdMiddleware:
    """Binds the request's id until the answer is sent and answers with it in `X-Request-ID`.

    Not reset when the view returns: Django logs a 4xx or 5xx answer after the whole middleware chain
    has returned, and that line must carry the id too. `request_finished` (the answer sent and closed)
    clears it, so nothing the thread logs afterwards is put on this request.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.META.get(_META_KEY)
        value = incoming if is_well_formed(incoming) else new()
        # Whoever reads the header later (the prediction API) sees the id the logs carry.
        request.META[_META_KEY] = value
        _current.set(value)
        response = self.get_response(request)
        response[HEADER] = value
        return response


@receiver(request_finished, dispatch_uid="mlops_site.request_id.clear")
def _clear(**kwargs: object) -> None:
    _current.set(None)
