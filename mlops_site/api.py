"""The API's exception handler: every error, DRF's own included, answered in the one error envelope."""

from __future__ import annotations

import logging
import math
from typing import Any

from rest_framework import exceptions
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import set_rollback

from mlops_site import errors

logger = logging.getLogger(__name__)


def _drf_problems(detail: Any, name: str | None = None) -> list[dict[str, Any]]:
    """A DRF validation detail (nested dicts and lists of ErrorDetail) as problems; nested fields as a.b."""
    if isinstance(detail, dict):
        items = []
        for key, value in detail.items():
            if key == api_settings.NON_FIELD_ERRORS_KEY:
                items.extend(_drf_problems(value, name))
            else:
                items.extend(_drf_problems(value, f"{name}.{key}" if name else str(key)))
        return items
    if isinstance(detail, list):
        return [item for value in detail for item in _drf_problems(value, name)]
    return [errors.problem(str(detail), field=name, code=getattr(detail, "code", None) or "invalid")]


def _drf_answer(exc: exceptions.APIException) -> errors.ErrorAnswer:
    if isinstance(exc, exceptions.ValidationError):
        items = _drf_problems(exc.detail)
        return errors.ErrorAnswer(exc.status_code, "invalid", errors.problems_summary(items), items)
    codes = exc.get_codes()
    wait = getattr(exc, "wait", None)
    return errors.ErrorAnswer(
        exc.status_code,
        codes if isinstance(codes, str) else exc.default_code,
        str(exc.detail),
        retry_after=math.ceil(wait) if wait else None,
    )


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """The envelope {detail, code, errors} for every error the mapping knows; None (a 500) for bugs."""
    if isinstance(exc, exceptions.APIException):
        answer: errors.ErrorAnswer | None = _drf_answer(exc)
    else:
        answer = errors.error_answer(exc)
    if answer is None:
        return None
    if answer.status >= 500:
        view = context.get("view")
        logger.warning("%s answered %s: %s", type(view).__name__ if view else "API", answer.status, exc)
    headers = {}
    # DRF sets auth_header once it has decided between 401 and 403 (APIView.handle_exception).
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
    if answer.retry_after:
        headers["Retry-After"] = str(answer.retry_after)
    set_rollback()
    response = Response(answer.body(), status=answer.status, headers=headers)
    # An error is JSON even where the client asked for another format (a CSV download, say).
    request = context.get("request")
    if request is not None:
        request.accepted_renderer = JSONRenderer()
        request.accepted_media_type = JSONRenderer.media_type
    return response
