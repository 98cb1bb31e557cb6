"""The closed loop's API: a model's retraining policy, starting a retraining, the retrainings and their
event log, a staff approval, and the Alertmanager receiver that lets alert rules start a retraining."""

from __future__ import annotations

import hmac
from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import permissions, status
from rest_framework.exceptions import AuthenticationFailed, PermissionDenied
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from feedback import selectors as feedback_selectors
from mlops_site import parsers
from models_registry.models import RegisteredModel
from training import decision_services, policy_services, retraining_services, selectors
from training.loop_serializers import (
    AlertmanagerInputSerializer,
    AlertResultSerializer,
    RetrainingEventSerializer,
    RetrainingPolicyInputSerializer,
    RetrainingPolicySerializer,
    RetrainingSerializer,
    RetrainInputSerializer,
)
from training.models import Retraining

REFUSED = OpenApiResponse(
    description="A guardrail refused (the code names it: cooldown, daily_cap, running…)."
)


class IsStaffForWrites(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        return request.method in permissions.SAFE_METHODS or bool(request.user.is_staff)


def _model(name: str) -> RegisteredModel:
    return feedback_selectors.registered_model_named(name=name)


class RetrainingPolicyView(APIView):
    permission_classes = [IsStaffForWrites]
    parser_classes = [parsers.JSONParser]

    @extend_schema(
        summary="Get a model's retraining policy (defaults when none was set)",
        responses=RetrainingPolicySerializer,
    )
    def get(self, request: Request, model_name: str) -> Response:
        policy = policy_services.retraining_policy_get(registered_model=_model(model_name))
        return Response(RetrainingPolicySerializer(policy).data)

    @extend_schema(
        summary="Change a model's retraining policy (staff)",
        description="Only the fields sent change. Every bad field is named in one 400.",
        request=RetrainingPolicyInputSerializer,
        responses={200: RetrainingPolicySerializer},
    )
    def put(self, request: Request, model_name: str) -> Response:
        registered = _model(model_name)
        serializer = RetrainingPolicyInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        policy = policy_services.retraining_policy_set(
            registered_model=registered, data=serializer.validated_data, user=request.user
        )
        return Response(RetrainingPolicySerializer(policy).data)


class RetrainView(APIView):
    permission_classes = [permissions.IsAdminUser]
    parser_classes = [parsers.JSONParser]

    @extend_schema(
        summary="Start a retraining of a model now (staff)",
        description="The cooldown does not apply to staff; the other guardrails do (a 409 names it).",
        request=RetrainInputSerializer,
        responses={202: RetrainingSerializer, 409: REFUSED},
    )
    def post(self, request: Request, model_name: str) -> Response:
        registered = _model(model_name)
        serializer = RetrainInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        retraining = retraining_services.retraining_start(
            registered_model=registered,
            trigger=Retraining.Trigger.MANUAL,
            reason=data["reason"] or f"Started by {request.user.get_username()}.",
            user=request.user,
            params=data.get("params") or None,
        )
        found = selectors.retraining_get(retraining_id=retraining.pk)
        return Response(RetrainingSerializer(found).data, status=status.HTTP_202_ACCEPTED)


@extend_schema(summary="List a model's retrainings, newest first")
class RetrainingListView(ListAPIView):
    permission_classes = [permissions.IsAuthenticated]
    serializer_class = RetrainingSerializer

    def get_queryset(self) -> Any:
        return selectors.retraining_list(registered_model=_model(self.kwargs["model_name"]))


@extend_schema(summary="List a model's retraining events (the loop's decisions), newest first")
class RetrainingEventListView(ListAPIView):
    permission_classes = [permissions.IsAuthenticated]
    serializer_class = RetrainingEventSerializer

    def get_queryset(self) -> Any:
        return selectors.retraining_event_list(registered_model=_model(self.kwargs["model_name"]))


class RetrainingApproveView(APIView):
    permission_classes = [permissions.IsAdminUser]

    @extend_schema(
        summary="Promote a challenger awaiting approval (staff)",
        request=None,
        responses={200: RetrainingSerializer, 409: OpenApiResponse(description="It fails the quality gate.")},
    )
    def post(self, request: Request, retraining_id: int) -> Response:
        retraining = selectors.retraining_get(retraining_id=retraining_id)
        decision_services.retraining_approve(retraining=retraining, user=request.user)
        return Response(RetrainingSerializer(selectors.retraining_get(retraining_id=retraining_id)).data)


class AlertmanagerView(APIView):
    """Alertmanager's webhook receiver: a firing alert whose labels name a model starts its retraining.

    Authenticated by the bearer token in ALERTMANAGER_WEBHOOK_TOKEN (Alertmanager's
    `http_config.authorization.credentials`); the receiver is off while it is empty.
    """

    authentication_classes: list[Any] = []
    permission_classes = [permissions.AllowAny]
    parser_classes = [parsers.JSONParser]

    def _check_token(self, request: Request) -> None:
        expected = settings.ALERTMANAGER_WEBHOOK_TOKEN
        if not expected:
            raise PermissionDenied("The Alertmanager receiver is off: set ALERTMANAGER_WEBHOOK_TOKEN.")
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
            raise AuthenticationFailed("Send the receiver's token: Authorization: Bearer <token>.")

    def get_authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="alertmanager"'

    @extend_schema(
        summary="Alertmanager webhook: firing alerts that name a model start its retraining",
        description="Labels `model` (or `registered_model`) name the model. Needs "
        "`Authorization: Bearer <ALERTMANAGER_WEBHOOK_TOKEN>`. Guardrails apply; each alert's outcome is "
        "listed.",
        auth=[],
        request=AlertmanagerInputSerializer,
        responses={
            200: AlertResultSerializer(many=True),
            401: OpenApiResponse(description="Missing or wrong bearer token."),
            403: OpenApiResponse(description="The receiver is off (no token configured)."),
        },
    )
    def post(self, request: Request) -> Response:
        self._check_token(request)
        serializer = AlertmanagerInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        results = [self._one(alert) for alert in serializer.validated_data["alerts"]]
        return Response(AlertResultSerializer(results, many=True).data)

    def _one(self, alert: dict[str, Any]) -> dict[str, Any]:
        labels = alert["labels"]
        name = labels.get("model") or labels.get("registered_model") or ""
        answer = {"model": name, "retraining": None}
        if not name:
            return {**answer, "outcome": "no_model_label", "detail": "The alert has no 'model' label."}
        if alert["status"] != "firing":
            return {**answer, "outcome": "resolved", "detail": "Resolved alerts start nothing."}
        registered = RegisteredModel.objects.filter(name=name).first()
        if registered is None:
            return {**answer, "outcome": "unknown_model", "detail": f"No registered model named {name!r}."}
        alertname = labels.get("alertname", "alert")
        summary = alert["annotations"].get("summary") or alert["annotations"].get("description") or ""
        try:
            retraining = retraining_services.retraining_start(
                registered_model=registered,
                trigger=Retraining.Trigger.ALERT,
                reason=f"{alertname}: {summary}".strip(": "),
                figures={"alert": {"labels": labels, "annotations": alert["annotations"]}},
            )
        except retraining_services.RetrainingRefused as refused:
            return {**answer, "outcome": "refused", "detail": refused.messages[0]}
        return {**answer, "outcome": "started", "detail": "Retraining queued.", "retraining": retraining.pk}
