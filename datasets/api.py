"""The dataset API: serializers and viewsets over the dataset selectors, the upload and deletion services."""

from __future__ import annotations

import json
from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse

from datasets import selectors
from datasets import services as dataset_services
from datasets.models import DATASET_NAME_MAX_LENGTH, Dataset, DatasetVersion
from datasets.views import dataset_version_file_response


class DatasetOutputSerializer(serializers.ModelSerializer):
    # Null once the account is deleted (SET_NULL) or for rows no user made.
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    latest_version = serializers.IntegerField(read_only=True, allow_null=True)
    latest_row_count = serializers.IntegerField(read_only=True, allow_null=True)
    version_count = serializers.IntegerField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True, allow_null=True)

    class Meta:
        model = Dataset
        fields = [
            "name",
            "description",
            "target_column",
            "latest_version",
            "latest_row_count",
            "version_count",
            "created_by",
            "created_at",
            "updated_at",
        ]


class DatasetColumnSerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=["numeric", "categorical", "text"])
    dtype = serializers.CharField()
    missing_count = serializers.IntegerField(allow_null=True)
    missing_ratio = serializers.FloatField(allow_null=True)
    stats = serializers.DictField(
        help_text="numeric: min, max, mean, std, median, unique, inf_count; otherwise unique, top"
    )


class DatasetVersionOutputSerializer(serializers.ModelSerializer):
    dataset = serializers.SlugRelatedField(slug_field="name", read_only=True)
    parent = serializers.SerializerMethodField()
    # Null once the account is deleted (SET_NULL) or for rows no user made.
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    target_column = serializers.CharField(read_only=True)
    columns = serializers.SerializerMethodField()
    warnings = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text="Problems that do not refuse the data, such as infinite values; one sentence each.",
    )
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = DatasetVersion
        fields = [
            "dataset",
            "version",
            "sha256",
            "size_bytes",
            "original_filename",
            "row_count",
            "column_count",
            "target_column",
            "columns",
            "warnings",
            "parent",
            "created_by",
            "created_at",
            "download_url",
        ]

    def get_parent(self, obj: DatasetVersion) -> int | None:
        return obj.parent.version if obj.parent_id else None

    @extend_schema_field(DatasetColumnSerializer(many=True))
    def get_columns(self, obj: DatasetVersion) -> list[dict[str, Any]]:
        keys = ("name", "kind", "dtype", "missing_count", "missing_ratio", "stats")
        return [{key: column[key] for key in keys} for column in obj.columns]

    def get_download_url(self, obj: DatasetVersion) -> str:
        return reverse(
            "dataset-version-download",
            kwargs={"dataset_name": obj.dataset.name, "version": obj.version},
            request=self.context.get("request"),
        )


class DatasetUploadInputSerializer(serializers.Serializer):
    name = serializers.CharField(
        max_length=DATASET_NAME_MAX_LENGTH, help_text="New or existing dataset name."
    )
    file = serializers.FileField(help_text="A UTF-8 comma-separated file with a header row.")
    target_column = serializers.CharField(
        required=False, allow_blank=True, max_length=255, help_text="Required for a new dataset."
    )
    description = serializers.CharField(required=False, allow_blank=True, default="")
    parent = serializers.IntegerField(
        required=False, min_value=1, help_text="Version number of the same dataset; leave out for none."
    )


class CSVRenderer(BaseRenderer):
    """Lets clients ask for text/csv on the download action; errors still come out as JSON text."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        if isinstance(data, bytes):
            return data
        return json.dumps(data).encode("utf-8")


DATASET_NAME_PARAMETER = OpenApiParameter("dataset_name", OpenApiTypes.STR, OpenApiParameter.PATH)
VERSION_PARAMETER = OpenApiParameter("version", OpenApiTypes.INT, OpenApiParameter.PATH)


DELETE_RESPONSES = {
    204: OpenApiResponse(description="Deleted; the stored files go once no other version holds them."),
    404: OpenApiResponse(description="No such dataset or version."),
    409: OpenApiResponse(
        description="In use: `errors` names the training runs, model versions, retrainings or derived "
        "versions that use it; nothing was deleted."
    ),
}


@extend_schema_view(
    list=extend_schema(summary="List datasets"),
    retrieve=extend_schema(summary="Get a dataset"),
    destroy=extend_schema(
        summary="Delete a dataset with all its versions, when nothing uses any of them",
        responses=DELETE_RESPONSES,
    ),
)
class DatasetViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """Datasets; POST uploads a CSV file as a new dataset or as the next version of an existing one."""

    permission_classes = [permissions.IsAdminUser]
    serializer_class = DatasetOutputSerializer
    parser_classes = [MultiPartParser, FormParser]
    lookup_field = "name"
    lookup_value_regex = r"[^/]+"

    def get_queryset(self) -> QuerySet[Dataset]:
        return selectors.dataset_list()

    @extend_schema(
        summary="Upload a CSV file as a dataset version",
        request={"multipart/form-data": DatasetUploadInputSerializer},
        responses={
            201: DatasetVersionOutputSerializer,
            200: OpenApiResponse(
                DatasetVersionOutputSerializer, description="Identical content: existing version."
            ),
            400: OpenApiResponse(description="Every problem found in the upload; nothing was saved."),
            503: OpenApiResponse(description="Object storage is unavailable; nothing was saved."),
        },
    )
    def create(self, request: Request) -> Response:
        upload = DatasetUploadInputSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        data = upload.validated_data
        version, created = dataset_services.dataset_version_create(
            name=data["name"],
            file=data["file"],
            target_column=data.get("target_column") or None,
            created_by=request.user,
            description=data.get("description", ""),
            parent=data.get("parent"),
            original_filename=data["file"].name,
        )
        output = DatasetVersionOutputSerializer(version, context=self.get_serializer_context())
        return Response(output.data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    def perform_destroy(self, instance: Dataset) -> None:
        dataset_services.dataset_delete(dataset=instance)


@extend_schema_view(
    list=extend_schema(summary="List the versions of a dataset", parameters=[DATASET_NAME_PARAMETER]),
    retrieve=extend_schema(
        summary="Get one version with its schema", parameters=[DATASET_NAME_PARAMETER, VERSION_PARAMETER]
    ),
    destroy=extend_schema(
        summary="Delete a version nothing uses (the dataset too when it was its last)",
        parameters=[DATASET_NAME_PARAMETER, VERSION_PARAMETER],
        responses=DELETE_RESPONSES,
    ),
)
class DatasetVersionViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    permission_classes = [permissions.IsAdminUser]
    serializer_class = DatasetVersionOutputSerializer
    lookup_field = "version"
    lookup_value_regex = r"[0-9]+"

    def get_queryset(self) -> QuerySet[DatasetVersion]:
        return selectors.dataset_version_list(dataset_name=self.kwargs["dataset_name"])

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        # An unknown dataset is a 404, not an empty list.
        selectors.dataset_get(name=self.kwargs["dataset_name"])
        return super().list(request, *args, **kwargs)

    @extend_schema(
        summary="Download the stored CSV file",
        parameters=[DATASET_NAME_PARAMETER, VERSION_PARAMETER],
        responses={
            (200, "text/csv"): OpenApiTypes.BINARY,
            404: OpenApiResponse(description="No such version, or its stored file is missing."),
            503: OpenApiResponse(description="Object storage is unavailable."),
        },
    )
    @action(detail=True, methods=["get"], renderer_classes=[JSONRenderer, CSVRenderer])
    def download(self, request: Request, dataset_name: str, version: str) -> HttpResponse:
        return dataset_version_file_response(self.get_object())

    def perform_destroy(self, instance: DatasetVersion) -> None:
        dataset_services.dataset_version_delete(version=instance)
