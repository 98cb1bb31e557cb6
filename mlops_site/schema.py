"""OpenAPI: the error envelope, and the AutoSchema that adds every operation's error answers once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from drf_spectacular import openapi
from rest_framework import permissions, serializers

ERROR_CODES_HELP = (
    "Stable, for programs: invalid, parse_error, not_authenticated, authentication_failed, "
    "permission_denied, not_found, method_not_allowed, unsupported_media_type, conflict, quality_gate, "
    "no_version_in_stage, too_large, throttled, storage_unavailable, mlflow_unavailable, model_unavailable, "
    "server_error."
)

#: What each error status means when an operation does not say more.
ERROR_DESCRIPTIONS = {
    "400": "Refused input: `errors` lists every problem by row and field.",
    "401": "No credentials, or a wrong token: send `Authorization: Token <key>`.",
    "403": "Signed in, but not allowed (staff only), or a session request without its CSRF token.",
    "404": "No such object, or not one of yours.",
    "409": "Not possible in the current state.",
    "413": "The request is too large.",
    "429": "Too many requests: retry after `Retry-After` seconds.",
    "503": "An outside system (object storage, MLflow) is unavailable: retry after `Retry-After` seconds.",
}

RETRY_AFTER_HEADER = {
    "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}
}

_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def _signed_in_user_request(method: str) -> SimpleNamespace:
    """What a permission class sees of a request by an ordinary signed-in user (not staff)."""
    user = SimpleNamespace(is_authenticated=True, is_active=True, is_staff=False, is_superuser=False)
    return SimpleNamespace(method=method, user=user)


class ErrorProblemSerializer(serializers.Serializer):
    row = serializers.IntegerField(
        allow_null=True,
        help_text="The data row, counted from 1 (the first row sent; in a CSV file the first line after "
        "the header), as in a batch job's errors file; null when the problem concerns no row.",
    )
    field = serializers.CharField(
        allow_null=True, help_text="The field or feature; null for the whole input."
    )
    code = serializers.CharField(help_text="What is wrong, e.g. required, missing_feature, wrong_type.")
    message = serializers.CharField(help_text="A sentence for people.")


class ErrorEnvelopeSerializer(serializers.Serializer):
    """Every API error answer."""

    detail = serializers.CharField(help_text="A sentence for people.")
    code = serializers.CharField(help_text=ERROR_CODES_HELP)
    errors = ErrorProblemSerializer(many=True, help_text="Every problem found; empty for most non-400s.")


class AutoSchema(openapi.AutoSchema):
    """Documents the error answers every operation can give with the envelope, so no view repeats them.

    An operation adds others (409, 413, 503) by naming them in `extend_schema(responses=...)` with a
    description only; their body becomes the envelope too.
    """

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        envelope = self.resolve_serializer(ErrorEnvelopeSerializer, "response").ref
        responses = operation["responses"]
        for status in self._error_statuses(operation):
            answer: dict[str, Any] = {
                "description": responses.get(status, {}).get("description")
                or ERROR_DESCRIPTIONS.get(status, "Refused."),
                "content": {"application/json": {"schema": envelope}},
            }
            if status in ("429", "503"):
                answer["headers"] = RETRY_AFTER_HEADER
            responses[status] = answer
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def _error_statuses(self, operation: dict[str, Any]) -> set[str]:
        statuses = {status for status in operation["responses"] if status.startswith(("4", "5"))}
        view_permissions = self.view.get_permissions()
        if self.method in ("POST", "PUT", "PATCH"):
            statuses.add("400")
        # A wrong token is a 401 wherever tokens are read, even on operations open to everyone.
        if any("tokenAuth" in scheme for scheme in self.get_auth() or []):
            statuses.add("401")
        paginated = self.method == "GET" and self._is_list_view() and self.view.paginator is not None
        if paginated:
            # A malformed page number or size is a 400; a page past the last one a 404.
            statuses.update({"400", "404"})
        if not any(isinstance(p, permissions.AllowAny) for p in view_permissions):
            statuses.add("401")
            # A session request that changes something needs its CSRF token; staff-only views refuse users.
            if self.method in _UNSAFE or not all(
                p.has_permission(_signed_in_user_request(self.method), self.view) for p in view_permissions
            ):
                statuses.add("403")
        if "{" in self.path:
            statuses.add("404")
        if self.view.get_throttles():
            statuses.add("429")
        return statuses
