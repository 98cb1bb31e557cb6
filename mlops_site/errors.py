"""Domain errors the services raise, and the one mapping of any refusal to an HTTP status, code and message.

Pages (mlops_site.pages) and the API (mlops_site.api) both answer through `error_answer`, so a refusal has
the same status and wording wherever it happens. Every problem is a dict {row, field, code, message}: `row`
counts data rows from 1 (the first row sent, or the first line after a CSV file's header), as the errors
file of a batch job does; `row` and `field` are None where a problem concerns neither.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import NON_FIELD_ERRORS, PermissionDenied, ValidationError
from django.http import Http404

logger = logging.getLogger(__name__)

#: Seconds a client is told to wait before retrying after an outage of storage or MLflow.
RETRY_AFTER_SECONDS = 30

STORAGE_UNAVAILABLE = "Object storage is unavailable, so nothing was read or saved. Please try again shortly."
MLFLOW_UNAVAILABLE = "The MLflow tracking server is unavailable. Please try again shortly."
DATABASE_UNAVAILABLE = "The database is unavailable. Please try again shortly."


def problem(
    message: str, *, row: int | None = None, field: str | None = None, code: str = "invalid"
) -> dict[str, Any]:
    """One problem as every answer lists it."""
    return {"row": row, "field": field, "code": code, "message": message}


class DomainError(Exception):
    """A refusal a service names; its class says how every interface answers it."""

    status: int = 400
    code: str = "invalid"

    def __init__(
        self, detail: str, *, errors: list[dict[str, Any]] | None = None, code: str | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors or [])
        if code is not None:
            self.code = code


class Invalid(DomainError):
    """The input was refused (400); `errors` names every problem by row and field."""


class ProblemsInvalid(Invalid):
    """Input refused with every problem listed (400); nothing was stored.

    `errors` lists every problem as {row, field, code, message}, rows counted from 1 as in a batch job's
    errors file; a problem given as text concerns no row or field. Subclasses name what was refused.
    """

    what = "request"

    def __init__(self, problems: list[dict[str, Any] | str]) -> None:
        items = [p if isinstance(p, dict) else problem(p) for p in problems]
        count = len(items)
        super().__init__(
            f"The {self.what} was refused ({count} problem{'s' if count != 1 else ''}); nothing was stored.",
            errors=items,
        )

    @property
    def problems(self) -> list[str]:
        return [item["message"] for item in self.errors]

    def __str__(self) -> str:
        return "; ".join(self.problems[:5])


class NotFound(DomainError):
    """The thing asked for does not exist, or the caller may not know that it does (404)."""

    status = 404
    code = "not_found"


class Conflict(DomainError):
    """The request is valid but the current state does not allow it (409)."""

    status = 409
    code = "conflict"


class TooLarge(DomainError):
    """The request is bigger than accepted (413)."""

    status = 413
    code = "too_large"


class ServiceUnavailable(DomainError):
    """An outside system failed; retrying after `retry_after` seconds may help (503)."""

    status = 503
    code = "service_unavailable"

    def __init__(
        self, detail: str, *, code: str | None = None, retry_after: int | None = RETRY_AFTER_SECONDS
    ) -> None:
        super().__init__(detail, code=code)
        self.retry_after = retry_after


@dataclass(frozen=True)
class ErrorAnswer:
    """How a refusal is answered: the HTTP status, a stable code, a sentence and every problem."""

    status: int
    code: str
    detail: str
    errors: list[dict[str, Any]] = field(default_factory=list)
    retry_after: int | None = None

    def body(self) -> dict[str, Any]:
        """The API's error envelope."""
        return {"detail": self.detail, "code": self.code, "errors": self.errors}

    @property
    def messages(self) -> list[str]:
        """What a page lists: every problem's message, else the sentence."""
        return [item["message"] for item in self.errors] or [self.detail]


def validation_problems(exc: ValidationError) -> list[dict[str, Any]]:
    """Every message of a Django ValidationError, with its field (None for the whole input) and code."""
    if hasattr(exc, "error_dict"):
        pairs = [
            (None if name == NON_FIELD_ERRORS else name, error)
            for name, errors in exc.error_dict.items()
            for error in errors
        ]
    else:
        pairs = [(None, error) for error in exc.error_list]
    items = []
    for name, error in pairs:
        message = error.message
        if error.params:
            message %= error.params
        items.append(problem(str(message), field=name, code=error.code or "invalid"))
    return items


def problems_summary(items: list[dict[str, Any]]) -> str:
    """One sentence for a list of problems: the problem itself when there is one."""
    if len(items) == 1:
        only = items[0]
        return f"{only['field']}: {only['message']}" if only["field"] else only["message"]
    return f"The input has {len(items)} problems; each is listed in errors."


def _quality_gate(exc: Any) -> ErrorAnswer:
    reasons = [problem(reason, code="quality_gate") for reason in exc.reasons]
    return ErrorAnswer(409, "quality_gate", exc.messages[0], reasons)


def _storage(exc: Exception) -> ErrorAnswer:
    # The message names bucket keys and hosts: logged for operators, not shown to users.
    logger.warning("object storage failed: %s", exc)
    return ErrorAnswer(503, "storage_unavailable", STORAGE_UNAVAILABLE, retry_after=RETRY_AFTER_SECONDS)


def database_unavailable(exc: BaseException) -> ErrorAnswer:
    # A restart or failover: Django reconnects on the next request (CONN_HEALTH_CHECKS), so retrying helps.
    logger.warning("the database failed: %s", exc)
    return ErrorAnswer(503, "database_unavailable", DATABASE_UNAVAILABLE, retry_after=RETRY_AFTER_SECONDS)


def _mlflow(exc: Exception) -> ErrorAnswer:
    logger.warning("MLflow failed: %s", exc)
    return ErrorAnswer(503, "mlflow_unavailable", MLFLOW_UNAVAILABLE, retry_after=RETRY_AFTER_SECONDS)


#: Exceptions of modules this one must not import (they import mlops_site), by class path. A subclass
#: is answered like its closest listed base.
FOREIGN_ERRORS: dict[str, Callable[[Any], ErrorAnswer]] = {
    "mlops_site.storage.StorageError": _storage,
    "django.db.utils.OperationalError": database_unavailable,
    # The client stopped sending its body (gone, or too slow for the server's read timeout).
    "django.http.request.UnreadablePostError": lambda exc: ErrorAnswer(
        400, "incomplete_body", "The request body stopped arriving before it was complete."
    ),
    "django.db.utils.InterfaceError": database_unavailable,
    "models_registry.transition_services.QualityGateError": _quality_gate,
    "models_registry.services.ModelNameTaken": lambda exc: ErrorAnswer(409, "name_taken", exc.messages[0]),
    # A guardrail of the closed loop (cooldown, daily cap, one at a time…): the code names it.
    "training.retraining_services.RetrainingRefused": lambda exc: ErrorAnswer(
        409, exc.reason, exc.messages[0]
    ),
    "models_registry.mlflow_gateway.errors.RegistryUnavailable": _mlflow,
    "models_registry.mlflow_gateway.errors.ModelNotFound": lambda exc: ErrorAnswer(
        404, "not_found", str(exc)
    ),
    # A version whose model file is missing or damaged: retrying will not help until someone fixes it.
    "predictions.model_cache.ModelUnavailable": lambda exc: ErrorAnswer(503, "model_unavailable", str(exc)),
}


def error_answer(exc: BaseException) -> ErrorAnswer | None:
    """How pages and the API answer `exc`, or None for an exception that is a bug (a 500)."""
    if isinstance(exc, DomainError):
        return ErrorAnswer(
            exc.status, exc.code, exc.detail, exc.errors, retry_after=getattr(exc, "retry_after", None)
        )
    for cls in type(exc).__mro__:
        translate = FOREIGN_ERRORS.get(f"{cls.__module__}.{cls.__qualname__}")
        if translate is not None:
            return translate(exc)
    if isinstance(exc, ValidationError):
        items = validation_problems(exc)
        return ErrorAnswer(400, "invalid", problems_summary(items), items)
    if isinstance(exc, Http404):
        return ErrorAnswer(404, "not_found", str(exc) or "Not found.")
    if isinstance(exc, PermissionDenied):
        return ErrorAnswer(
            403, "permission_denied", str(exc) or "You do not have permission to perform this action."
        )
    return None
