"""The training-run API (staff): list, read and queue runs through the training services."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from mlops_site import parsers
from training import selectors, services
from training.models import TrainingRun
from training.serializers import TrainingRunInputSerializer, TrainingRunOutputSerializer


@extend_schema_view(
    list=extend_schema(summary="List training runs (staff)"),
    retrieve=extend_schema(summary="Get a training run with its status and progress (staff)"),
)
class TrainingRunViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    permission_classes = [permissions.IsAdminUser]
    serializer_class = TrainingRunOutputSerializer
    # Hyperparameters are a JSON object: a form-encoded body has no way to send one.
    parser_classes = [parsers.JSONParser]

    def get_queryset(self) -> QuerySet[TrainingRun]:
        return selectors.training_run_list()

    @extend_schema(
        summary="Queue a training run (staff)",
        description="A request the run could not train with is refused with 400 naming each problem. "
        "Problems only training finds make the run FAILED with the reason.",
        request=TrainingRunInputSerializer,
        responses={
            201: TrainingRunOutputSerializer,
            404: OpenApiResponse(description="The dataset has no such version."),
        },
    )
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = TrainingRunInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        run = services.training_run_create(
            dataset_version=data["dataset_version"],
            model_name=data["model_name"],
            algorithm=data["algorithm"],
            params=data["params"],
            created_by=request.user,
            target_column=data["target_column"] or None,
            task=data["task"] or None,
            seed=data["seed"],
            test_size=data["test_size"],
        )
        return Response(
            self.get_serializer(selectors.training_run_get(run_id=run.pk)).data,
            status=status.HTTP_201_CREATED,
        )
