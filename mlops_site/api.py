"""API-wide pieces: the exception handler that turns domain and storage errors into 4xx/503 answers."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from mlops_site.storage import StorageError

logger = logging.getLogger(__name__)

#: Seconds a client is told to wait before retrying after a storage outage.
STORAGE_RETRY_AFTER = 30


class StorageUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Object storage is unavailable."
    default_code = "storage_unavailable"


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    # Services raise Django's ValidationError so pages and the API share one message list.
    if isinstance(exc, DjangoValidationError):
        detail: Any = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
        exc = exceptions.ValidationError(detail=detail)
    elif isinstance(exc, StorageError):
        # An outage of S3 is not a bug in this request: say so with a retryable 503, not a bare 500.
        view = context.get("view")
        logger.warning("storage error in %s: %s", type(view).__name__ if view else "API", exc)
        exc = StorageUnavailable(detail=f"Object storage is unavailable: {exc}")
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(exc, StorageUnavailable):
        response["Retry-After"] = str(STORAGE_RETRY_AFTER)
    return response
