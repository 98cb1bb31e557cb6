"""The registry API: viewsets over the registry selectors and services."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from mlops_site import parsers
from models_registry import challenger_services, selectors, services, transition_services, upload_services
from models_registry.models import ModelVersion, RegisteredModel
from models_registry.serializers import (
    ChallengerInputSerializer,
    ChallengerOutputSerializer,
    ModelUploadInputSerializer,
    ModelVersionOutputSerializer,
    RegisteredModelInputSerializer,
    RegisteredModelOutputSerializer,
    RollbackInputSerializer,
    TransitionInputSerializer,
)


class IsStaffForWrites(permissions.BasePermission):
    """Reading models is for every signed-in user (they predict with them); changing them is for staff."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        return request.method in permissions.SAFE_METHODS or bool(request.user.is_staff)


MODEL_NAME_PARAMETER = OpenApiParameter("model_name", OpenApiTypes.STR, OpenApiParameter.PATH)
VERSION_PARAMETER = OpenApiParameter("version", OpenApiTypes.INT, OpenApiParameter.PATH)


@extend_schema_view(
    list=extend_schema(summary="List registered models"),
    retrieve=extend_schema(summary="Get a registered model"),
    destroy=extend_schema(
        summary="Delete a model that has no versions (staff)",
        responses={
            204: None,
            404: OpenApiResponse(description="No such model."),
            409: OpenApiResponse(
                description="The model has versions (code model_has_versions), which are never deleted, "
                "or a training run for it is queued or running (code model_in_use)."
            ),
        },
    ),
)
class RegisteredModelViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    permission_classes = [IsStaffForWrites]
    serializer_class = RegisteredModelOutputSerializer
    lookup_field = "name"
    lookup_value_regex = r"[^/.]+"

    def get_queryset(self) -> QuerySet[RegisteredModel]:
        return selectors.registered_model_list()

    @extend_schema(
        summary="Register a model with its quality-gate thresholds (staff)",
        request=RegisteredModelInputSerializer,
        responses={
            201: RegisteredModelOutputSerializer,
            409: OpenApiResponse(description="A model of that name exists already."),
        },
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = self._valid(RegisteredModelInputSerializer, request)
        created = services.registered_model_create(created_by=request.user, **data)
        found = selectors.registered_model_get(name=created.name)
        return Response(self.get_serializer(found).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: RegisteredModel) -> None:
        services.registered_model_delete(registered_model=instance, user=self.request.user)

    @extend_schema(
        summary="Put the previous production version back in production (staff)",
        description="The version that served production before the current one returns to it and the "
        "current one is archived. It must pass the quality gate, like a promotion, unless forced with a "
        "written reason.",
        request=RollbackInputSerializer,
        responses={
            200: ModelVersionOutputSerializer,
            400: OpenApiResponse(description="Bad input, or no earlier production version to go back to."),
            409: OpenApiResponse(
                description="The quality gate refused the version (code quality_gate); `errors` lists the "
                "failing metrics. Staff may force it with a written reason."
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def rollback(self, request: Request, name: str) -> Response:
        registered = self.get_object()
        data = self._valid(RollbackInputSerializer, request)
        restored = transition_services.model_version_rollback(
            registered_model=registered, user=request.user, reason=data["reason"], force=data["force"]
        )
        found = selectors.model_version_get(model_name=name, version=restored.version)
        return Response(ModelVersionOutputSerializer(found, context=self.get_serializer_context()).data)

    def _valid(self, serializer_class: type, request: Request) -> dict[str, Any]:
        serializer = serializer_class(data=request.data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


@extend_schema_view(
    list=extend_schema(summary="List the versions of a model", parameters=[MODEL_NAME_PARAMETER]),
    retrieve=extend_schema(
        summary="Get one model version", parameters=[MODEL_NAME_PARAMETER, VERSION_PARAMETER]
    ),
)
class ModelVersionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    permission_classes = [IsStaffForWrites]
    serializer_class = ModelVersionOutputSerializer
    lookup_field = "version"
    lookup_value_regex = r"[0-9]+"

    def get_queryset(self) -> QuerySet[ModelVersion]:
        return selectors.model_version_list(model_name=self.kwargs["model_name"])

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # An unknown model is a 404, not an empty list.
        selectors.registered_model_get(name=self.kwargs["model_name"])
        return super().list(request, *args, **kwargs)

    @extend_schema(
        summary="Move a version to staging, production or archived (staff)",
        parameters=[MODEL_NAME_PARAMETER, VERSION_PARAMETER],
        request=TransitionInputSerializer,
        responses={
            200: ModelVersionOutputSerializer,
            409: OpenApiResponse(
                description="The quality gate refused production (code quality_gate); `errors` lists the "
                "failing metrics. Staff may force it with a written reason."
            ),
        },
    )
    @action(detail=True, methods=["post"], parser_classes=[parsers.JSONParser, FormParser, MultiPartParser])
    def transition(self, request: Request, model_name: str, version: str) -> Response:
        found = self.get_object()
        serializer = TransitionInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        transition_services.model_version_transition(
            model_version=found, user=request.user, **serializer.validated_data
        )
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(
        summary="Register an externally trained skops or ONNX file as the next version (staff)",
        parameters=[MODEL_NAME_PARAMETER],
        request={"multipart/form-data": ModelUploadInputSerializer},
        responses={
            201: ModelVersionOutputSerializer,
            503: OpenApiResponse(description="Object storage is unavailable; nothing was stored."),
        },
    )
    @action(detail=False, methods=["post"], parser_classes=[MultiPartParser, FormParser])
    def upload(self, request: Request, model_name: str) -> Response:
        serializer = ModelUploadInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        created = upload_services.model_version_upload(
            registered_model_name=model_name,
            file=data["file"],
            filename=data["file"].name,
            feature_schema=data["feature_schema"],
            task=data["task"],
            classes=data["classes"] or None,
            target_column=data["target_column"],
            metrics=data["metrics"] or None,
            description=data["description"],
            created_by=request.user,
        )
        found = selectors.model_version_get(model_name=created.registered_model.name, version=created.version)
        return Response(self.get_serializer(found).data, status=status.HTTP_201_CREATED)


class ChallengerView(APIView):
    """GET and PUT /api/models/{name}/challenger/: how the staging version meets production traffic.

    Every signed-in user reads what the model page shows; staff change it.
    """

    permission_classes = [IsStaffForWrites]
    parser_classes = [parsers.JSONParser]

    def _answer(self, registered: RegisteredModel) -> Response:
        return Response(
            ChallengerOutputSerializer(selectors.challenger_state(registered_model=registered)).data
        )

    @extend_schema(
        operation_id="models_challenger_retrieve",
        summary="The challenger mode, champion and challenger, and their paired comparison",
        responses={200: ChallengerOutputSerializer, 404: OpenApiResponse(description="No such model.")},
    )
    def get(self, request: Request, name: str) -> Response:
        return self._answer(selectors.registered_model_get(name=name))

    @extend_schema(
        operation_id="models_challenger_update",
        summary="Set the challenger mode: off, shadow or canary with its share (staff)",
        request=ChallengerInputSerializer,
        responses={
            200: ChallengerOutputSerializer,
            400: OpenApiResponse(description="An unknown mode, or a share that is not a whole number 0-100."),
            404: OpenApiResponse(description="No such model."),
            409: OpenApiResponse(
                description="Shadow or canary needs a production and a staging version "
                "(code no_version_in_stage, field mode)."
            ),
        },
    )
    def put(self, request: Request, name: str) -> Response:
        registered = selectors.registered_model_get(name=name)
        body = ChallengerInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        challenger_services.challenger_mode_set(
            registered_model=registered, user=request.user, **body.validated_data
        )
        return self._answer(registered)
